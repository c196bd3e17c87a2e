"""`/bc/<integration>/notifications` through the test client: handshake, events, refusals.

Subscriptions against the Business Central stand-in over real HTTP are in tests/e2e/test_bc.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from tests.bc_helpers import CLIENT_STATE, item, setup_in_app
from tests.strategies import DB_PROFILE
from wfapp.extensions import db
from wfapp.models import Delivery, Event, Instance
from wfapp.queue import get_queue

URL = "/bc/BC_SALES/notifications"


@pytest.fixture
def bc(app: Any) -> None:
    """The BC workflow and integration (client state set, no API access)."""
    setup_in_app()


def events() -> list[Event]:
    """The stored events, oldest first."""
    db.session.expire_all()
    return list(db.session.scalars(select(Event).order_by(Event.id)))


def states() -> dict[str, str]:
    """record key → state of every instance."""
    db.session.expire_all()
    return {i.record_key: i.state for i in db.session.scalars(select(Instance))}


def post(client: Any, *items: dict[str, Any]) -> Any:
    return client.post(URL, json={"value": list(items)})


# --- the handshake --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_handshake_answers_exactly_the_token(client, bc, method):
    token = "Abc+/= é%20<script>"
    response = getattr(client, method)(URL, query_string={"validationToken": token})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == token
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert events() == []


def test_handshake_refuses_absurd_tokens_and_unknown_integrations(client, bc):
    too_long = client.post(URL, query_string={"validationToken": "x" * 1025})
    assert too_long.status_code == 400 and "validationToken" in too_long.get_json()["error"][
        "message"]
    assert client.post(URL, query_string={"validationToken": "x" * 1024}).status_code == 200
    assert client.get("/bc/NOPE/notifications?validationToken=t").status_code == 404
    assert client.get(URL).status_code == 400  # a GET is only ever the handshake


def test_handshake_time_is_noted(client, bc, app):
    from wfapp.plugin_api import find_integration, state_get

    client.post(URL + "?validationToken=abc")
    assert state_get(find_integration("BC_SALES"), "bc", "handshake")["at"]


# --- notifications become events ------------------------------------------------------------


def test_each_change_type_becomes_an_event_and_fires_its_transition(client, bc):
    response = post(client, item("A-1", "created"), item("B-2", "created"))
    assert response.status_code == 202
    assert response.get_json() == {"stored": 2, "duplicates": 0, "refused": 0}
    stored = events()
    assert [(e.record_key, e.type, e.source) for e in stored] == [
        ("A-1", "created", "on_bc_event"), ("B-2", "created", "on_bc_event")]
    assert stored[0].payload == item("A-1", "created")  # the item, as received
    assert stored[0].dedupe_key.startswith("bc:") and stored[0].dedupe_key != stored[1].dedupe_key
    get_queue().drain()
    assert states() == {"A-1": "OPEN", "B-2": "OPEN"}
    post(client, item("A-1", "updated", modified="2026-01-05T10:01:00Z"))
    post(client, item("B-2", "deleted", modified="2026-01-05T10:02:00Z"))
    get_queue().drain()
    assert states() == {"A-1": "CHANGED", "B-2": "DELETED"}
    post(client, item("A-1", "deleted", modified="2026-01-05T10:03:00Z"))
    get_queue().drain()
    assert states()["A-1"] == "DELETED"


def test_record_key_is_the_id_in_the_last_parentheses_without_quotes(client, bc):
    quoted = item("x", "created")
    quoted["resource"] = "api/v2.0/companies('Cronus (UK)')/salesOrders('SO-1001')"
    post(client, quoted)
    assert events()[0].record_key == "SO-1001"


def test_a_repeated_notification_stores_nothing_twice(client, bc):
    body = [item("A-1", "created"), item("A-1", "updated", modified="2026-01-05T10:05:00Z")]
    assert post(client, *body).get_json()["stored"] == 2
    again = post(client, *body)
    assert again.status_code == 202
    assert again.get_json() == {"stored": 0, "duplicates": 2, "refused": 0}
    assert len(events()) == 2
    # The same change seen by another subscription, or changed again later, is new.
    assert post(client, item("A-1", "updated", sub="sub-2", modified="2026-01-05T10:05:00Z"),
                item("A-1", "updated", modified="2026-01-05T10:06:00Z")
                ).get_json()["stored"] == 2
    logged = db.session.scalars(select(Delivery).where(Delivery.outcome == "duplicate")).all()
    assert [d.reason for d in logged] == ["2 of 2 items were already stored"]


def test_wrong_client_state_is_dropped_and_counted(client, bc, auth):
    response = post(client, item("A-1", "created"), item("EVIL", "created", state="guess"),
                    item("EVIL2", "created", state=None), item("EVIL3", state=CLIENT_STATE + "x"))
    assert response.status_code == 202  # never a 4xx: BC would delete the subscription
    assert response.get_json() == {"stored": 1, "duplicates": 0, "refused": 3}
    assert [e.record_key for e in events()] == ["A-1"]
    auth.login("viewer")
    page = client.get("/integrations/BC_SALES").get_data(as_text=True)
    dropped = page[page.index('id="bc-dropped-client-state"'):]
    assert dropped.split(">", 1)[1].startswith("3<")
    assert "3 of 4 items dropped: clientState does not match" in page


def test_without_a_client_state_every_item_is_dropped(client, app):
    setup_in_app(bc_client_state=None)
    response = post(client, item("A-1", "created"))
    assert response.status_code == 202 and response.get_json()["refused"] == 1
    assert events() == []
    reason = db.session.scalars(select(Delivery.reason)).one()
    assert "no BC Client State" in reason


def test_a_rotated_client_state_keeps_the_old_one_until_bc_has_the_new_one(client, bc):
    from wfapp.plugin_api import find_integration, set_secret, state_put, utcnow

    info = find_integration("BC_SALES")
    set_secret(info, "bc_client_state", "the-new-state")
    # BC was last told the old value before the rotation: it may still send it.
    state_put(info, "bc", "subscription", {"client_state_sent_at": "2020-01-01T00:00:00+00:00"})
    assert post(client, item("OLD", "created")).get_json()["stored"] == 1
    assert post(client, item("NEW", "created", state="the-new-state")).get_json()["stored"] == 1
    # Once a renewal sent the new value, the old one is refused.
    state_put(info, "bc", "subscription", {"client_state_sent_at": utcnow().isoformat()})
    assert post(client, item("OLD2", "created")).get_json()["refused"] == 1


def test_unreadable_items_are_dropped_the_rest_stored(client, bc):
    long_key = item("K" * 201, "created")
    no_id = item("x", "updated")
    no_id["resource"] = "api/v2.0/companies"  # no parentheses at all
    no_id["resource"] = "api/v2.0/companyInformation"
    missing = item("M-1", "created")
    del missing["lastModifiedDateTime"]
    wrong_type = item("W-1", "created")
    wrong_type["changeType"] = 7
    response = post(client, item("A-1", "created"), long_key, no_id, missing, wrong_type,
                    "not an object", [1, 2], None)
    assert response.status_code == 202
    assert response.get_json() == {"stored": 1, "duplicates": 0, "refused": 7}
    assert [e.record_key for e in events()] == ["A-1"]


@pytest.mark.parametrize("body, status", [
    (b"not json", 400), (b"[]", 400), (b'{"value": {}}', 400), (b'{"values": []}', 400),
    (b'{"value": [{"a": "\\u0000"}]}', 400), (b'{"value": [], "value": []}', 400),
    (b"\xff\xfe", 400), (b"[" * 100_000, 400), (b'{"value": [1e999]}', 400),
])
def test_a_body_that_is_no_notification_is_a_400(client, bc, body, status):
    response = client.post(URL, data=body, content_type="application/json")
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == "bad_request"
    assert events() == []


def test_an_empty_notification_is_fine(client, bc):
    assert post(client).get_json() == {"stored": 0, "duplicates": 0, "refused": 0}


def test_a_body_over_the_limit_is_a_413(client, bc, app):
    app.config["BC_MAX_BODY_BYTES"] = 1000
    response = post(client, *[item(f"R{i}", "created") for i in range(20)])
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
    assert events() == []


def test_unknown_integration_is_a_404_and_disabled_a_503(client, bc, tokens):
    assert client.post("/bc/NOPE/notifications", json={"value": []}).status_code == 404
    client.patch("/api/v1/integrations/BC_SALES", json={"enabled": False},
                 headers=tokens["author"])
    response = post(client, item("A-1", "created"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert events() == []


def test_storing_failure_answers_503_so_bc_retries(client, bc, app):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE event RENAME TO event_away"))
    try:
        response = post(client, item("A-1", "created"))
    finally:
        db.session.rollback()
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE event_away RENAME TO event"))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "store_failed"
    assert events() == []
    # Once storing works again, BC's retry is accepted.
    assert post(client, item("A-1", "created")).status_code == 202


def test_a_thousand_items_in_one_request(client, bc):
    body = [item(f"R{i:04d}", "created") for i in range(1000)]
    response = post(client, *body)
    assert response.status_code == 202 and response.get_json()["stored"] == 1000
    assert db.session.scalar(select(func.count()).select_from(Event)) == 1000
    assert post(client, *body).get_json()["duplicates"] == 1000


# --- collection -----------------------------------------------------------------------------


def test_collection_is_one_event_keyed_by_entity_set(client, bc):
    response = post(client, item(None, "collection"))
    assert response.get_json()["stored"] == 1
    event = events()[0]
    assert (event.record_key, event.type) == ("collection:salesOrders", "collection")
    get_queue().drain()  # no BC API access configured: no expansion job, only processing
    assert states() == {"collection:salesOrders": "BULK"}


def test_collection_queues_its_expansion_when_bc_access_is_configured(client, app):
    setup_in_app(bc_tenant="t", bc_client_id="id", bc_client_secret="s")
    post(client, item(None, "collection"))
    queued = [path for path, _ in get_queue().jobs]
    assert "wfapp.builtin_plugins._bc_expand.expand_collection" in queued


# --- hostile input never answers 500 --------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
ITEM_KEYS = ["subscriptionId", "clientState", "resource", "changeType", "lastModifiedDateTime"]
FUZZ = settings(DB_PROFILE, max_examples=max(50, DB_PROFILE.max_examples))


@FUZZ
@given(body=st.one_of(JSON, st.fixed_dictionaries({"value": st.lists(st.one_of(
    JSON, st.dictionaries(st.sampled_from(ITEM_KEYS), JSON | st.just(CLIENT_STATE))),
    max_size=4)})))
def test_fuzzed_notifications_never_answer_500(client, bc, body):
    response = client.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code in (202, 400), response.get_data(as_text=True)
    assert response.is_json
