"""wfapp.plugin_api: the only wfapp module plugins import; documented, checked at its boundary."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from sqlalchemy import func, select

from wfapp import plugin_api
from wfapp.extensions import db
from wfapp.models import Event, PluginState

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_MODULES = sorted(
    [*ROOT.glob("plugins/*.py"), *ROOT.glob("tests/plugins/*.py"),
     *ROOT.glob("examples/*/*/*.py")])
ALLOWED = {"wfapp.plugin_api"}


def _wfapp_imports(path: Path) -> list[str]:
    """What a module imports from wfapp (or from above its own package), with line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:  # installed as wfapp.builtin_plugins, `..` is wfapp itself
                found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''}")
                continue
            if node.level == 0 and node.module:
                names = [node.module]
                if node.module == "wfapp":
                    names = [f"wfapp.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", "")) in ("import_module", "__import__") and node.args \
                and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        found += [f"line {node.lineno}: {name}" for name in names
                  if (name == "wfapp" or name.startswith("wfapp.")) and name not in ALLOWED]
    return found


@pytest.mark.parametrize("path", PLUGIN_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_nothing_from_wfapp_but_the_plugin_api(path):
    assert _wfapp_imports(path) == [], f"{path.relative_to(ROOT)} reaches past wfapp.plugin_api"


def test_the_import_check_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import wfapp\nfrom wfapp import models\nfrom wfapp.services import x\n"
                   "from .. import extensions\nimport importlib\n"
                   "importlib.import_module('wfapp.models')\n"
                   "from wfapp.plugin_api import store_events\nfrom . import sibling\n")
    assert _wfapp_imports(bad) == ["line 1: wfapp", "line 2: wfapp.models",
                                   "line 3: wfapp.services", "line 4: from ..",
                                   "line 6: wfapp.models"]


def test_every_public_name_is_documented_here_and_in_the_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    for name in plugin_api.__all__:
        assert hasattr(plugin_api, name), f"__all__ names {name}, which does not exist"
        value = getattr(plugin_api, name)
        if not isinstance(value, int | str):
            assert inspect.getdoc(value), f"plugin_api.{name} has no docstring"
        assert f"`{name}" in guide, f"plugin_api.{name} is not in docs/plugins.md"
    public = {n for n, v in vars(plugin_api).items() if not n.startswith("_")
              and getattr(v, "__module__", "wfapp.plugin_api") == "wfapp.plugin_api"
              and not inspect.ismodule(v) and n not in ("annotations", "Any")}
    missing = public - set(plugin_api.__all__) - {"TYPE_CHECKING"}
    assert not missing, f"public but not in __all__: {sorted(missing)}"


@pytest.fixture
def integration(app):
    from wfapp.services.integrations import create_integration

    create_integration({"code": "FEED"})
    return plugin_api.find_integration("feed")


def _events() -> int:
    return db.session.scalar(select(func.count()).select_from(Event))


def test_store_events_stores_and_dedupes(integration):
    event = plugin_api.NewEvent(source="on_webhook", type="x", record_key="K", payload={"a": 1},
                                dedupe_key="d1")
    first = plugin_api.store_events(integration, [event])
    assert first.stored == 1 and first.duplicates == 0 and len(first.ids) == 1
    again = plugin_api.store_events("FEED", [event, plugin_api.NewEvent(source="on_webhook")])
    assert (again.stored, again.duplicates) == (1, 1)
    assert _events() == 2
    with pytest.raises(LookupError, match="'NOPE' does not exist"):
        plugin_api.store_events("NOPE", [event])


@pytest.mark.parametrize(("event", "message"), [
    ({"source": "on_fax"}, "events[1].source 'on_fax' is not a registered trigger type"),
    ({"record_key": "k" * 201}, "record_key must be a string of 1-200 characters"),
    ({"record_key": ""}, "record_key must be a string"),
    ({"record_key": 5}, "record_key must be a string"),
    ({"run_id": "7"}, "run_id must be an integer"),
    ({"type": None}, "type must be a string"),
    ({"payload": [1]}, "payload must be a dict"),
    ({"payload": {"a": {1, 2}}}, "payload is not JSON"),
    ({"payload": {"a": float("nan")}}, "payload is not JSON"),
    ({"payload": {"a": "x\x00"}}, "events[1].payload.a: must not contain NUL characters"),
    ({"record_key": "a\x00"}, "events[1].record_key: must not contain NUL characters"),
    ({"dedupe_key": 3}, "dedupe_key must be a string"),
])
def test_a_malformed_event_stores_nothing(integration, event, message):
    good = plugin_api.NewEvent(source="on_webhook", record_key="ok")
    bad = plugin_api.NewEvent(**{"source": "on_webhook", "record_key": "K", **event})
    with pytest.raises(ValueError) as raised:
        plugin_api.store_events(integration, [good, bad])
    assert message in str(raised.value)
    assert _events() == 0


def test_a_deep_payload_that_json_allows_is_stored(integration):
    payload: dict = {}
    inner = payload
    for _ in range(63):
        inner["a"] = {}
        inner = inner["a"]
    event = plugin_api.NewEvent(source="on_webhook", payload=payload)
    assert plugin_api.store_events(integration, [event]).stored == 1


def test_the_delivery_log_works_outside_a_request(integration):
    plugin_api.record_delivery(integration, "files", "refused", "bad file", key="a.json")
    plugin_api.count_delivery(integration, "files", "duplicate", "seen", by=3)
    rows = plugin_api.recent_deliveries(integration, "files")
    assert [(r.outcome, r.reason, r.key, r.remote_addr) for r in rows] == [
        ("refused", "bad file", "a.json", "")]
    counts = plugin_api.counters(integration, "files")
    assert counts["refused"].count == 1 and counts["duplicate"].count == 3


def test_a_failed_write_leaves_the_session_usable(integration):
    ghost = plugin_api.IntegrationInfo(id=999_999, code="GHOST", description="", enabled=True,
                                       workflow_code=None, instance_mode="per_record",
                                       settings={})
    with pytest.raises(Exception):  # noqa: B017 — the database's own error
        plugin_api.state_put(ghost, "ns", "k", {"a": 1})
    plugin_api.state_put(integration, "ns", "k", {"a": 1})
    assert plugin_api.state_update(integration, "ns", "k", {"b": 2}) == {"a": 1, "b": 2}
    assert db.session.scalar(select(func.count()).select_from(PluginState)) == 1


def test_set_secret_takes_only_declared_secret_settings(integration):
    plugin_api.set_secret(integration, "webhook_secret", "whsec_abc")
    assert plugin_api.find_integration("FEED").secret("webhook_secret") == "whsec_abc"
    with pytest.raises(ValueError, match="not a registered secret setting"):
        plugin_api.set_secret(integration, "record_key_path", "x")
    with pytest.raises(ValueError, match="not a registered secret setting"):
        plugin_api.set_secret(integration, "made_up", "x")
    with pytest.raises(ValueError, match="without NUL"):
        plugin_api.set_secret(integration, "webhook_secret", "a\x00")
    plugin_api.set_secret(integration, "webhook_secret", None)
    assert integration.secret("webhook_secret") is None
