"""Workflow Instances, the instance page, Events and runs in the browser's HTML."""

from __future__ import annotations

import io
import json

from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import AuditEntry, Event, Instance
from wfapp.queue import get_queue
from wfapp.services.integrations import get_integration, update_integration
from wfapp.services.runs import start_run


def _import(records):
    run = start_run(get_integration("SHOP_ORDERS"), "import", records, "tester")
    get_queue().drain()
    return run


def _id(key: str) -> int:
    return db.session.scalar(select(Instance.id).where(Instance.record_key == key))


def test_list_columns_filters_and_pages(client, auth, demo):
    _import([{"key": f"K{i:03d}", "data": {"number": f"K{i:03d}", "total": i % 2}}
             for i in range(120)])
    auth.login("viewer")
    page = client.get("/instances/?workflow=ORDER_SYNC").get_data(as_text=True)
    for column in ("Integration Code", "Record ID", "Current State", "State Description",
                   "In State Since", "Time in State", "Last Trigger", "Last Transition"):
        assert f"<th>{column}</th>" in page
    assert "Next page" in page
    seen = 0
    url = "/instances/?integration=SHOP_ORDERS&state=PENDING"
    while url:
        text = client.get(url).get_data(as_text=True)
        seen += text.count('class="form-check-input row-select"')
        marker = 'href="/instances/?cursor='
        url = None
        if marker in text:
            start = text.index(marker) + len('href="')
            url = text[start:text.index('"', start)].replace("&amp;", "&")
    assert seen == 60
    assert "No instances match" in client.get("/instances/?record_key=nothing").get_data(
        as_text=True)
    bad = client.get("/instances/?run_id=x&since=yesterday").get_data(as_text=True)
    assert "run_id" in bad and "must be a date and time" in bad


def test_advance_reset_delete(client, auth, demo):
    _import([{"key": "A1", "data": {"total": 0}}, {"key": "A2", "data": {"total": 0}},
             {"key": "A3", "data": {"total": 4}}])
    auth.login("viewer")
    assert client.post("/instances/advance", data={"id": [_id("A1")],
                                                   "transition": "EXPIRE"}).status_code == 403
    auth.logout()
    auth.login("operator")
    dialog = client.get(f"/instances/advance?id={_id('A1')}&id={_id('A2')}").get_data(
        as_text=True)
    assert "Expire now" in dialog
    mixed = client.get(f"/instances/advance?id={_id('A1')}&id={_id('A3')}").get_data(
        as_text=True)
    assert "No Manual transition is available" in mixed
    client.post("/instances/advance", data={"id": [_id("A1"), _id("A2")],
                                            "transition": "EXPIRE", "comment": "too old"})
    states = dict(db.session.execute(select(Instance.record_key, Instance.state)).all())
    assert states["A1"] == states["A2"] == "EXPIRED"
    refused = client.post("/instances/reset", data={"id": [_id("A1")], "state": "NEW",
                                                    "note": ""})
    assert "a note saying why is required" in refused.get_data(as_text=True)
    client.post("/instances/reset", data={"id": [_id("A1")], "state": "NEW", "note": "retry"})
    db.session.expire_all()
    assert db.session.get(Instance, _id("A1")).state == "NEW"
    client.post("/instances/delete", data={"id": [_id("A2")]})
    assert _id("A2") is None
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.object_type == "instance"))
    assert audit.actor == "operator" and audit.details["record_key"] == "A2"


def test_instance_page(client, auth, demo):
    update_integration("SHOP_ORDERS", {"record_url_template": "https://erp.example/o/{record_key}"})
    _import([{"key": "B1", "data": {"number": "B1", "total": 0}}])
    auth.login("operator")
    page = client.get(f"/instances/{_id('B1')}").get_data(as_text=True)
    assert "data-countdown=" in page and "24 h → EXPIRE" in page
    assert "https://erp.example/o/B1" in page  # Open Record
    assert "Expire now" in page  # the Manual transition's button
    assert "condition record.total gt 0 was false because record.total is 0" in page
    assert "<th>Triggered By</th>" in page and "instance created" in page
    tried = client.get(f"/instances/{_id('B1')}?why_source=on_webhook&why_type=x"
                       f"&why_payload={json.dumps({'a': 1})}").get_data(as_text=True)
    assert "the pasted payload" in tried
    bad = client.get(f"/instances/{_id('B1')}?why_source=on_webhook&why_payload=[1]")
    assert "not a JSON object" in bad.get_data(as_text=True)
    client.post(f"/instances/{_id('B1')}/fire", data={"transition": "EXPIRE", "comment": "c"})
    page = client.get(f"/instances/{_id('B1')}").get_data(as_text=True)
    assert "EXPIRED" in page and "No Manual transition can fire" in page
    assert client.get("/instances/99999").status_code == 404


def test_events_page_and_replay(client, auth, demo):
    from wfapp.services.workflows import set_enabled

    set_enabled("ORDER_SYNC", enabled=False)
    _import([{"key": "C1", "data": {"total": 3}}])
    auth.login("operator")
    page = client.get("/events/?status=skipped").get_data(as_text=True)
    assert "workflow ORDER_SYNC is disabled" in page and "Replay" in page
    set_enabled("ORDER_SYNC", enabled=True)
    assert _id("C1") is None  # a disabled workflow creates no instance
    event = db.session.scalar(select(Event))
    client.post(f"/events/{event.id}/replay")
    get_queue().drain()
    assert _id("C1") is not None
    again = client.post(f"/events/{event.id}/replay", follow_redirects=True)
    assert "only skipped or failed events can be replayed" in again.get_data(as_text=True)
    assert client.get("/events/?status=odd").status_code == 200
    assert "payload" in client.get(f"/events/{event.id}").get_data(as_text=True).lower()


def test_run_upload_json_and_csv(client, auth, demo):
    auth.login("operator")
    response = client.post("/runs/new", data={
        "integration": "SHOP_ORDERS", "direction": "import",
        "file": (io.BytesIO(b"key,status,number,total\nD1,success,D1,5\nD2,error,D2,1\n"),
                 "orders.csv")}, content_type="multipart/form-data")
    run_url = response.headers["Location"]
    page = client.get(run_url).get_data(as_text=True)
    assert "Events pending" in page
    get_queue().drain()
    progress = client.get(run_url + ".json").get_json()
    assert progress == {"pending": 0, "processed": 2, "skipped": 0, "failed": 0}
    assert db.session.scalar(select(Instance.state).where(Instance.record_key == "D1")) == \
        "PENDING"
    bad = client.post("/runs/new", data={
        "integration": "SHOP_ORDERS", "direction": "import",
        "file": (io.BytesIO(json.dumps([{"key": "E1"}, {"data": {}}]).encode()), "r.json")},
        content_type="multipart/form-data")
    assert bad.status_code == 422 and "records[1].key" in bad.get_data(as_text=True)
    assert _id("E1") is None  # nothing written
    auth.logout()
    auth.login("viewer")
    assert client.post("/runs/new", data={"integration": "SHOP_ORDERS"}).status_code == 403
