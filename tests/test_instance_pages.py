"""The Workflow Instances list, its actions, and the instance page, through the test client."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import AuditEntry, Event, HistoryEntry, Instance, Run, utcnow
from wfapp.queue import get_queue
from wfapp.services.integrations import get_integration, update_integration
from wfapp.services.runs import start_run

COLUMNS = ("Integration Code", "Record ID", "Current State", "State Description",
           "In State Since", "Time in State", "Last Trigger", "Last Transition")


def _import(records: list[dict[str, Any]], direction: str = "import") -> Run:
    run = start_run(get_integration("SHOP_ORDERS"), direction, records, "tester")
    get_queue().drain()
    return run


def _id(key: str) -> int | None:
    return db.session.scalar(select(Instance.id).where(Instance.record_key == key))


def _state(key: str) -> str | None:
    db.session.expire_all()
    return db.session.scalar(select(Instance.state).where(Instance.record_key == key))


def _text(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def _keys_on(page: str) -> list[str]:
    return re.findall(r'row-select" [^>]*aria-label="Select ([^"]+)"', page)


def _walk(client: FlaskClient, url: str) -> list[str]:
    """Follow the Next page links; return every record key listed, in order."""
    keys = []
    while url:
        page = _text(client, url)
        keys += _keys_on(page)
        match = re.search(r'href="(/instances/\?cursor=[^"]+)">Next page', page)
        url = match.group(1).replace("&amp;", "&") if match else ""
    return keys


def test_list_columns_and_keyset_pages(client, auth, demo):
    _import([{"key": f"K{i:03d}", "data": {"number": f"K{i:03d}", "total": i % 2}}
             for i in range(120)])
    auth.login("viewer")
    page = _text(client, "/instances/?workflow=ORDER_SYNC")
    head = re.sub(r"<[^>]+>", "|", re.search(r"<thead>.*?</thead>", page, re.S).group(0))
    cells = [c.strip(" ▲▼\n") for c in head.split("|") if c.strip(" ▲▼\n")]
    assert cells == list(COLUMNS)  # some are links that sort by them
    assert "Next page" in page and len(_keys_on(page)) == 50
    assert "SHOP_ORDERS" in page and "New order imported" in page and "On Import" in page
    keys = _walk(client, "/instances/?integration=shop_orders")
    assert len(keys) == 120 and len(set(keys)) == 120  # every row once, none skipped
    pending = _walk(client, "/instances/?integration=SHOP_ORDERS&state=PENDING")
    assert sorted(pending) == [f"K{i:03d}" for i in range(1, 120, 2)]
    row = re.search(r"<tr class=\"selectable\".*?</tr>", page, re.S).group(0)
    assert re.search(r'<time datetime="[^"]+\+00:00" title="[^"]+">\d{4}-\d\d-\d\d ', row)
    assert re.search(r"<td>\d+ s</td>", row)  # Time in State, humanized


def test_filters(client, auth, demo):
    _import([{"key": "F1", "data": {"total": 0}}, {"key": "F2", "data": {"total": 9}}])
    run = _import([{"key": "F3", "data": {"total": 0}}])
    auth.login("operator")
    client.post(f"/instances/{_id('F1')}/fire", data={"transition": "EXPIRE"})
    assert _keys_on(_text(client, "/instances/?active=no")) == ["F1"]
    assert sorted(_keys_on(_text(client, "/instances/?active=yes"))) == ["F2", "F3"]
    assert len(_keys_on(_text(client, "/instances/?active=all"))) == 3
    assert _keys_on(_text(client, "/instances/?record_key=F2")) == ["F2"]
    assert _keys_on(_text(client, "/instances/?state=pending")) == ["F2"]
    later = (utcnow() + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    earlier = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert len(_keys_on(_text(client, f"/instances/?since={later}&active=all"))) == 3
    # "Active" is the default filter: the finished F1 is left out unless asked for.
    assert sorted(_keys_on(_text(client, f"/instances/?since={later}"))) == ["F2", "F3"]
    empty = _text(client, f"/instances/?since={earlier}")
    assert _keys_on(empty) == [] and "No instances match these filters" in empty
    assert _keys_on(_text(client, "/instances/?workflow=OTHER")) == []
    # Per Record: the run filter finds the instances the run's records reached.
    by_run = _text(client, f"/instances/?run_id={run.id}&integration=SHOP_ORDERS")
    assert _keys_on(by_run) == ["F3"]
    nothing = _text(client, "/instances/?run_id=999999&integration=SHOP_ORDERS")
    assert _keys_on(nothing) == [] and "/events/?run_id=999999" in nothing
    first = _text(client, "/instances/")
    assert "No instances yet" not in first


def test_empty_list_explains(client, auth, demo):
    auth.login("viewer")
    page = _text(client, "/instances/")
    assert "No instances yet: they appear when an integration run or an event reaches a " \
           "workflow" in page


@pytest.mark.parametrize("query, message", [
    ("run_id=x", "Not a valid integer value"),
    ("run_id=99999999999999999999", "must be an id: a whole number from 1 up"),
    ("since=yesterday", "Not a valid datetime value"),
    ("active=maybe", "must be yes, no or all"),
    ("cursor=not-a-cursor", "is not a cursor this list gave out"),
    ("cursor=WyJ4IiwgMV0", "is not a cursor this list gave out"),
    ("record_key=a%00b", "must not contain a NUL character"),
    ("workflow=" + "W" * 30, "Field cannot be longer than 20 characters"),
])
def test_bad_filters_answer_400_with_a_message(client, auth, demo, query, message):
    auth.login("viewer")
    assert message in _text(client, f"/instances/?{query}", 400)


def test_an_unreadable_id_gets_one_message(client, auth):
    auth.login("viewer")
    page = _text(client, "/instances/?run_id=x", 400)
    assert "Run: Not a valid integer value." in page and "must be an id" not in page


def test_viewer_sees_actions_disabled_and_is_refused(client, auth, demo):
    _import([{"key": "V1", "data": {"total": 0}}])
    auth.login("viewer")
    page = _text(client, "/instances/")
    assert page.count('data-tip="Needs the operator role"') == 3  # Advance, Reset, Delete
    instance_page = _text(client, f"/instances/{_id('V1')}")
    assert 'title="Needs the operator role"' in instance_page
    assert re.search(r"<button[^>]*disabled[^>]*>Expire now</button>", instance_page)
    for url, data in [("/instances/advance", {"transition": "EXPIRE"}),
                      ("/instances/reset", {"state": "NEW", "note": "x"}),
                      ("/instances/delete", {}),
                      (f"/instances/{_id('V1')}/fire", {"transition": "EXPIRE"})]:
        response = client.post(url, data={"id": [_id("V1")], **data})
        assert response.status_code == 403
        assert "This needs the operator role" in response.get_data(as_text=True)
    assert client.get(f"/instances/advance?id={_id('V1')}").status_code == 403
    assert _state("V1") == "NEW" and _id("V1") is not None


def test_advance_workflow(client, auth, demo):
    _import([{"key": "A1", "data": {"total": 0}}, {"key": "A2", "data": {"total": 0}},
             {"key": "A3", "data": {"total": 4}}])
    auth.login("operator")
    page = _text(client, "/instances/")
    assert re.search(r'data-manual="EXPIRE">\s*<td[^>]*><input[^>]*aria-label="Select A1"', page)
    assert re.search(r'data-manual="GIVE_UP">\s*<td[^>]*><input[^>]*aria-label="Select A3"', page)
    dialog = _text(client, f"/instances/advance?id={_id('A1')}&id={_id('A2')}")
    assert "Expire now" in dialog and "EXPIRE → EXPIRED" in dialog
    assert 'data-confirm-codes="EXPIRE"' in dialog  # its trigger config asks to confirm
    mixed = _text(client, f"/instances/advance?id={_id('A1')}&id={_id('A3')}")
    assert "No Manual transition is available from the state of every selected" in mixed
    response = client.post("/instances/advance", data={
        "id": [_id("A1"), _id("A2")], "transition": "EXPIRE", "comment": "too old",
        "back": "/instances/?state=NEW"})
    assert response.headers["Location"] == "/instances/?state=NEW"
    assert _state("A1") == _state("A2") == "EXPIRED"
    notes = db.session.scalars(select(HistoryEntry.notes).where(
        HistoryEntry.transition == "EXPIRE")).all()
    assert notes == ["too old", "too old"]
    # Refused per instance, with the reason; the others still fire.
    response = client.post("/instances/advance", data={
        "id": [_id("A1"), _id("A3")], "transition": "GIVE_UP"}, follow_redirects=True)
    text = response.get_data(as_text=True)
    assert "Fired GIVE_UP for A3" in text
    assert "Not fired for A1: transition GIVE_UP leaves PENDING; the instance is in EXPIRED" \
        in text
    assert _state("A3") == "FAILED"
    missing = client.post("/instances/advance", data={"id": [_id("A1")]})
    assert missing.status_code == 400
    nothing = client.get("/instances/advance?id=abc&id=99999999999999999999",
                         follow_redirects=True)
    assert "Select one or more instances first" in nothing.get_data(as_text=True)
    # `back` never leads off the site.
    away = client.post("/instances/advance", data={
        "id": [_id("A1"), _id("A2")], "transition": "EXPIRE", "back": "https://evil.example/"})
    assert away.headers["Location"] == "/instances/"


def test_reset_to_state(client, auth, demo):
    _import([{"key": "R1", "data": {"total": 3}}, {"key": "R2", "data": {"total": 3}}])
    auth.login("operator")
    form = _text(client, f"/instances/reset?id={_id('R1')}")
    assert '<label class="form-label" for="note">Note</label>' in form
    assert "NEW · New order imported" in form and "data-confirm=" in form
    refused = client.post("/instances/reset", data={"id": [_id("R1")], "state": "NEW",
                                                    "note": "  "})
    assert refused.status_code == 400
    assert "a note saying why is required" in refused.get_data(as_text=True)
    bad_state = client.post("/instances/reset", data={"id": [_id("R1")], "state": "NOPE",
                                                      "note": "x"})
    assert bad_state.status_code == 400 and "Not a valid choice" in bad_state.get_data(
        as_text=True)
    assert _state("R1") == "PENDING"
    response = client.post("/instances/reset", data={
        "id": [_id("R1"), _id("R2")], "state": "NEW", "note": "resend both"},
        follow_redirects=True)
    assert "Reset to NEW: R1, R2" in response.get_data(as_text=True)
    assert _state("R1") == _state("R2") == "NEW"
    entry = db.session.scalars(select(HistoryEntry).where(
        HistoryEntry.trigger_type == "reset")).first()
    assert (entry.from_state, entry.to_state, entry.transition, entry.actor, entry.notes) == \
        ("PENDING", "NEW", None, "operator", "resend both")
    one = client.post("/instances/reset", data={"id": [_id("R1")], "state": "PENDING",
                                                "note": "n"})
    assert one.headers["Location"] == f"/instances/{_id('R1')}"


def test_delete_instance_is_audited(client, auth, demo):
    _import([{"key": "D1", "data": {"total": 3}}, {"key": "D2", "data": {"total": 0}}])
    auth.login("operator")
    confirm = _text(client, f"/instances/delete?id={_id('D1')}")
    assert "written to the audit log" in confirm and ">Delete Instance</button>" in confirm
    assert _id("D1") is not None  # the GET only asks
    deleted = _id("D1")
    response = client.post("/instances/delete", data={"id": [deleted],
                                                      "back": f"/instances/{deleted}"})
    assert response.headers["Location"].startswith("/instances/?")  # not the gone page
    assert _text(client, f"/instances/{deleted}", 404)
    assert _id("D1") is None
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.object_type == "instance"))
    assert (audit.actor, audit.action, audit.object_key) == ("operator", "delete", str(deleted))
    assert audit.details["record_key"] == "D1" and audit.details["state"] == "PENDING"
    assert db.session.scalar(select(Event.instance_id).where(Event.record_key == "D1")) is None
    _import([{"key": "D1", "data": {"total": 0}}])  # the next event starts a new instance
    assert _state("D1") == "NEW"
    fresh = db.session.scalars(select(HistoryEntry).where(
        HistoryEntry.instance_id == _id("D1"))).all()
    assert [(h.from_state, h.to_state) for h in fresh] == [(None, "NEW")]


def test_instance_page(client, auth, demo):
    update_integration("SHOP_ORDERS", {
        "record_url_template": "https://erp.example/o/{record_key}?n={data.number}"})
    _import([{"key": "B1", "data": {"number": "B 1", "total": 0}}])
    auth.login("operator")
    page = _text(client, f"/instances/{_id('B1')}")
    assert 'id="current-state">NEW<' in page and "New order imported" in page
    assert 'href="/workflows/ORDER_SYNC"' in page and 'href="/integrations/SHOP_ORDERS"' in page
    assert "24 h, then EXPIRE" in page
    left = int(re.search(r'data-seconds-left="(-?\d+)"', page).group(1))
    assert 23 * 3600 < left <= 24 * 3600
    assert 'href="https://erp.example/o/B1?n=B%201"' in page  # Open Record
    assert "&#34;total&#34;: 0" in page or '"total": 0' in page  # record data
    assert 'data-confirm="Expire now: move B1 from NEW to EXPIRED?"' in page
    assert '<label class="visually-hidden" for="comment-EXPIRE">Comment for Expire now</label>' \
        in page
    assert "condition record.total gt 0 was false because record.total is 0" in page
    for column in ("Timestamp", "From State", "To State", "Transition Code", "Trigger Type",
                   "Triggered By", "Notes"):
        assert f"<th>{column}</th>" in page
    assert "instance created" in page
    event = db.session.scalar(select(Event).where(Event.record_key == "B1"))
    assert f'href="/events/{event.id}"' in page and "processed" in page
    client.post(f"/instances/{_id('B1')}/fire", data={"transition": "EXPIRE", "comment": "c"})
    page = _text(client, f"/instances/{_id('B1')}")
    assert 'id="current-state">EXPIRED<' in page and "No Manual transition can fire" in page
    assert "data-countdown" not in page and "none in this state" in page
    refused = client.post(f"/instances/{_id('B1')}/fire", data={"transition": "EXPIRE"},
                          follow_redirects=True)
    assert "Not fired: transition EXPIRE leaves NEW; the instance is in EXPIRED" in \
        refused.get_data(as_text=True)
    _text(client, "/instances/99999", 404)
    _text(client, "/instances/99999999999999999999", 404)
    assert client.post("/instances/99999/fire", data={"transition": "X"}).status_code == 404


def test_instance_page_variables_and_record_link_from_vars(client, auth, demo):
    update_integration("SHOP_ORDERS", {"record_url_template": "https://erp/{vars.order_no}"})
    _import([{"key": "G1", "data": {"number": "N-7", "total": 5}}])
    auth.login("viewer")
    page = _text(client, f"/instances/{_id('G1')}")
    assert re.search(r"order_no</th><td[^>]*>N-7</td>", page)  # captured by SUBMIT
    assert 'href="https://erp/N-7"' in page
    update_integration("SHOP_ORDERS", {"record_url_template": ""})
    page = _text(client, f"/instances/{_id('G1')}")
    assert "The integration has no Record URL Template" in page


def test_why_not_latest_event_and_sample_payload(client, auth, demo):
    _import([{"key": "W1", "data": {"number": "W1", "total": 5}}])
    auth.login("viewer")
    url = f"/instances/{_id('W1')}"
    page = _text(client, url)
    assert re.search(r"For the latest event #\d+ \(On Import, received ", page)
    assert re.search(r"which already fired SUBMIT \(NEW → PENDING\); evaluated again in PENDING",
                     page)
    assert "wrong trigger: it waits for On Webhook, the event came from On Import" in page
    sample = {"type": "order.confirmed", "data": {"status": "shipped", "tracking": "T1"}}
    fires = _text(client, f"{url}?why_source=on_webhook&why_type=order.confirmed"
                          f"&why_payload={quote(json.dumps(sample))}")
    assert "the pasted payload as an event from On Webhook" in fires
    assert re.search(r'<tr class="table-success"><td>✓ fires</td><td[^>]*>CONFIRM</td>', fires)
    sample["data"]["status"] = "lost"
    no = _text(client, f"{url}?why_source=on_webhook&why_type=order.confirmed"
                       f"&why_payload={quote(json.dumps(sample))}")
    assert "table-success" not in no and "event.data.status" in no
    assert _state("W1") == "PENDING"  # explaining fires nothing
    bad = _text(client, f"{url}?why_source=on_webhook&why_payload=%5B1%5D")
    assert "must be a JSON object" in bad and "The sample cannot be evaluated" in bad
    broken = _text(client, f"{url}?why_source=on_webhook&why_payload=%7Bx")
    assert "is not valid JSON" in broken
    unknown = _text(client, f"{url}?why_source=nope&why_payload=%7B%7D")
    assert "Not a valid choice" in unknown
