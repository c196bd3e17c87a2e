"""Transition actions over real HTTP: outbox, retries, Retry-After, outcomes that move instances."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from tests.action_flows import FAST_RETRIES, order_workflow, shop_integration
from wfapp import create_app
from wfapp.extensions import db
from wfapp.models import ActionDelivery, Event, HistoryEntry, Instance, utcnow
from wfapp.services import outbox
from wfapp.services.definitions import export_document, import_document
from wfapp.services.errors import ValidationFailed
from wfapp.services.events import NewEvent, ingest
from wfapp.services.firing import Move, compiled_workflow, load_instance, move
from wfapp.services.instances import fire_manual, reset_instance
from wfapp.services.integrations import get_integration
from wfapp.services.processing import process_pending
from wfapp.signing import generate_secret, verify_standard

APP_CONFIG = FAST_RETRIES


def _send(key: str, data: dict[str, Any] | None = None) -> None:
    ingest(get_integration("SHOP"), [NewEvent("on_webhook", "go", key, None, {},
                                              record=data or {"total": 7})], kick=False)
    process_pending(time_budget=30)


def _instance(key: str) -> Instance:
    db.session.expire_all()
    return db.session.scalar(select(Instance).where(Instance.record_key == key))


def _deliveries(key: str) -> list[ActionDelivery]:
    db.session.expire_all()
    return list(db.session.scalars(select(ActionDelivery).join(
        Instance, Instance.id == ActionDelivery.instance_id).where(Instance.record_key == key)
        .order_by(ActionDelivery.id)))


def run_until(check: Callable[[], bool], timeout: float = 15) -> None:
    """Deliver due actions and process events, as the workers do, until `check` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outbox.deliver_due()
        process_pending(time_budget=10)
        if check():
            return
        time.sleep(0.05)
    db.session.expire_all()
    rows = [(d.id, d.status, d.attempts, d.last_error) for d in
            db.session.scalars(select(ActionDelivery))]
    events = [(e.source, e.type, e.status, e.result) for e in db.session.scalars(select(Event))]
    raise AssertionError(f"condition not reached in time; deliveries {rows}, events {events}")


def test_action_fires_once_and_its_success_moves_the_instance(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    receiver.bodies["/submit/A1"] = {"id": "C-9"}
    _send("A1")
    inst = _instance("A1")
    # set_variable ran in the transition's transaction: visible before any delivery.
    assert inst.state == "SUBMITTED" and inst.vars == {"origin": "wfapp", "key_copy": "A1"}
    [delivery] = _deliveries("A1")
    assert (delivery.status, delivery.action_id, delivery.attempts) == ("pending", "submit", 0)
    run_until(lambda: _instance("A1").state == "CONFIRMED")
    [request] = receiver.requests("/submit/A1")
    assert request.method == "POST"
    assert json.loads(request.body) == {"order": "A1", "origin": "wfapp", "total": 7}
    assert request.headers["X-Api-Key"] == "k-123"
    assert request.headers["Idempotency-Key"] == delivery.idempotency_key
    [done] = _deliveries("A1")
    assert (done.status, done.attempts, done.last_status_code) == ("succeeded", 1, 200)
    assert done.request["headers"]["X-Api-Key"] == "***"  # secrets never shown
    assert _instance("A1").vars["confirmation"] == "C-9"  # captured from the response
    outcome = db.session.scalars(select(Event).where(Event.source == "on_action_result")).one()
    assert outcome.type == "submit.succeeded" and outcome.payload["status_code"] == 200
    # Delivering again finds nothing: the action fired once for the one transition.
    assert outbox.deliver_due() == 0
    assert len(receiver.requests()) == 1


def test_retries_on_500_and_a_dropped_connection_with_one_idempotency_key(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    receiver.script("/submit/B1", [500, "drop", 200])
    _send("B1")
    run_until(lambda: _instance("B1").state == "CONFIRMED")
    requests = receiver.requests("/submit/B1")
    assert len(requests) == 3
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    [delivery] = _deliveries("B1")
    assert (delivery.status, delivery.attempts) == ("succeeded", 3)
    moves = db.session.scalars(select(HistoryEntry.transition).where(
        HistoryEntry.instance_id == delivery.instance_id,
        HistoryEntry.transition.is_not(None))).all()
    assert moves == ["SUBMIT", "CONFIRM"]  # one outcome event, however many attempts


def test_retry_after_is_honoured(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    receiver.script("/submit/C1", [(503, {"Retry-After": "1"}), 200])
    _send("C1")
    assert outbox.deliver_due() == 1
    [delivery] = _deliveries("C1")
    assert delivery.status == "pending" and delivery.last_status_code == 503
    wait = (delivery.next_attempt_at - utcnow()).total_seconds()
    assert 0.5 < wait <= 1.0  # the receiver's 1 s, not the 0.05 s backoff
    assert outbox.deliver_due() == 0  # not due yet
    run_until(lambda: _instance("C1").state == "CONFIRMED")
    first, second = receiver.requests("/submit/C1")
    assert second.at - first.at >= 0.9


def test_last_failure_is_an_outcome_that_moves_the_instance(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    receiver.script("/submit/D1", [500])
    _send("D1")
    run_until(lambda: _instance("D1").state == "FAILED")
    assert len(receiver.requests("/submit/D1")) == 3  # max_attempts
    [delivery] = _deliveries("D1")
    assert delivery.status == "failed" and "HTTP 500" in delivery.last_error
    outcome = db.session.scalars(select(Event).where(Event.source == "on_action_result")).one()
    assert outcome.payload["outcome"] == "failed" and outcome.payload["attempts"] == 3


def test_a_4xx_fails_at_once(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    receiver.script("/submit/E1", [422])
    _send("E1")
    run_until(lambda: _instance("E1").state == "FAILED")
    assert len(receiver.requests("/submit/E1")) == 1


def test_a_delivery_whose_worker_died_is_delivered_again(app, receiver):
    app.config["ACTION_LEASE_SECONDS"] = 0.3
    order_workflow(receiver.url)
    shop_integration()
    _send("F1")
    # A worker claims the delivery and dies before recording anything.
    assert outbox.claim(10, "dead-worker") != []
    assert outbox.deliver_due() == 0  # leased: nobody else takes it
    time.sleep(0.4)
    run_until(lambda: _instance("F1").state == "CONFIRMED")
    [delivery] = _deliveries("F1")
    assert delivery.status == "succeeded" and delivery.attempts == 2
    # The dead worker's late result (if it ever came) is dropped: the row is not its any more.
    assert outbox.finish(delivery.id, "dead-worker", 1, outbox.ActionResult(False)) is None


def test_retry_now_and_give_up(app, receiver, users):
    order_workflow(receiver.url, max_attempts=1)
    shop_integration()
    receiver.script("/submit/G1", [500, 200])
    _send("G1")
    run_until(lambda: _instance("G1").state == "FAILED")
    [delivery] = _deliveries("G1")
    fire_manual(delivery.instance_id, "REOPEN", "try again", "admin")
    outbox.retry_now(delivery.id, "admin")
    run_until(lambda: _instance("G1").state == "CONFIRMED")
    assert len(receiver.requests("/submit/G1")) == 2
    # Give up: only on a pending delivery; the outcome is `failed`.
    receiver.script("/submit/G2", [500])
    order_workflow(receiver.url, max_attempts=5)
    _send("G2")
    outbox.deliver_due()
    [pending] = _deliveries("G2")
    assert pending.status == "pending"
    outbox.give_up(pending.id, "admin")
    run_until(lambda: _instance("G2").state == "FAILED")
    assert _deliveries("G2")[0].status == "gave_up"


def test_send_webhook_is_signed_per_standard_webhooks(app, receiver):
    secret = generate_secret()
    order_workflow(receiver.url, extra_actions=[
        {"id": "tell", "type": "send_webhook",
         "config": {"urls": [receiver.url + "/hook1", receiver.url + "/hook2"]}}])
    integration = shop_integration()
    from wfapp.services import secrets

    secrets.put(integration.id, secrets.SETTING, "outbound_webhook_secret", secret)
    db.session.commit()
    _send("H1")
    run_until(lambda: len(receiver.requests("/hook1")) == 1 and
              len(receiver.requests("/hook2")) == 1)
    for path in ("/hook1", "/hook2"):
        [request] = receiver.requests(path)
        headers = {k.lower(): v for k, v in request.headers.items()}
        verify_standard([secret], headers["webhook-id"], headers["webhook-timestamp"],
                        headers["webhook-signature"], request.body)
        message = json.loads(request.body)
        assert message["data"]["transition"] == "SUBMIT"
        assert (message["data"]["from"], message["data"]["to"]) == ("NEW", "SUBMITTED")
        assert message["data"]["vars"]["origin"] == "wfapp"


def test_send_email_through_a_local_smtp_server(app, receiver, smtp):
    got = smtp
    order_workflow(receiver.url, extra_actions=[
        {"type": "send_email", "config": {"to": "ops@example.com",
                                          "subject": "Order {record_key} submitted",
                                          "body": "Origin {vars.origin}"}}])
    shop_integration()
    _send("M1")
    run_until(lambda: len(got) == 1)
    text = got[0].content.decode()
    assert got[0].rcpt_tos == ["ops@example.com"]
    assert "Subject: Order M1 submitted" in text and "Origin wfapp" in text


def test_actions_survive_export_import_and_bad_ones_name_their_field(app, receiver):
    order_workflow(receiver.url)
    document = export_document("ORDERS")
    actions = document["workflow"]["transitions"][0]["actions"]
    assert [a["type"] for a in actions] == ["set_variable", "http_request"]
    assert actions[1]["id"] == "submit"
    import_document(document, replace=True)
    assert export_document("ORDERS") == document
    # A transition without actions exports without the key, as before actions existed.
    assert "actions" not in document["workflow"]["transitions"][1]
    broken = json.loads(json.dumps(document))
    broken["workflow"]["transitions"][0]["actions"][1]["config"]["url"] = "ftp://x/{nope}"
    broken["workflow"]["transitions"][0]["actions"].append({"type": "fax", "config": {}})
    with pytest.raises(ValidationFailed) as caught:
        import_document(broken, replace=True)
    places = {e.path for e in caught.value.errors}
    assert "workflow.transitions[0].actions[1].config.url" in places
    assert "workflow.transitions[0].actions[2].type" in places
    assert export_document("ORDERS") == document  # nothing written


def test_a_slow_receiver_does_not_hold_up_event_processing(app, receiver):
    order_workflow(receiver.url, timeout_seconds=3)
    shop_integration()
    receiver.script("/submit/S1", [("sleep", 2)])
    _send("S1")
    executor = outbox.executor()
    executor.wake()  # the delivery runs on the executor's thread
    deadline = time.monotonic() + 10
    while not receiver.requests("/submit/S1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert receiver.requests("/submit/S1")
    started = time.monotonic()
    _send("S2")  # processed while the slow call is still waiting for its answer
    assert time.monotonic() - started < 1.5
    assert _instance("S2").state == "SUBMITTED"
    assert _deliveries("S1")[0].status == "running"  # still waiting for its answer
    deadline = time.monotonic() + 10
    while _deliveries("S1")[0].status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _deliveries("S1")[0].status == "succeeded"


def test_a_lost_compare_and_set_writes_no_outbox_row(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    _send("R1")
    inst = _instance("R1")
    reset_instance(inst.id, "NEW", "again", "admin")
    conn = db.session.connection()
    stale = load_instance(conn, inst.id)
    stale.version -= 1  # what a worker read before the reset
    workflow = compiled_workflow(inst.workflow_id)
    assert not move(conn, workflow, stale, Move("SUBMITTED", "SUBMIT", "on_webhook", "t"),
                    utcnow())
    db.session.commit()
    assert len(_deliveries("R1")) == 1  # only the first SUBMIT's


def test_create_app_registers_the_actions_schedule(app_config):
    app = create_app(app_config)
    names = [name for name, *_ in app.extensions["wfapp"]["schedules"]]
    assert "actions" in names


def test_worker_killed_mid_delivery_loses_nothing_and_moves_once(rq_app, receiver):
    """A real `flask worker` is SIGKILLed while its call waits; another worker delivers it."""
    import os
    import signal

    from tests.services import start_worker

    order_workflow(receiver.url)
    shop_integration()
    receiver.script("/submit/K1", [("sleep", 5), 200])
    _send("K1")
    env = {"WFAPP_ACTION_LEASE_SECONDS": "2", "WFAPP_ACTION_INTERVAL": "0.3",
           "WFAPP_SWEEP_INTERVAL": "1", "WFAPP_ACTION_BACKOFF_BASE": "0.05"}
    first = start_worker(rq_app.config, burst=False, **env)
    try:
        deadline = time.monotonic() + 60
        while not receiver.requests("/submit/K1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.requests("/submit/K1"), "the first worker never made the call"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    [leased] = _deliveries("K1")
    assert (leased.status, leased.attempts) == ("running", 1)  # killed mid-delivery
    second = start_worker(rq_app.config, burst=False, **env)
    try:
        deadline = time.monotonic() + 60
        while _instance("K1").state != "CONFIRMED" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert _instance("K1").state == "CONFIRMED"
    calls = receiver.requests("/submit/K1")
    assert len(calls) == 2 and len({c.headers["Idempotency-Key"] for c in calls}) == 1
    [done] = _deliveries("K1")
    assert (done.status, done.attempts) == ("succeeded", 2)
    moves = db.session.scalars(select(HistoryEntry.transition).where(
        HistoryEntry.instance_id == done.instance_id,
        HistoryEntry.transition.is_not(None))).all()
    assert moves == ["SUBMIT", "CONFIRM"]
    outcomes = db.session.scalars(select(Event).where(Event.source == "on_action_result")).all()
    assert [e.type for e in outcomes] == ["submit.succeeded"]
