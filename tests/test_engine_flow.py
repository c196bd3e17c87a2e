"""Events through the embedded queue: instances are created, move, time out, are reset."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import Event, HistoryEntry, Instance, utcnow
from wfapp.queue import get_queue
from wfapp.services.errors import Conflict, ValidationFailed
from wfapp.services.events import NewEvent, ingest, replay
from wfapp.services.instances import (
    delete_instance,
    fire_manual,
    get_instance,
    manual_actions,
    reset_instance,
    why_not,
)
from wfapp.services.integrations import get_integration, update_integration
from wfapp.services.runs import start_run
from wfapp.services.timeouts import fire_due_timeouts
from wfapp.services.workflows import set_enabled


def _instance(key: str) -> Instance:
    return db.session.scalar(select(Instance).where(Instance.record_key == key))


def _import(records, direction="import"):
    run = start_run(get_integration("SHOP_ORDERS"), direction, records, "tester")
    get_queue().drain()
    return run


def test_import_creates_and_moves_instances(app, demo):
    _import([{"key": "A1", "data": {"number": "A1", "total": 5}},
             {"key": "A2", "data": {"number": "A2", "total": 0}},
             {"key": "A3", "data": {}, "status": "error"}])
    a1, a2 = _instance("A1"), _instance("A2")
    assert a1.state == "PENDING" and a1.vars == {"order_no": "A1"}
    assert a1.last_transition == "SUBMIT" and a1.last_trigger == "on_import"
    assert a2.state == "NEW"  # condition record.total gt 0 was false
    assert _instance("A3") is None  # a failed record never creates an instance
    assert a1.timeout_due_at is not None
    hours = (a1.timeout_due_at - a1.entered_state_at).total_seconds() / 3600
    assert hours == pytest.approx(48)
    history = db.session.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == a1.id)
                                 .order_by(HistoryEntry.id)).all()
    assert [(h.from_state, h.to_state, h.transition) for h in history] == [
        (None, "NEW", None), ("NEW", "PENDING", "SUBMIT")]
    assert all(e.status == "processed" for e in db.session.scalars(select(Event)))


def test_failed_record_is_evaluated_against_existing_instance(app, demo):
    _import([{"key": "B1", "data": {"total": 0}}])
    _import([{"key": "B1", "data": {}, "status": "error"}])
    assert _instance("B1").state == "FAILED"  # REJECT fires for the error record


def test_webhook_event_confirms_and_captures(app, demo):
    _import([{"key": "C1", "data": {"number": "C1", "total": 9}}])
    integration = get_integration("SHOP_ORDERS")
    result = ingest(integration, [NewEvent("on_webhook", "order.confirmed", "C1", None,
                                           {"data": {"status": "shipped", "tracking": "T1"}},
                                           dedupe_key="hook-1")])
    again = ingest(integration, [NewEvent("on_webhook", "order.confirmed", "C1", None, {},
                                          dedupe_key="hook-1")])
    assert (result.stored, again.duplicates) == (1, 1)
    get_queue().drain()
    c1 = _instance("C1")
    assert c1.state == "CONFIRMED" and not c1.active and c1.completed_at is not None
    assert c1.vars == {"order_no": "C1", "tracking_no": "T1"}
    assert c1.timeout_due_at is None


def test_final_state_fires_nothing(app, demo):
    _import([{"key": "D1", "data": {"total": 1}}])
    ingest(get_integration("SHOP_ORDERS"),
           [NewEvent("on_export", "export.record", "D1", None, {"status": "error"},
                     record={"x": 1})])
    get_queue().drain()
    assert _instance("D1").state == "FAILED"
    ingest(get_integration("SHOP_ORDERS"),
           [NewEvent("on_export", "export.record", "D1", None, {"status": "error"},
                     record={"x": 2})])
    get_queue().drain()
    event = db.session.scalar(select(Event).order_by(Event.id.desc()))
    assert event.status == "processed" and "final state" in event.result


def test_disabled_workflow_skips_events_and_keeps_timers(app, demo):
    _import([{"key": "E1", "data": {"total": 0}}])
    set_enabled("ORDER_SYNC", enabled=False)
    _import([{"key": "E2", "data": {"total": 3}}])
    assert _instance("E2") is None
    skipped = db.session.scalar(select(Event).where(Event.record_key == "E2"))
    assert skipped.status == "skipped" and "disabled" in skipped.result
    later = utcnow() + timedelta(hours=25)
    assert fire_due_timeouts(now=later) == 0  # due, but waits while disabled
    set_enabled("ORDER_SYNC", enabled=True)
    assert fire_due_timeouts(now=later) == 1
    assert _instance("E1").state == "EXPIRED"
    replay(skipped.id)
    get_queue().drain()
    assert _instance("E2").state == "PENDING"


def test_disabled_timeout_transition_leaves_instance(app, demo):
    from wfapp.services.workflows import save_transition

    # Disabled before the instance starts: it follows the version with EXPIRE disabled.
    save_transition("ORDER_SYNC", "EXPIRE", {"enabled": False})
    _import([{"key": "F1", "data": {"total": 0}}])
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=25)) == 0
    f1 = _instance("F1")
    assert f1.state == "NEW" and f1.timeout_due_at is None
    last = db.session.scalar(select(HistoryEntry).where(HistoryEntry.instance_id == f1.id)
                             .order_by(HistoryEntry.id.desc()))
    assert last.notes == "timeout transition disabled" and last.trigger_type == "timeout"


def test_sweep_twice_fires_once(app, demo):
    _import([{"key": "G1", "data": {"total": 0}}])
    later = utcnow() + timedelta(hours=25)
    assert fire_due_timeouts(now=later) + fire_due_timeouts(now=later) == 1
    count = db.session.scalar(select(func.count()).select_from(HistoryEntry)
                              .where(HistoryEntry.trigger_type == "timeout"))
    assert count == 1


def test_manual_fire_reset_delete(app, demo):
    _import([{"key": "H1", "data": {"total": 0}}])
    h1 = _instance("H1")
    assert [a.code for a in manual_actions(h1)] == ["EXPIRE"]
    with pytest.raises(Conflict, match="leaves PENDING"):
        fire_manual(h1.id, "GIVE_UP", "", "alice")
    with pytest.raises(Conflict, match="not a Manual"):
        fire_manual(h1.id, "SUBMIT", "", "alice")
    fire_manual(h1.id, "EXPIRE", "customer cancelled", "alice")
    h1 = get_instance(h1.id)
    assert h1.state == "EXPIRED" and h1.last_trigger == "manual"
    with pytest.raises(ValidationFailed):
        reset_instance(h1.id, "NEW", "", "alice")
    with pytest.raises(ValidationFailed):
        reset_instance(h1.id, "NOPE", "why", "alice")
    reset_instance(h1.id, "NEW", "retry after fix", "alice")
    h1 = get_instance(h1.id)
    assert h1.state == "NEW" and h1.active and h1.timeout_due_at is not None
    delete_instance(h1.id, "alice")
    assert _instance("H1") is None
    _import([{"key": "H1", "data": {"total": 2}}])  # the next event starts a new instance
    assert _instance("H1").state == "PENDING"


def test_why_not_explains(app, demo):
    _import([{"key": "J1", "data": {"total": 0}}])
    about, verdicts = why_not(_instance("J1"))
    reasons = {v.code: v.reason for v in verdicts}
    assert "latest event" in about
    assert reasons["SUBMIT"] == ("condition record.total gt 0 was false because "
                                 "record.total is 0")
    assert "Manual" in reasons["EXPIRE"]
    assert reasons["REJECT"] == ("the record's status is 'success'; this transition fires "
                                 "for 'error' records")
    about, verdicts = why_not(_instance("J1"), {"type": "order.paid"}, "on_webhook",
                              "order.paid")
    assert "pasted payload" in about
    assert all(not v.fires for v in verdicts)


def test_per_run_mode(app, demo):
    update_integration("SHOP_ORDERS", {"instance_mode": "per_run"})
    run = _import([{"key": "K1", "data": {}}, {"key": "K2", "data": {}, "status": "error"}])
    instance = db.session.scalar(select(Instance).where(Instance.run_id == run.id))
    assert instance is not None and instance.record_key is None
    event = db.session.scalar(select(Event).where(Event.run_id == run.id))
    assert event.payload["total"] == 2 and event.payload["failed"] == 1
    assert event.instance_id == instance.id


def test_an_event_that_breaks_processing_is_failed_not_blocking(app, demo, monkeypatch):
    from wfapp.services import processing

    real = processing._process_one

    def explode_on_x2(conn, event, *args):
        if event.record_key == "X2":
            raise RuntimeError("boom")
        return real(conn, event, *args)

    monkeypatch.setattr(processing, "_process_one", explode_on_x2)
    integration = get_integration("SHOP_ORDERS")
    # X2 breaks processing; it is marked failed and the events around it still go through.
    ingest(integration, [NewEvent("on_import", "import.record", key, None,
                                  {"status": "success"}, {"total": 1})
                         for key in ("X1", "X2", "X3")])
    get_queue().drain()
    statuses = dict(db.session.execute(select(Event.record_key, Event.status)).all())
    assert statuses == {"X1": "processed", "X2": "failed", "X3": "processed"}
    failed = db.session.scalar(select(Event).where(Event.record_key == "X2"))
    assert failed.result == "error: boom"
    monkeypatch.setattr(processing, "_process_one", real)
    replay(failed.id)
    get_queue().drain()
    assert _instance("X2").state == "PENDING"


def test_per_run_started_while_disabled_is_tracked_on_replay(app, demo):
    update_integration("SHOP_ORDERS", {"instance_mode": "per_run"})
    set_enabled("ORDER_SYNC", enabled=False)
    run = _import([{"key": "L1", "data": {}}])
    event = db.session.scalar(select(Event).where(Event.run_id == run.id))
    assert event.status == "skipped"
    assert db.session.scalar(select(Instance).where(Instance.run_id == run.id)) is None
    set_enabled("ORDER_SYNC", enabled=True)
    replay(event.id)
    get_queue().drain()
    instance = db.session.scalar(select(Instance).where(Instance.run_id == run.id))
    assert instance is not None and instance.record_key is None
