"""The `flask --app wfapp` commands: user, token, wf import/export, demo, plugins, worker."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from wfapp.demo import ORDER_SYNC
from wfapp.services.definitions import export_document
from wfapp.services.users import authenticate, user_for_token


def test_user_create(runner, app):
    result = runner.invoke(args=["user", "create", "ann", "--password", "long-enough",
                                 "--role", "author"])
    assert result.exit_code == 0, result.output
    assert "Created user ann (author)." in result.output
    assert authenticate("ann", "long-enough").role == "author"


def test_user_create_prompts_for_the_password(runner, app):
    result = runner.invoke(args=["user", "create", "bob"], input="long-enough\nlong-enough\n")
    assert result.exit_code == 0, result.output
    assert authenticate("bob", "long-enough").role == "viewer"  # the default role


@pytest.mark.parametrize("args,message,code", [
    (["--password", "short", "--role", "viewer"], "at least 8 characters", 1),
    (["--password", "long-enough", "--role", "boss"], "Invalid value for '--role'", 2),
])
def test_user_create_refuses_bad_input(runner, app, args, message, code):
    result = runner.invoke(args=["user", "create", "cat", *args])
    assert result.exit_code == code and message in result.output
    assert authenticate("cat", "long-enough") is None


def test_user_create_refuses_a_taken_or_bad_name(runner, app):
    runner.invoke(args=["user", "create", "ann", "--password", "long-enough"])
    again = runner.invoke(args=["user", "create", "ann", "--password", "other-pass"])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(args=["user", "create", "a b", "--password", "long-enough"])
    assert bad.exit_code == 1 and "username" in bad.output
    assert authenticate("ann", "long-enough") is not None


def test_token_create(runner, app, users):
    result = runner.invoke(args=["token", "create", "operator", "--label", "erp"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("wfa_") and user_for_token(token).username == "operator"
    missing = runner.invoke(args=["token", "create", "nobody"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    too_long = runner.invoke(args=["token", "create", "operator", "--label", "x" * 65])
    assert too_long.exit_code == 1 and "at most 64" in too_long.output


def test_wf_export_to_stdout_and_file(runner, app, demo, tmp_path):
    printed = runner.invoke(args=["wf", "export", "order_sync"])  # any case
    assert printed.exit_code == 0 and json.loads(printed.stdout) == {**ORDER_SYNC, "version": 1}
    out = tmp_path / "o.json"
    written = runner.invoke(args=["wf", "export", "ORDER_SYNC", "-o", str(out)])
    assert written.exit_code == 0 and json.loads(out.read_text()) == {**ORDER_SYNC, "version": 1}
    assert runner.invoke(args=["wf", "export", "ORDER_SYNC", "--version", "2"]).exit_code == 1
    missing = runner.invoke(args=["wf", "export", "NOPE"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    into_a_dir = runner.invoke(args=["wf", "export", "ORDER_SYNC", "-o", str(tmp_path)])
    assert into_a_dir.exit_code == 2


def test_wf_import_and_replace(runner, app, demo, tmp_path):
    doc = json.loads(json.dumps(ORDER_SYNC))
    doc["workflow"]["description"] = "From CLI"
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(doc))
    refused = runner.invoke(args=["wf", "import", str(path)])
    assert refused.exit_code == 1 and "already exists" in refused.output
    assert export_document("ORDER_SYNC")["workflow"]["description"] == "Sales order to fulfilment"
    replaced = runner.invoke(args=["wf", "import", str(path), "--replace"])
    assert replaced.exit_code == 0 and "Imported workflow ORDER_SYNC." in replaced.output
    assert export_document("ORDER_SYNC")["workflow"]["description"] == "From CLI"
    doc["workflow"]["code"] = "copy_cli"
    fresh = runner.invoke(args=["wf", "import", "-"], input=json.dumps(doc))
    assert fresh.exit_code == 0 and "COPY_CLI" in fresh.output
    assert export_document("COPY_CLI")["workflow"]["states"] == doc["workflow"]["states"]


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not valid JSON"),
    (b"\xff\xfe\x00", "is not UTF-8"),
    ('{"format": "wfapp.workflow/v1", "workflow": {"code": "bad code"}}',
     "workflow.initial_state: is required"),
    ('{"format": "other/v9", "workflow": {}}', "format"),
    ("[]", "must be"),
])
def test_wf_import_refuses_bad_files_and_writes_nothing(runner, app, tmp_path, content,
                                                        message):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = runner.invoke(args=["wf", "import", str(path)])
    assert result.exit_code == 1 and "Error:" in result.output, result.output
    assert message in result.output, result.output
    assert runner.invoke(args=["wf", "export", "BAD"]).exit_code == 1


def test_wf_import_of_a_missing_file(runner, app, tmp_path):
    result = runner.invoke(args=["wf", "import", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "No such file or directory" in result.output


def test_demo_is_idempotent_and_keeps_its_password_in_the_instance_folder(runner, app):
    instance = Path(app.instance_path)
    assert instance != Path.cwd() / "instance"  # the tests never touch the real one
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    assert "Loaded the demo workflow ORDER_SYNC." in first.output
    assert "Loaded the demo integration SHOP_ORDERS." in first.output
    password_file = instance / "demo-admin.txt"
    assert str(password_file) in first.output
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    kept = dict(line.split(": ", 1) for line in password_file.read_text().splitlines())
    password = kept["password"]
    assert f"Log in as admin / {password}" in first.output
    assert authenticate("admin", password).role == "admin"
    # The webhook secret of SHOP_ORDERS sits beside it, stored encrypted in the database.
    from wfapp import signing
    from wfapp.services import secrets
    from wfapp.services.integrations import get_integration

    assert len(signing.parse_secret(kept["webhook_secret"])) == 32
    stored = secrets.read(get_integration("SHOP_ORDERS").id, secrets.SETTING, "webhook_secret")
    assert stored.value == kept["webhook_secret"]
    assert get_integration("SHOP_ORDERS").settings["webhook_enabled"] is True
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0 and "password is in" in second.output
    assert "Loaded" not in second.output and "Created" not in second.output
    assert dict(line.split(": ", 1) for line in password_file.read_text().splitlines()) == kept


def test_plugins_lists_trigger_types_and_settings(runner, app):
    result = runner.invoke(args=["plugins"])
    listing = json.loads(result.output)
    assert listing["trigger_types"]["on_webhook"] == "On Webhook"
    assert "webhook_secret" in listing["integration_settings"]


def test_worker_needs_redis(runner, app):
    result = runner.invoke(args=["worker", "--burst"])
    assert result.exit_code == 1 and "WFAPP_REDIS_URL" in result.output
