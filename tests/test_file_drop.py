"""The On File Drop example plugin in-process: pick-up, dedupe, hostile files, settings, panel.

The plugin is loaded from its source folder through PLUGINS here; tests/test_plugin_distribution.py
installs it with pip and loads it as an entry point in real subprocesses.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.filedrop import EXAMPLE, drop, listing, workflow
from wfapp.extensions import db
from wfapp.models import Event
from wfapp.queue import get_queue
from wfapp.services.definitions import import_document

API = "/api/v1"


@pytest.fixture
def drops(tmp_path: Path) -> Path:
    """FILE_DROP_ROOT for this test."""
    root = tmp_path / "drops"
    root.mkdir()
    return root


@pytest.fixture
def app_config(app_config: dict[str, Any], drops: Path, monkeypatch: pytest.MonkeyPatch
               ) -> dict[str, Any]:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    app_config.update(PLUGINS=["wfapp_file_drop"], FILE_DROP_ROOT=str(drops),
                      FILE_DROP_SETTLE_SECONDS=0)
    return app_config


@pytest.fixture
def files(app, client, tokens, drops: Path) -> Path:
    """Workflow DROPS and integration FILES watching <root>/orders, record key at `id`."""
    import_document(workflow())
    created = client.post(f"{API}/integrations", headers=tokens["author"], json={
        "code": "FILES", "workflow_code": "DROPS", "file_drop_folder": "orders",
        "file_drop_record_key_path": "id"})
    assert created.status_code == 201, created.get_json()
    folder = drops / "orders"
    folder.mkdir()
    return folder


def pick_up() -> dict[str, int]:
    """Run the plugin's scheduled job, then let the worker apply what it stored."""
    from wfapp_file_drop.pickup import run

    totals = run()
    get_queue().drain()
    return totals


def instances(client, tokens) -> dict[str, str]:
    """record key -> state of FILES' instances, through the API."""
    body = client.get(f"{API}/instances?integration=FILES", headers=tokens["viewer"]).get_json()
    return {i["record_key"]: i["state"] for i in body["items"]}


def event_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Event))


def test_a_dropped_file_fires_the_transition(client, tokens, files):
    drop(files, "order-1.json", {"id": "A-1", "type": "order.created", "total": 5})
    assert pick_up() == {"stored": 1, "duplicates": 0, "rejected": 0, "failed": 0}
    assert instances(client, tokens) == {"A-1": "RECEIVED"}
    assert listing(files) == {"processed", "rejected"}
    assert listing(files / "processed") == {"order-1.json"}
    event = db.session.scalar(select(Event))
    assert (event.source, event.type, event.record_key) == ("on_file_drop", "order.created", "A-1")
    assert event.payload["data"] == {"id": "A-1", "type": "order.created", "total": 5}
    assert event.payload["file"]["name"] == "order-1.json"
    assert event.payload["file"]["size"] == len(b'{"id": "A-1", "type": "order.created", '
                                                b'"total": 5}')


def test_the_pattern_and_conditions_decide(client, tokens, files):
    drop(files, "invoice-1.json", {"id": "B-1", "total": 5})
    drop(files, "order-2.json", {"id": "B-2", "total": 0})
    assert pick_up()["stored"] == 2
    assert instances(client, tokens) == {"B-1": "NEW", "B-2": "NEW"}
    results = {e.record_key: e.result for e in db.session.scalars(select(Event))}
    assert "no on_file_drop transition from NEW matched" in results["B-1"]
    assert listing(files / "processed") == {"invoice-1.json", "order-2.json"}
    # The why-not panel names the pattern the file missed (the trigger's explain_mismatch).
    body = client.get(f"{API}/instances?record_key=B-1", headers=tokens["viewer"]).get_json()
    _card(client, tokens)  # logs the client in
    page = html.unescape(client.get(f"/instances/{body['items'][0]['id']}").get_data(
        as_text=True))
    assert "the file 'invoice-1.json' does not match this transition's pattern " \
        "'order-*.json'" in page


def test_the_file_name_is_the_record_key_by_default(client, tokens, files):
    client.patch(f"{API}/integrations/FILES", headers=tokens["author"],
                 json={"file_drop_record_key_path": ""})
    drop(files, "order-77.json", {"total": 1})
    pick_up()
    assert instances(client, tokens) == {"order-77": "RECEIVED"}


def test_the_same_file_again_is_a_duplicate(client, tokens, files):
    drop(files, "order-1.json", {"id": "C-1", "total": 5})
    assert pick_up()["stored"] == 1
    # Dropped again (or read again after a crash between the commit and the move).
    drop(files, "order-1.json", {"id": "C-1", "total": 5})
    assert pick_up() == {"stored": 0, "duplicates": 1, "rejected": 0, "failed": 0}
    assert event_count() == 1
    kept = listing(files / "processed")
    assert len(kept) == 2 and "order-1.json" in kept  # both copies kept, none overwritten
    # Same name, other content: a new event.
    drop(files, "order-1.json", {"id": "C-1", "total": 6})
    assert pick_up()["stored"] == 1


def _reason(rejected: Path, name: str) -> str:
    return (rejected / f"{name}.reason.txt").read_text()


def test_hostile_files_are_rejected_with_a_reason(client, tokens, files, drops):
    client.patch(f"{API}/integrations/FILES", headers=tokens["author"],
                 json={"file_drop_max_bytes": 400})
    outside = drops.parent / "secret.json"
    outside.write_text('{"id": "SECRET", "total": 1}')
    huge = drop(files, "huge.json", {"id": "H", "pad": "x" * 500}).stat().st_size
    drop(files, "text.json", "this is not json")
    drop(files, "latin1.json", b'{"id": "\xe9"}')
    drop(files, "list.json", [1, 2])
    drop(files, "nul.json", '{"id": "N", "note": "a\\u0000b"}')
    drop(files, "deep.json", "[" * 90 + "]" * 90)
    drop(files, "nan.json", '{"id": "N", "total": NaN}')
    drop(files, "twice.json", '{"id": "T", "id": "U"}')
    drop(files, "nokey.json", {"total": 1})
    drop(files, "objkey.json", {"id": {"a": 1}})
    drop(files, "longkey.json", {"id": "k" * 201})
    os.symlink(outside, files / "link.json")
    os.mkfifo(files / "pipe.json")
    (files / "folder.json").mkdir()
    drop(files, b"bad\xff.json", {"id": "X", "total": 1})
    drop(files, ".hidden.json", {"id": "H2", "total": 1})
    drop(files, "notes.txt", "left alone")

    totals = pick_up()
    assert totals == {"stored": 0, "duplicates": 0, "rejected": 15, "failed": 0}
    assert event_count() == 0
    assert instances(client, tokens) == {}
    assert listing(files) == {"processed", "rejected", ".hidden.json", "notes.txt"}
    rejected = files / "rejected"
    assert f"is {huge} bytes; File Drop Max Bytes is 400" in _reason(rejected, "huge.json")
    assert "the content is not valid JSON" in _reason(rejected, "text.json")
    assert "the content is not UTF-8" in _reason(rejected, "latin1.json")
    assert "must be a JSON object, not list" in _reason(rejected, "list.json")
    assert "at note must not contain NUL characters" in _reason(rejected, "nul.json")
    assert "nested" in _reason(rejected, "deep.json")
    assert "NaN is not a JSON value" in _reason(rejected, "nan.json")
    assert "has the key 'id' twice" in _reason(rejected, "twice.json")
    assert "no record key at id" in _reason(rejected, "nokey.json")
    assert "must be a string or a whole number" in _reason(rejected, "objkey.json")
    assert "longer than 200 characters" in _reason(rejected, "longkey.json")
    assert "symbolic link" in _reason(rejected, "link.json")
    assert "not a regular file" in _reason(rejected, "pipe.json")
    assert "is a folder" in _reason(rejected, "folder.json")
    bad = Path(os.fsdecode(os.path.join(os.fsencode(rejected), b"bad\xff.json.reason.txt")))
    assert b"not valid UTF-8" in bad.read_bytes()
    # The link moved, not its target; nothing from outside the folder was read.
    assert (rejected / "link.json").is_symlink() and outside.read_text().startswith('{"id"')
    # Each refusal is in the delivery log the card shows.
    card = _card(client, tokens)
    assert "15 file(s) moved to" in card
    assert "twice.json the content has the key" in html.unescape(card)


def _card(client, tokens) -> str:
    from tests.conftest import PASSWORD

    client.post("/auth/login", data={"username": "viewer", "password": PASSWORD})
    page = client.get("/integrations/FILES")
    assert page.status_code == 200
    return page.get_data(as_text=True)


def test_odd_names_are_fine_and_shown_escaped(client, tokens, files):
    client.patch(f"{API}/integrations/FILES", headers=tokens["author"],
                 json={"file_drop_record_key_path": ""})
    odd = "order-we ird\tü;$(x)'\"<b>.json"
    drop(files, odd, {"total": 1})
    drop(files, "<img src=x onerror=alert(1)>.json", "not json")
    assert pick_up()["stored"] == 1
    assert instances(client, tokens) == {odd[:-5]: "RECEIVED"}
    card = _card(client, tokens)
    assert "<img src=x" not in card and "&lt;img src=x onerror=alert(1)&gt;.json" in card
    assert "<b>" not in card.split('id="panel-file-drop"')[1]


def test_files_still_being_written_wait(app, files):
    app.config["FILE_DROP_SETTLE_SECONDS"] = 60
    drop(files, "order-1.json", {"id": "D-1", "total": 1}, age=1)
    drop(files, "order-2.json", {"id": "D-2", "total": 1}, age=120)
    drop(files, "order-3.json", {"id": "D-3", "total": 1}, age=-3600)  # dated in the future
    assert pick_up()["stored"] == 2
    assert listing(files) == {"processed", "rejected", "order-1.json"}


def test_one_pick_up_takes_a_bounded_batch(files):
    from wfapp_file_drop import pickup

    for i in range(pickup.BATCH + 3):
        drop(files, f"order-{i:04d}.json", {"id": f"E-{i}", "total": 1}, age=1000 - i)
    assert pick_up()["stored"] == pickup.BATCH
    assert len(listing(files)) == 3 + 2
    assert pick_up()["stored"] == 3


def test_a_broken_folder_does_not_stop_the_others(client, tokens, files, drops):
    for code, folder in (("GONE", "missing"), ("LINKED", "linked")):
        client.post(f"{API}/integrations", headers=tokens["author"],
                    json={"code": code, "workflow_code": "DROPS", "file_drop_folder": folder})
    linked = drops / "linked"
    linked.mkdir()
    os.symlink(drops.parent, linked / "processed")  # processed/ must never be a link
    drop(linked, "order-1.json", {"id": "L-1", "total": 1})
    drop(files, "order-1.json", {"id": "F-1", "total": 1})
    totals = pick_up()
    assert totals["stored"] == 1 and totals["failed"] == 1
    assert instances(client, tokens) == {"F-1": "RECEIVED"}
    assert listing(linked) == {"processed", "order-1.json"}  # untouched
    from wfapp.plugin_api import find_integration, state_get

    gone = state_get(find_integration("GONE"), "file_drop", "status")
    assert "does not exist" in gone["last_error"]
    broken = state_get(find_integration("LINKED"), "file_drop", "status")
    assert "is not a folder" in broken["last_error"]
    # The error is written once, not on every pick-up.
    pick_up()
    assert state_get(find_integration("GONE"), "file_drop", "status") == gone


def test_a_disabled_integration_is_not_picked_up(client, tokens, files):
    client.patch(f"{API}/integrations/FILES", headers=tokens["author"], json={"enabled": False})
    drop(files, "order-1.json", {"id": "G-1", "total": 1})
    assert pick_up()["stored"] == 0
    assert "order-1.json" in listing(files)


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"file_drop_folder": "../outside"}, "file_drop_folder", "inside FILE_DROP_ROOT"),
    ({"file_drop_folder": "/etc"}, "file_drop_folder", "inside FILE_DROP_ROOT"),
    ({"file_drop_folder": 5}, "file_drop_folder", "must be a string"),
    ({"file_drop_record_key_path": "a..b"}, "file_drop_record_key_path", "dotted path"),
    ({"file_drop_event_type_path": "a b"}, "file_drop_event_type_path", "dotted path"),
    ({"file_drop_max_bytes": 0}, "file_drop_max_bytes", "at least 1"),
    ({"file_drop_max_bytes": "big"}, "file_drop_max_bytes", "must be a number"),
])
def test_bad_settings_are_refused(client, tokens, files, fields, field, message):
    response = client.patch(f"{API}/integrations/FILES", headers=tokens["author"], json=fields)
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    assert [d["path"] for d in details] == [field]
    assert message in details[0]["message"]
    shown = client.get(f"{API}/integrations/FILES", headers=tokens["viewer"]).get_json()
    assert shown["file_drop_folder"] == "orders"  # nothing half-written


def test_a_folder_inside_the_root_is_accepted(client, tokens, files, drops):
    for value in ("orders/../orders", str(drops / "elsewhere"), "new/not-yet-there"):
        response = client.patch(f"{API}/integrations/FILES", headers=tokens["author"],
                                json={"file_drop_folder": value})
        assert response.status_code == 200, response.get_json()


def test_the_pattern_is_a_file_name(app):
    doc = workflow(pattern="in/order-*.json")
    from wfapp.services.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="pattern: is a file-name pattern"):
        import_document(doc)


def test_the_panel_shows_folder_waiting_and_last_pick_up(client, tokens, files):
    card = _card(client, tokens)
    assert str(files) in card and "watched" in card
    drop(files, "order-1.json", {"id": "P-1", "total": 1})
    drop(files, "order-2.json", {"id": "P-2", "total": 1})
    assert 'id="file-drop-waiting">2<' in _card(client, tokens)
    pick_up()
    card = _card(client, tokens)
    assert 'id="file-drop-waiting">0<' in card
    assert " UTC: 2 file(s), 2 new event(s)" in card
    assert "P-1" in card.split('id="file-drop-deliveries"')[1]


def test_the_panel_of_an_integration_without_a_folder(client, tokens, files):
    client.post(f"{API}/integrations", headers=tokens["author"], json={"code": "OTHER"})
    from tests.conftest import PASSWORD

    client.post("/auth/login", data={"username": "viewer", "password": PASSWORD})
    assert "No folder is watched" in client.get("/integrations/OTHER").get_data(as_text=True)
