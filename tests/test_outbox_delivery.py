"""The outbox's delivery side over real HTTP: batched claims and results, the executor's request
threads, per-action and per-integration concurrency limits, late results, giving claims back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from tests.action_flows import order_workflow, shop_integration
from tests.action_server import ActionServer
from wfapp.extensions import db
from wfapp.models import ActionDelivery, Event, Instance, utcnow
from wfapp.services import outbox
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.errors import ValidationFailed
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import get_integration
from wfapp.services.processing import process_pending


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    """The app with fast retries and room for more calls at once than the limits tested."""
    from tests.conftest import _app_on_clean_database

    app_config.update(ACTION_BACKOFF_BASE=0.05, ACTION_BACKOFF_CAP=0.2, ACTION_THREADS=8,
                      ACTION_CONCURRENCY_PER_INTEGRATION=8)
    yield from _app_on_clean_database(app_config)


@pytest.fixture
def receiver() -> Iterator[ActionServer]:
    """A real HTTP receiver on 127.0.0.1."""
    with ActionServer() as server:
        yield server


def _send(*keys: str) -> None:
    ingest(get_integration("SHOP"), [NewEvent("on_webhook", "go", key, None, {},
                                              record={"total": 7}) for key in keys], kick=False)
    process_pending(time_budget=30)


def _deliveries() -> list[ActionDelivery]:
    db.session.expire_all()
    return list(db.session.scalars(select(ActionDelivery).order_by(ActionDelivery.id)))


def _wait(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached in time; deliveries "
                         f"{[(d.id, d.status, d.attempts) for d in _deliveries()]}")


def _drain_with_executor(count: int) -> None:
    """Wake this process's executor and wait until `count` deliveries succeeded."""
    executor = outbox.executor()
    executor.wake()
    try:
        _wait(lambda: sum(d.status == "succeeded" for d in _deliveries()) == count)
        _wait(executor.settled)
    finally:
        executor.stop(10)


def _slow_orders(receiver: ActionServer, prefix: str, count: int, **http: Any) -> None:
    """`count` orders submitted, each call answered after half a second, all delivered."""
    order_workflow(receiver.url, **http)
    shop_integration()
    keys = [f"{prefix}{i}" for i in range(count)]
    for key in keys:
        receiver.script(f"/submit/{key}", [("sleep", 0.5)])
    _send(*keys)
    _drain_with_executor(count)


def test_per_action_max_concurrency_holds_over_real_http(app, receiver):
    _slow_orders(receiver, "P", 8, max_concurrency=2)
    assert len(receiver.requests()) == 8
    # Eight threads and an integration limit of eight, yet never more than the action's two
    # calls at once — and two did run together (the limit is not one-at-a-time).
    assert receiver.peak == 2
    db.session.expire_all()
    assert {i.state for i in db.session.scalars(select(Instance))} == {"SUBMITTED"}
    process_pending(time_budget=30)  # the outcome events, stored with the results
    db.session.expire_all()
    assert {i.state for i in db.session.scalars(select(Instance))} == {"CONFIRMED"}


def test_the_integration_limit_holds_without_an_action_limit(app, receiver):
    app.config["ACTION_CONCURRENCY_PER_INTEGRATION"] = 3
    _slow_orders(receiver, "Q", 6)
    assert receiver.peak == 3


def test_limits_count_calls_leased_by_other_workers(app, receiver):
    """Two claimers (two worker processes) share an action's limit: leased rows count."""
    order_workflow(receiver.url, max_concurrency=2)
    shop_integration()
    _send("L1", "L2", "L3")
    first = outbox.claim(10, "worker-a")
    assert len(first) == 2
    assert outbox.claim(10, "worker-b") == []  # both slots are leased by worker-a
    outbox.record([(first[0], outbox.attempt(first[0]))])
    [second] = outbox.claim(10, "worker-b")  # one slot freed by the recorded result
    assert second.id not in {item.id for item in first}
    outbox.record([(first[1], outbox.attempt(first[1])), (second, outbox.attempt(second))])
    assert [d.status for d in _deliveries()] == ["succeeded"] * 3


def test_a_batch_is_recorded_together_and_a_late_result_is_dropped(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    _send("B1", "B2", "B3")
    items = outbox.claim(10, "worker-a")
    assert len(items) == 3
    # The first one's lease ran out (its worker seemed dead) and another worker took it.
    db.session.execute(update(ActionDelivery).where(ActionDelivery.id == items[0].id)
                       .values(lease_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    [taken] = outbox.claim(10, "worker-b")
    assert (taken.id, taken.attempt) == (items[0].id, 2)
    assert taken.context.idempotency_key == items[0].context.idempotency_key
    statuses = outbox.record([(item, outbox.attempt(item)) for item in items])
    assert statuses == {items[0].id: None, items[1].id: "succeeded",
                        items[2].id: "succeeded"}
    outcomes = db.session.scalars(select(Event).where(Event.source == "on_action_result")
                                  .order_by(Event.id)).all()
    assert [e.payload["delivery_id"] for e in outcomes] == [items[1].id, items[2].id]
    assert outbox.record([(taken, outbox.attempt(taken))]) == {taken.id: "succeeded"}
    assert len(receiver.requests()) == 4  # at least once: the taken row was called twice
    assert len({r.headers["Idempotency-Key"] for r in receiver.requests("/submit/B1")}) == 1


def test_the_executor_drains_many_deliveries_each_outcome_once(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    keys = [f"M{i}" for i in range(40)]
    _send(*keys)
    _drain_with_executor(40)
    assert sorted(r.path for r in receiver.requests()) == sorted(f"/submit/{k}" for k in keys)
    outcomes = db.session.scalars(select(Event).where(Event.source == "on_action_result")).all()
    assert len(outcomes) == 40 and {e.type for e in outcomes} == {"submit.succeeded"}
    process_pending(time_budget=30)
    db.session.expire_all()
    assert {i.state for i in db.session.scalars(select(Instance))} == {"CONFIRMED"}


def test_claims_not_started_are_given_back_uncounted(app, receiver):
    order_workflow(receiver.url)
    shop_integration()
    _send("G1", "G2")
    items = outbox.claim(10, "stopping-worker")
    outbox.release(items)
    assert [(d.status, d.attempts, d.lease_until) for d in _deliveries()] == \
        [("pending", 0, None)] * 2
    assert outbox.deliver_due() == 2
    assert [(d.status, d.attempts) for d in _deliveries()] == [("succeeded", 1)] * 2


@pytest.mark.parametrize("value, message", [
    (0, "must be at least 1"), (101, "must be at most 100"), ("two", "must be a number"),
    (1.5, "must be a whole number")])
def test_a_bad_max_concurrency_names_its_field(app, receiver, value, message):
    document = {"format": FORMAT, "workflow": order_workflow(receiver.url)}
    before = json.loads(json.dumps(document))
    document["workflow"]["transitions"][0]["actions"][1]["config"]["max_concurrency"] = value
    with pytest.raises(ValidationFailed) as caught:
        import_document(document, replace=True)
    [error] = [e for e in caught.value.errors
               if e.path == "workflow.transitions[0].actions[1].config.max_concurrency"]
    assert message in error.message
    from wfapp.services.definitions import export_document

    exported = export_document("ORDERS")["workflow"]["transitions"][0]["actions"][1]["config"]
    assert "max_concurrency" not in exported  # nothing written
    assert before["workflow"]["transitions"][0]["actions"][1]["config"] == exported


def test_deliveries_yield_while_the_inbox_holds_a_backlog(app, receiver):
    """With ACTION_YIELD_BACKLOG events of other sources waiting, a process runs at most
    ACTION_YIELD_CONCURRENCY deliveries at once; once they are applied, all its threads again."""
    app.config.update(ACTION_YIELD_BACKLOG=5, ACTION_YIELD_CONCURRENCY=1)
    order_workflow(receiver.url)
    shop_integration()
    keys = [f"Y{i}" for i in range(8)]
    for key in keys:
        receiver.script(f"/submit/{key}", [("sleep", 0.3)])
    _send(*keys)  # eight deliveries due
    # Six events someone waits for, stored and not yet applied: the inbox has a backlog.
    ingest(get_integration("SHOP"), [NewEvent("on_webhook", "noise", f"N{i}", None, {})
                                     for i in range(6)], kick=False)
    executor = outbox.executor()
    executor.wake()
    try:
        _wait(lambda: sum(d.status == "succeeded" for d in _deliveries()) >= 3)
        assert receiver.peak == 1  # one at a time while the backlog waits
        assert executor.stats["yields"] == 1
        process_pending(time_budget=30)  # the backlog applied (and the outcomes so far)
        _wait(lambda: sum(d.status == "succeeded" for d in _deliveries()) == 8)
        _wait(executor.settled)
    finally:
        executor.stop(10)
    assert receiver.peak > 1  # back to full concurrency for the rest
    assert not executor.yielding.active and executor.stats["yield_s"] > 0
    assert len(receiver.requests()) == 8  # each delivered once


def test_deliveries_never_yield_with_the_setting_off(app, receiver):
    app.config.update(ACTION_YIELD_BACKLOG=0)
    order_workflow(receiver.url)
    shop_integration()
    keys = [f"Z{i}" for i in range(4)]
    for key in keys:
        receiver.script(f"/submit/{key}", [("sleep", 0.3)])
    _send(*keys)
    ingest(get_integration("SHOP"), [NewEvent("on_webhook", "noise", f"M{i}", None, {})
                                     for i in range(6)], kick=False)
    _drain_with_executor(4)
    assert receiver.peak == 4
