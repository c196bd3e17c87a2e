"""Plugins in real processes: WFAPP_PLUGINS and WFAPP_LOAD_ENTRY_POINTS from the environment,
the example distribution installed with pip and loaded as an entry point, a worker using it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.filedrop import drop, install_example, listing, workflow
from tests.services import ROOT, start_worker

FLASK = str(Path(sys.executable).parent / "flask")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where pip installed examples/wfapp-file-drop (put it on PYTHONPATH)."""
    return install_example(tmp_path_factory.mktemp("file-drop-dist"))


def flask_plugins(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`flask --app wfapp plugins` in a fresh process with only these WFAPP_* variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    full.update({"WFAPP_SECRET_KEY": "plugins-test",
                 "WFAPP_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.sqlite'}"})
    full.update(env)
    return subprocess.run([FLASK, "--app", "wfapp", "plugins"], cwd=str(ROOT), env=full,
                          capture_output=True, text=True, timeout=120)


def listed(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The plugins `flask plugins` printed, by module."""
    assert done.returncode == 0, done.stderr
    return {p["module"]: p for p in json.loads(done.stdout)["plugins"]}


@pytest.mark.parametrize("value", [
    '["tests.plugins.sample_trigger", "tests.plugins.minimal"]',
    "tests.plugins.sample_trigger,tests.plugins.minimal",
    " tests.plugins.sample_trigger , tests.plugins.minimal, ",
])
def test_wfapp_plugins_from_the_environment(tmp_path, value):
    plugins = listed(flask_plugins(tmp_path, WFAPP_PLUGINS=value,
                                   WFAPP_LOAD_ENTRY_POINTS="false"))
    sample = plugins["tests.plugins.sample_trigger"]
    assert sample["origin"] == "PLUGINS" and sample["builtin"] is False
    assert [t["name"] for t in sample["trigger_types"]] == ["on_sftp_file"]
    assert [s["name"] for s in sample["integration_settings"]] == ["sftp_host"]
    assert sample["routes"] == [
        {"rule": "/sample/echo", "endpoint": "sample_trigger.echo", "methods": ["POST"],
         "public": True, "role": None},
        {"rule": "/sample/ping", "endpoint": "sample_trigger.ping", "methods": ["GET"],
         "public": True, "role": None}]
    assert sample["schedules"] == [{"name": "sftp-poll", "interval_seconds": 60.0,
                                    "job": "tests.plugins.sample_trigger.poll"}]
    assert sample["panels"] == ["SFTP drop"]
    assert [t["name"] for t in plugins["tests.plugins.minimal"]["trigger_types"]] == [
        "on_minimal"]
    builtin = plugins["wfapp.builtin_plugins.manual"]
    assert builtin["builtin"] is True and builtin["distribution"] == "wfapp"


def test_without_wfapp_plugins_only_the_builtins_load(tmp_path):
    plugins = listed(flask_plugins(tmp_path, WFAPP_LOAD_ENTRY_POINTS="false"))
    from wfapp.plugins import DEFAULT_PLUGINS

    assert all(p["builtin"] for p in plugins.values()) and len(plugins) == len(DEFAULT_PLUGINS)


@pytest.mark.parametrize(("env", "message"), [
    ({"WFAPP_PLUGINS": "no_such_module"},
     "PLUGINS names 'no_such_module', which cannot be imported: ModuleNotFoundError"),
    ({"WFAPP_PLUGINS": "[5]"}, "PLUGINS[0] must be a module name, not 5"),
    ({"WFAPP_PLUGINS": '{"a": 1}'}, "PLUGINS must be a list of module names"),
    ({"WFAPP_PLUGINS": '["a", '}, "PLUGINS is not a valid JSON list"),
    ({"WFAPP_PLUGINS": "tests/plugins/minimal.py"}, "is not a module name"),
    ({"WFAPP_PLUGINS": "tests.plugins.misspelt"}, "unknown hook 'register_trigger_type'"),
    ({"WFAPP_PLUGINS": "tests.plugins.duplicate"}, "trigger type 'manual' is registered twice"),
    ({"WFAPP_LOAD_ENTRY_POINTS": "maybe"}, "LOAD_ENTRY_POINTS must be true or false"),
])
def test_bad_plugin_settings_stop_start_up(tmp_path, env, message):
    done = flask_plugins(tmp_path, **{"WFAPP_LOAD_ENTRY_POINTS": "false", **env})
    assert done.returncode != 0
    assert message in done.stderr


def test_an_installed_distribution_is_an_entry_point(tmp_path, site):
    plugins = listed(flask_plugins(tmp_path, PYTHONPATH=str(site)))  # entry points: default on
    drop_plugin = plugins["wfapp_file_drop"]
    assert drop_plugin["name"] == "file_drop" and drop_plugin["origin"] == "entry point"
    assert (drop_plugin["distribution"], drop_plugin["version"]) == ("wfapp-file-drop", "0.1.0")
    assert [t["name"] for t in drop_plugin["trigger_types"]] == ["on_file_drop"]
    assert [s["name"] for s in drop_plugin["integration_settings"]] == [
        "file_drop_folder", "file_drop_record_key_path", "file_drop_event_type_path",
        "file_drop_max_bytes"]
    assert drop_plugin["schedules"] == [{"name": "file-drop-pickup", "interval_seconds": 10.0,
                                         "job": "wfapp_file_drop.pickup.run"}]
    assert drop_plugin["panels"] == ["File Drop"]
    for value in ("true", "1", "yes", "on"):
        assert "wfapp_file_drop" in listed(flask_plugins(
            tmp_path, PYTHONPATH=str(site), WFAPP_LOAD_ENTRY_POINTS=value))
    bad = flask_plugins(tmp_path, PYTHONPATH=str(site), WFAPP_FILE_DROP_INTERVAL="often")
    assert bad.returncode != 0 and "plugin 'file_drop': register_schedules() failed: " \
        "ValueError: WFAPP_FILE_DROP_INTERVAL must be 0.5-3600 seconds, not 'often'" in bad.stderr
    # Installed and listed in WFAPP_PLUGINS too: loaded once.
    both = listed(flask_plugins(tmp_path, PYTHONPATH=str(site), WFAPP_PLUGINS="wfapp_file_drop"))
    assert both["wfapp_file_drop"]["origin"] == "entry point"


@pytest.mark.parametrize("value", ["false", "0", "no", "off"])
def test_entry_points_off_leave_an_installed_plugin_out(tmp_path, site, value):
    plugins = listed(flask_plugins(tmp_path, PYTHONPATH=str(site),
                                   WFAPP_LOAD_ENTRY_POINTS=value))
    assert "wfapp_file_drop" not in plugins
    # Named in WFAPP_PLUGINS it loads anyway, from the same installed module.
    named = listed(flask_plugins(tmp_path, PYTHONPATH=str(site), WFAPP_LOAD_ENTRY_POINTS=value,
                                 WFAPP_PLUGINS="wfapp_file_drop"))
    assert named["wfapp_file_drop"]["origin"] == "PLUGINS"
    assert named["wfapp_file_drop"]["distribution"] == "wfapp-file-drop"


def test_a_broken_entry_point_names_its_distribution(tmp_path):
    site = tmp_path / "site"
    info = site / "wfapp_broken-2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wfapp-broken\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[wfapp]\nbroken = wfapp_broken_plugin\n")
    (site / "wfapp_broken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    done = flask_plugins(tmp_path, PYTHONPATH=str(site))
    assert done.returncode != 0
    assert "the plugin 'broken' = 'wfapp_broken_plugin' of the installed distribution " \
        "wfapp-broken 2.0 cannot be loaded: ImportError: needs libfoo" in done.stderr
    assert flask_plugins(tmp_path, PYTHONPATH=str(site),
                         WFAPP_LOAD_ENTRY_POINTS="false").returncode == 0


@pytest.fixture
def app_config(app_config: dict[str, Any], site: Path, monkeypatch: pytest.MonkeyPatch
               ) -> dict[str, Any]:
    # This process loads the installed copy too (by name), to import the workflow that uses it.
    monkeypatch.syspath_prepend(str(site))
    app_config["PLUGINS"] = ["wfapp_file_drop"]
    return app_config


@pytest.mark.redis
def test_a_worker_process_picks_up_dropped_files(rq_app, app_config, site, tmp_path, client,
                                                 tokens):
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration

    import_document(workflow())
    create_integration({"code": "FILES", "workflow_code": "DROPS", "file_drop_folder": "in",
                        "file_drop_record_key_path": "order.id"})
    root = tmp_path / "drops"
    drop(root / "in", "order-1.json", {"order": {"id": "W-1"}, "total": 3})
    drop(root / "in", "order-2.json", "not json")
    worker = start_worker(
        rq_app.config, burst=False, PYTHONPATH=str(site), WFAPP_LOAD_ENTRY_POINTS="true",
        WFAPP_FILE_DROP_ROOT=str(root), WFAPP_FILE_DROP_INTERVAL="1",
        WFAPP_FILE_DROP_SETTLE_SECONDS="0", WFAPP_SWEEP_INTERVAL="1")
    try:
        states: dict[str, str] = {}
        for _ in range(200):
            body = client.get("/api/v1/instances?integration=FILES",
                              headers=tokens["viewer"]).get_json()
            states = {i["record_key"]: i["state"] for i in body["items"]}
            if states.get("W-1") == "RECEIVED":
                break
            time.sleep(0.1)
        assert states == {"W-1": "RECEIVED"}
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=30)
    assert listing(root / "in" / "processed") == {"order-1.json"}
    assert listing(root / "in" / "rejected") == {"order-2.json", "order-2.json.reason.txt"}
    assert "Traceback" not in out, out
