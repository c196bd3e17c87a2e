"""The plugin manager, third-party plugins and the built-in trigger types' configs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pluggy
import pytest

from wfapp import create_app, hookspecs
from wfapp.plugins import UnknownTriggerType, build_registry, get_plugin_manager
from wfapp.services.definitions import import_document
from wfapp.services.errors import ValidationFailed
from wfapp.triggers import Field, Panel, TriggerType

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app_config(app_config):
    app_config["PLUGINS"] = ["tests.plugins.sample_trigger"]
    return app_config


def test_manager_is_built_by_a_function():
    assert get_plugin_manager() is not get_plugin_manager()


def test_third_party_plugin_uses_every_hook(app, client):
    wfapp = app.extensions["wfapp"]
    registry = wfapp["registry"]
    assert registry.trigger_type("on_sftp_file").label == "On SFTP File"
    assert "sftp_host" in registry.integration_settings
    assert ("sftp-poll", 60.0, "tests.plugins.sample_trigger.poll") in wfapp["schedules"]
    assert client.get("/sample/ping").get_json() == {"pong": True}
    assert registry.action_types["notify"].label == "Notify"
    with pytest.raises(UnknownTriggerType, match="on_fax"):
        registry.trigger_type("on_fax")


def test_third_party_config_is_validated(app):
    doc = {"format": "wfapp.workflow/v1", "workflow": {
        "code": "FILES", "initial_state": "A", "states": [{"code": "A", "is_initial": True},
                                                          {"code": "B"}],
        "transitions": [{"code": "GOT", "from_state": "A", "to_state": "B",
                         "trigger_type": "on_sftp_file", "trigger_config": {}}]}}
    with pytest.raises(ValidationFailed, match="trigger_config.suffix: is required"):
        import_document(doc)
    doc["workflow"]["transitions"][0]["trigger_config"] = {"suffix": ".csv"}
    assert import_document(doc).code == "FILES"


def test_misspelt_hook_fails_start_up():
    with pytest.raises(pluggy.PluginValidationError, match="register_trigger_type"):
        get_plugin_manager(("tests.plugins.misspelt",))


def test_duplicate_trigger_type_fails_start_up():
    with pytest.raises(RuntimeError, match="registered twice"):
        build_registry(get_plugin_manager(("tests.plugins.duplicate",)))
    with pytest.raises(RuntimeError):
        create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://",
                    "PLUGINS": ["tests.plugins.duplicate"]})


def _fake_distribution(root: Path, module: str) -> None:
    """An installed distribution that registers `module` under the `wfapp` entry-point group."""
    info = root / "wfapp_sample_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wfapp-sample-plugin\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(f"[wfapp]\nsample = {module}\n")


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    import importlib

    _fake_distribution(tmp_path, "tests.plugins.sample_trigger")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    pm = get_plugin_manager()
    assert pm.get_plugin("sample") is not None
    assert "on_sftp_file" in build_registry(pm).trigger_types
    # Listed in WFAPP_PLUGINS as well: registered once, not a start-up error.
    again = get_plugin_manager(("tests.plugins.sample_trigger",))
    assert list(build_registry(again).trigger_types).count("on_sftp_file") == 1


def test_without_the_plugin_its_trigger_type_is_unknown(app_config):
    app_config["PLUGINS"] = []
    other = create_app(app_config)
    assert "on_sftp_file" not in other.extensions["wfapp"]["registry"].trigger_types
    import wfapp.plugins as module

    assert not [v for v in vars(module).values() if isinstance(v, pluggy.PluginManager)]


def test_hook_register_trigger_types(app, client, tokens):
    registry = app.extensions["wfapp"]["registry"]
    assert list(registry.trigger_types)[:7] == ["manual", "on_import", "on_export",
                                               "on_webhook", "on_scheduled_poll",
                                               "on_bc_event", "on_action_result"]
    assert list(registry.trigger_types)[7:] == ["on_sftp_file"]
    listed = client.get("/api/v1/trigger-types", headers=tokens["viewer"]).get_json()
    sftp = next(t for t in listed["items"] if t["name"] == "on_sftp_file")
    assert sftp["fields"][0]["name"] == "suffix" and sftp["fields"][0]["required"] is True
    trigger = registry.trigger_type("on_sftp_file")
    assert trigger.matches({"suffix": ".csv"}, {"payload": {"filename": "a.csv"}})
    assert not trigger.matches({"suffix": ".csv"}, {"payload": {"filename": "a.txt"}})


def test_hook_register_integration_settings(app, client, tokens):
    h = tokens["author"]
    created = client.post("/api/v1/integrations", headers=h, json={"code": "FILES"})
    assert created.get_json()["sftp_host"] == "localhost"  # the plugin's default
    patched = client.patch("/api/v1/integrations/FILES", headers=h,
                           json={"sftp_host": "files.example"})
    assert patched.get_json()["sftp_host"] == "files.example"
    bad = client.patch("/api/v1/integrations/FILES", headers=h, json={"sftp_host": 5})
    assert bad.status_code == 422
    assert bad.get_json()["error"]["details"] == [{"path": "sftp_host",
                                                   "message": "must be a string"}]


def test_hook_register_blueprints(client):
    assert client.get("/sample/ping").get_json() == {"pong": True}  # public: no login


def test_plugin_routes_take_machine_posts_with_csrf_on(app_config):
    app_config["WTF_CSRF_ENABLED"] = True
    client = create_app(app_config).test_client()
    answer = client.post("/sample/echo", data=b'{"a": 1}')
    assert answer.status_code == 200 and answer.get_json() == {"echo": {"a": 1}}
    bad = client.post("/sample/echo", data=b'{"a": NaN}')
    assert bad.status_code == 422
    assert bad.get_json()["error"]["code"] == "invalid_body"
    # Everything else still needs its CSRF token.
    assert client.post("/auth/login", data={"username": "x", "password": "y"}).status_code \
        == 400


def test_hook_register_integration_panels(app, client, auth):
    from wfapp.services.integrations import create_integration

    create_integration({"code": "FILES", "sftp_host": "files.example"})
    auth.login("viewer")
    html = client.get("/integrations/FILES").get_data(as_text=True)
    assert 'id="panel-sftp"' in html and "SFTP drop" in html
    assert '<p id="sftp-panel">Files for FILES arrive at files.example.</p>' in html


def test_hook_register_schedules(app):
    schedules = app.extensions["wfapp"]["schedules"]
    assert schedules[0][0] == "sweep"
    assert ("sftp-poll", 60.0, "tests.plugins.sample_trigger.poll") in schedules


def test_hook_register_transition_actions(app):
    results = app.extensions["wfapp"]["plugin_manager"].hook.register_transition_actions()
    names = [a.name for items in results for a in items]
    assert "notify" in names and "http_request" in names
    registry = app.extensions["wfapp"]["registry"]
    assert list(registry.action_types)[:4] == ["http_request", "send_webhook", "set_variable",
                                               "send_email"]


def test_hook_register_metrics(app, client):
    names = {family.name for collector in app.extensions["wfapp"]["registry"].metrics
             for family in collector()}
    assert names == {"wfapp_sftp_files_waiting", "wfapp_bc_subscription_expiry_seconds",
                     "wfapp_poll_yielding"}
    text = client.get("/metrics").get_data(as_text=True)
    assert 'wfapp_sftp_files_waiting{host="localhost"} 3.0' in text


def test_every_hook_has_a_test():
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")]
    assert hooks
    for hook in hooks:
        assert callable(globals().get(f"test_hook_{hook}")), f"{hook} has no test_hook_{hook}"


def test_every_hook_is_implemented_and_documented_in_the_guide():
    hooks = [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")]
    sample = (ROOT / "tests" / "plugins" / "sample_trigger.py").read_text()
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert len(hooks) == len([n for n in dir(hookspecs) if n.startswith("register_")])
    for hook, fn in hooks:
        assert f"def {hook}(" in sample, f"{hook} has no test plugin implementation"
        signature = f"{hook}() -> {inspect.signature(fn).return_annotation}"
        assert f"### `{signature}`" in guide, f"docs/plugins.md has no heading `{signature}`"
        assert fn.__doc__.strip() in guide, f"docs/plugins.md does not quote {hook}'s docstring"


@pytest.mark.parametrize(("name", "config", "error"), [
    ("manual", {"button_label": "Go", "confirm": True}, None),
    ("manual", {"confirm": "yes"}, "confirm"),
    ("on_import", {"record_status": "error"}, None),
    ("on_export", {"record_status": "partial"}, "record_status"),
    ("on_webhook", {"event_filter": "order.*", "json_path": "data.status",
                    "expected_value": "paid"}, None),
    ("on_webhook", {"expected_value": "paid"}, "json_path"),
    ("on_scheduled_poll", {"url": "https://x/{record_key}", "interval_minutes": 5}, None),
    ("on_scheduled_poll", {"url": "https://x/{nope}", "interval_minutes": 5}, "url"),
    ("on_scheduled_poll", {"url": "https://x", "interval_minutes": 0}, "interval_minutes"),
    ("on_scheduled_poll", {"url": "https://x", "interval_minutes": 1, "headers": {"A": 1}},
     "headers"),
    ("on_bc_event", {"resource": "salesOrders", "change_types": ["created", "deleted"]}, None),
    ("on_bc_event", {"resource": "sales orders"}, "resource"),
    ("on_bc_event", {"resource": "items", "change_types": ["renamed"]}, "change_types"),
    ("on_bc_event", {"resource": "items", "extra": 1}, "extra"),
])
def test_builtin_trigger_configs(name, config, error):
    trigger = build_registry(get_plugin_manager()).trigger_type(name)
    problems = dict(trigger.validate(config))
    if error is None:
        assert problems == {}
    else:
        assert error in problems, problems


def test_builtin_matching():
    triggers = build_registry(get_plugin_manager()).trigger_types
    webhook = triggers["on_webhook"]
    assert webhook.matches({"event_filter": "order.*"}, {"type": "order.paid"})
    assert not webhook.matches({"event_filter": "order.*"}, {"type": "invoice.paid"})
    assert webhook.matches({"json_path": "data.s", "expected_value": "ok"},
                           {"type": "x", "payload": {"data": {"s": "ok"}}})
    bc = triggers["on_bc_event"]
    event = {"payload": {"resource": "companies(1)/salesOrders(2)", "changeType": "deleted"}}
    assert bc.matches({"resource": "salesOrders", "change_types": ["deleted"]}, event)
    assert not bc.matches({"resource": "salesOrders", "change_types": ["created"]}, event)
    poll = triggers["on_scheduled_poll"]
    # The JSON response is the payload; a failed poll's event never matches.
    assert poll.matches({"response_path": "status", "expected_value": "shipped"},
                        {"payload": {"status": "shipped"}})
    assert not poll.matches({}, {"type": "poll.failed", "payload": {"error": "timeout"}})


def test_a_setting_may_not_shadow_an_integration_field():
    from wfapp.hookspecs import hookimpl
    from wfapp.triggers import Field

    class Shadowing:
        @hookimpl
        def register_integration_settings(self):
            return [Field("enabled", "Enabled again")]

    with pytest.raises(RuntimeError, match="would shadow"):
        build_registry(get_plugin_manager((Shadowing(),)))


def _plugin(hook: str, result: object) -> object:
    from wfapp.plugin_api import hookimpl

    def impl() -> object:
        if isinstance(result, Exception):
            raise result
        return result

    impl.__name__ = hook
    namespace = {hook: staticmethod(hookimpl(impl))}
    return type(f"Bad_{hook}", (), namespace)()


def _bp(name: str) -> object:
    from flask import Blueprint

    return Blueprint(name, __name__)


@pytest.mark.parametrize(("hook", "result", "message"), [
    ("register_trigger_types", "on_x", "must return a list, not str"),
    ("register_trigger_types", TriggerType("on_x", "X"), "must return a list, not TriggerType"),
    ("register_trigger_types", ["on_x"], "'on_x', which is not a TriggerType"),
    ("register_trigger_types", [TriggerType("On X", "X")], "trigger type name 'On X' must be"),
    ("register_trigger_types", [TriggerType("o" * 41, "X")], "must be 1-40 lower-case"),
    ("register_trigger_types", [TriggerType("timeout", "X")], "not one of reset, timeout"),
    ("register_trigger_types", [TriggerType("on_x", " ")], "'on_x' needs a label"),
    ("register_trigger_types", [TriggerType("on_x", "X", fields=(Field("a", "A"),
                                                                 Field("a", "B")))],
     "must be Field objects with distinct names"),
    ("register_trigger_types", RuntimeError("boom"),
     "register_trigger_types() failed: RuntimeError: boom"),
    ("register_integration_settings", [Field("Bad Name", "x")], "setting name 'Bad Name'"),
    ("register_integration_settings", [{"name": "x"}], "which is not a Field"),
    ("register_integration_panels", ["panel"], "which is not a Panel"),
    ("register_integration_panels", [Panel("a", "A", str), Panel("a", "B", str)],
     "card panel 'a' is registered twice"),
    ("register_blueprints", ["bp"], "which is not a flask.Blueprint"),
    ("register_schedules", [("x", 10)], "each schedule is (name, interval"),
    ("register_schedules", [("x", 0, "tests.plugins.sample_trigger.poll")],
     "each schedule is"),
    ("register_schedules", [("x", True, "tests.plugins.sample_trigger.poll")],
     "each schedule is"),
    ("register_schedules", [("x", 5, "tests.plugins.sample_trigger.nope")],
     "names the job 'tests.plugins.sample_trigger.nope', which cannot be imported"),
    ("register_schedules", [("x", 5, "no_such_module.job")], "cannot be imported"),
    ("register_schedules", [("x", 5, "tests.plugins.sample_trigger.SFTP")],
     "is not a function"),
    ("register_schedules", [("sweep", 5, "tests.plugins.sample_trigger.poll")],
     "the schedule name 'sweep' is already taken"),
])
def test_malformed_registrations_stop_start_up(hook, result, message):
    from wfapp.plugins import PluginError

    with pytest.raises(PluginError) as raised:
        build_registry(get_plugin_manager((_plugin(hook, result),)))
    assert message in str(raised.value)
    assert "Bad_" in str(raised.value) or "registered twice" in str(raised.value)


def test_a_blueprint_name_that_is_taken_stops_start_up(app_config):
    from wfapp.plugins import PluginError

    app_config["PLUGINS"] = [_plugin("register_blueprints", [_bp("api")])]
    with pytest.raises(PluginError, match="blueprint 'api' cannot be registered"):
        create_app(app_config)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (1, True), (0, False), ("true", True), ("FALSE", False),
    ("yes", True), ("off", False), (" On ", True), ("", False)])
def test_config_flags(value, expected):
    from wfapp.plugins import config_flag

    assert config_flag(value, "X") is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, [True]])
def test_config_flags_refuse_other_values(value):
    from wfapp.plugins import PluginError, config_flag

    with pytest.raises(PluginError, match="X must be true or false"):
        config_flag(value, "X")
