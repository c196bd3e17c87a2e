"""The Events list, the event page and Replay, through the test client."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import Event, Instance, Run
from wfapp.queue import get_queue
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import get_integration
from wfapp.services.runs import start_run
from wfapp.services.workflows import set_enabled


def _import(records: list[dict[str, Any]]) -> Run:
    run = start_run(get_integration("SHOP_ORDERS"), "import", records, "tester")
    get_queue().drain()
    return run


def _text(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def _ids_on(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<td><a href="/events/(\d+)">#', page)]


def test_list_columns_filters_and_pages(client, auth, demo):
    first = _import([{"key": f"E{i:03d}", "data": {"number": f"E{i:03d}", "total": 1}}
                     for i in range(70)])
    ingest(get_integration("SHOP_ORDERS"), [NewEvent(
        "on_webhook", "order.confirmed", "E000", None,
        {"type": "order.confirmed", "data": {"status": "shipped"}})])
    get_queue().drain()
    auth.login("viewer")
    page = _text(client, "/events/")
    for column in ("Event", "Received", "Integration", "Source", "Type", "Record / Run",
                   "Status", "What it did"):
        assert f"<th>{column}</th>" in page
    ids = _ids_on(page)
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)  # newest first
    assert "On Webhook" in page and "fired CONFIRM" in page.replace("fired transition", "fired")
    seen, url = [], "/events/"
    while url:
        text = _text(client, url)
        seen += _ids_on(text)
        match = re.search(r'href="(/events/\?cursor=[^"]+)">Next page', text)
        url = match.group(1).replace("&amp;", "&") if match else ""
    assert len(seen) == 71 == len(set(seen))
    assert len(_ids_on(_text(client, "/events/?source=on_webhook"))) == 1
    assert len(_ids_on(_text(client, f"/events/?run_id={first.id}&status=processed"))) == 50
    assert _ids_on(_text(client, "/events/?status=failed")) == []
    assert _ids_on(_text(client, "/events/?integration=OTHER")) == []
    assert len(_ids_on(_text(client, "/events/?integration=shop_orders"))) == 50
    instance_id = db.session.scalar(select(Instance.id).where(Instance.record_key == "E000"))
    assert len(_ids_on(_text(client, f"/events/?instance_id={instance_id}"))) == 2
    assert "No events match these filters" in _text(client, "/events/?status=failed")


def test_empty_events_list_explains(client, auth):
    auth.login("viewer")
    assert "No events yet" in _text(client, "/events/")


@pytest.mark.parametrize("query, message", [
    ("status=odd", "must be pending, processed, skipped or failed"),
    ("run_id=x", "Not a valid integer value"),
    ("cursor=-4", "must be an id: a whole number from 1 up"),
    ("cursor=99999999999999999999", "must be an id"),
    ("integration=a%00", "must not contain a NUL character"),
])
def test_bad_filters_answer_400(client, auth, query, message):
    auth.login("viewer")
    assert message in _text(client, f"/events/?{query}", 400)


def test_event_page(client, auth, demo):
    _import([{"key": "P1", "data": {"number": "P1", "total": 7}}])
    event = db.session.scalar(select(Event))
    auth.login("viewer")
    page = _text(client, f"/events/{event.id}")
    assert "SHOP_ORDERS" in page and f"run #{event.run_id}" in page
    assert "&#34;total&#34;: 7" in page  # the payload, pretty-printed
    assert "fired" in page.lower() and f'href="/instances/{event.instance_id}"' in page
    assert "Replay" not in page  # processed events cannot be replayed
    _text(client, "/events/12345", 404)
    _text(client, "/events/99999999999999999999", 404)


def test_replay_skipped_event(client, auth, demo):
    set_enabled("ORDER_SYNC", enabled=False)
    _import([{"key": "C1", "data": {"total": 3}}])
    event = db.session.scalar(select(Event))
    auth.login("viewer")
    page = _text(client, "/events/?status=skipped")
    assert "workflow ORDER_SYNC is disabled" in page
    assert re.search(r'title="Needs the operator role">\s*<button[^>]*disabled', page)
    assert client.post(f"/events/{event.id}/replay").status_code == 403
    auth.logout()
    auth.login("operator")
    set_enabled("ORDER_SYNC", enabled=True)
    assert db.session.scalar(select(Instance.id)) is None  # a disabled workflow made none
    response = client.post(f"/events/{event.id}/replay", data={"back": "/events/?status=skipped"})
    assert response.headers["Location"] == "/events/?status=skipped"
    get_queue().drain()
    db.session.expire_all()
    assert db.session.get(Event, event.id).status == "processed"
    assert db.session.scalar(select(Instance.state).where(Instance.record_key == "C1")) == \
        "PENDING"
    again = client.post(f"/events/{event.id}/replay", follow_redirects=True)
    assert f"event {event.id} is processed; only skipped or failed events can be replayed" \
        in again.get_data(as_text=True)
    away = client.post(f"/events/{event.id}/replay", data={"back": "//evil.example/x"})
    assert away.headers["Location"] == f"/events/{event.id}"
    assert client.post("/events/424242/replay").status_code == 404
