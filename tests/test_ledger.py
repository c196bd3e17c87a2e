"""One path through the core: manual fires, timeouts and resets in the events ledger, in order."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import ActionDelivery, Event, HistoryEntry, Instance, utcnow
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.errors import Conflict
from wfapp.services.events import NewEvent, ingest
from wfapp.services.instances import fire_manual, reset_instance
from wfapp.services.integrations import (
    create_integration,
    get_integration,
    update_integration,
)
from wfapp.services.processing import process_pending
from wfapp.services.timeouts import fire_due_timeouts


def ledger_workflow(code: str = "LEDGER") -> dict[str, Any]:
    """NEW --GO (webhook)--> WAIT (1 h, EXPIRE) --OK (manual)--> DONE; WAIT --EXPIRE--> LATE."""
    wf = {
        "code": code, "description": "ledger test", "initial_state": "NEW",
        "states": [{"code": "NEW", "is_initial": True},
                   {"code": "WAIT", "timeout_hours": 1, "on_timeout_transition": "EXPIRE"},
                   {"code": "LATE"}, {"code": "DONE", "is_final": True}],
        "transitions": [
            {"code": "GO", "from_state": "NEW", "to_state": "WAIT", "trigger_type": "on_webhook",
             "trigger_config": {"event_filter": "go"}},
            {"code": "BACK", "from_state": "WAIT", "to_state": "NEW",
             "trigger_type": "on_webhook", "trigger_config": {"event_filter": "back"}},
            {"code": "OK", "from_state": "WAIT", "to_state": "DONE", "trigger_type": "manual"},
            {"code": "EXPIRE", "from_state": "WAIT", "to_state": "LATE",
             "trigger_type": "manual"},
        ],
    }
    import_document({"format": FORMAT, "workflow": wf}, replace=True)
    create_integration({"code": "LEDGER_IN", "workflow_code": code})
    return wf


def _send(key: str, kind: str, process: bool = True) -> None:
    ingest(get_integration("LEDGER_IN"), [NewEvent("on_webhook", kind, key, None, {})],
           kick=False)
    if process:
        process_pending(time_budget=30)


def _instance(key: str) -> Instance:
    db.session.expire_all()
    return db.session.scalar(select(Instance).where(Instance.record_key == key))


def _ledger(instance_id: int) -> list[Event]:
    return list(db.session.scalars(select(Event).where(Event.instance_id == instance_id)
                                   .order_by(Event.id)))


def test_manual_fire_and_reset_are_in_the_ledger(app):
    ledger_workflow()
    _send("K1", "go")
    inst = _instance("K1")
    fire_manual(inst.id, "OK", "checked by hand", "alice")
    reset_instance(inst.id, "WAIT", "reopened", "bob")
    events = _ledger(inst.id)
    assert [(e.source, e.type, e.status) for e in events] == [
        ("on_webhook", "go", "processed"), ("manual", "OK", "processed"),
        ("reset", "WAIT", "processed")]
    assert events[1].payload == {"transition": "OK", "comment": "checked by hand",
                                 "actor": "alice"}
    assert events[1].result == "fired OK: WAIT → DONE"
    assert events[2].result == "reset: DONE → WAIT"
    history = db.session.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == inst.id)
                                 .order_by(HistoryEntry.id)).all()
    # Each history row points at the ledger event that caused it.
    assert [h.event_id for h in history[-2:]] == [events[1].id, events[2].id]
    assert [h.trigger_type for h in history[-2:]] == ["manual", "reset"]


def test_manual_fire_waits_for_events_received_first(app):
    ledger_workflow()
    _send("K2", "go")
    _send("K2", "back", process=False)  # still pending: it came first and must apply first
    inst = _instance("K2")
    with pytest.raises(Conflict, match="still waiting"):
        fire_manual(inst.id, "OK", "", "alice")
    with pytest.raises(Conflict, match="still waiting"):
        reset_instance(inst.id, "DONE", "close", "alice")
    assert _instance("K2").state == "WAIT"
    assert [e.source for e in _ledger(inst.id)] == ["on_webhook"]
    process_pending(time_budget=30)
    assert _instance("K2").state == "NEW"


def test_timeout_is_in_the_ledger(app):
    ledger_workflow()
    _send("K3", "go")
    inst = _instance("K3")
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=2)) == 1
    assert _instance("K3").state == "LATE"
    last = _ledger(inst.id)[-1]
    assert (last.source, last.type, last.status) == ("timeout", "EXPIRE", "processed")
    assert last.result == "fired EXPIRE: WAIT → LATE" and last.payload["state"] == "WAIT"
    entry = db.session.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == inst.id)
                               .order_by(HistoryEntry.id.desc())).first()
    assert entry.trigger_type == "timeout" and entry.event_id == last.id
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=4)) == 0  # LATE has no timer


def test_timeout_waits_for_events_received_before_it_fell_due(app):
    ledger_workflow()
    _send("K4", "go")
    _send("K4", "back", process=False)
    inst = _instance("K4")
    later = utcnow() + timedelta(hours=2)
    assert fire_due_timeouts(now=later) == 0  # the waiting event goes first
    assert _instance("K4").state == "WAIT"
    process_pending(time_budget=30)
    assert _instance("K4").state == "NEW"  # BACK applied; NEW has no timer
    assert fire_due_timeouts(now=later) == 0
    assert [e.source for e in _ledger(inst.id)] == ["on_webhook", "on_webhook"]


def test_timeout_applies_before_events_received_after_it_fell_due(app):
    ledger_workflow()
    _send("K5", "go")
    inst = _instance("K5")
    due = _instance("K5").timeout_due_at
    db.session.execute(Instance.__table__.update().where(Instance.id == inst.id)
                       .values(timeout_due_at=utcnow() - timedelta(seconds=5)))
    db.session.commit()
    _send("K5", "back", process=False)  # received after the timer fell due
    assert due is not None
    assert fire_due_timeouts() == 1
    assert _instance("K5").state == "LATE"
    process_pending(time_budget=30)
    assert _instance("K5").state == "LATE"  # BACK no longer matches from LATE
    applied = sorted(_ledger(inst.id), key=lambda e: (e.processed_at, e.id))
    assert [e.source for e in applied] == ["on_webhook", "timeout", "on_webhook"]
    assert applied[2].result == "no enabled on_webhook transition leaves LATE"


def _due_at(keys: list[str], at: Any) -> None:
    db.session.execute(Instance.__table__.update().where(Instance.record_key.in_(keys))
                       .values(timeout_due_at=at))
    db.session.commit()


def test_bulk_sweep_passes_over_instances_with_waiting_events(app):
    ledger_workflow()
    keys = [f"B{i}" for i in range(6)]
    for key in keys:
        _send(key, "go")
    # The two with the earliest timers have an event waiting (one that moves nothing): they
    # are left, in order behind it, and do not hold up the others (batches of 2).
    _due_at(["B0", "B1"], utcnow() + timedelta(minutes=30))
    _send("B0", "ping", process=False)
    _send("B1", "ping", process=False)
    later = utcnow() + timedelta(hours=2)
    assert fire_due_timeouts(now=later, batch_size=2) == 4
    assert [_instance(k).state for k in keys] == ["WAIT", "WAIT"] + ["LATE"] * 4
    assert [e.source for e in _ledger(_instance("B0").id)] == ["on_webhook"]  # no timeout yet
    process_pending(time_budget=30)  # the pings apply first (no transition for them) ...
    assert fire_due_timeouts(now=later, batch_size=2) == 2  # ... then the timeouts
    for key in keys:
        inst = _instance(key)
        events = _ledger(inst.id)
        assert inst.state == "LATE" and events[-1].source == "timeout"
        assert [e.type for e in events] == (["go", "ping", "EXPIRE"] if key in ("B0", "B1")
                                            else ["go", "EXPIRE"])
        assert events[-1].result == "fired EXPIRE: WAIT → LATE"
        assert events[-1].payload["state"] == "WAIT" and events[-1].payload["timeout_hours"] == 1
        entry = db.session.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == inst.id)
                                   .order_by(HistoryEntry.id.desc())).first()
        assert (entry.trigger_type, entry.actor, entry.event_id) == ("timeout", "sweep",
                                                                    events[-1].id)
        assert (entry.from_state, entry.to_state, entry.notes) == (
            "WAIT", "LATE", "timed out after 1 h in WAIT")
    assert fire_due_timeouts(now=later) == 0  # nothing fires twice


def test_bulk_sweep_per_run_instance_waits_for_its_run_events(app):
    ledger_workflow()
    update_integration("LEDGER_IN", {"instance_mode": "per_run"})
    integration = get_integration("LEDGER_IN")
    for run_id in (71, 72):
        ingest(integration, [NewEvent("on_webhook", "go", None, run_id, {})], kick=False)
    process_pending(time_budget=30)
    ingest(integration, [NewEvent("on_webhook", "ping", None, 71, {})], kick=False)
    later = utcnow() + timedelta(hours=2)
    assert fire_due_timeouts(now=later) == 1

    def state(run_id: int) -> str:
        db.session.expire_all()
        return db.session.scalar(select(Instance.state).where(Instance.run_id == run_id))

    assert (state(71), state(72)) == ("WAIT", "LATE")
    process_pending(time_budget=30)
    assert fire_due_timeouts(now=later) == 1 and state(71) == "LATE"


def test_bulk_sweep_compare_and_set_skips_an_instance_moved_meanwhile(app):
    from wfapp.services import timeouts

    ledger_workflow()
    for key in ("C1", "C2", "C3"):
        _send(key, "go")
    later = utcnow() + timedelta(hours=2)
    rows = timeouts._due(later, 10)
    # C2 changes after the sweep read it: its row is stale, so the group leaves it alone.
    db.session.execute(Instance.__table__.update().where(Instance.record_key == "C2")
                       .values(version=Instance.version + 1))
    workflow = timeouts.compiled_workflow(rows[0].workflow_id, rows[0].workflow_version)
    history: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    assert timeouts._fire_group(workflow, "WAIT", list(rows), later, history, ledger) == (2, 2)
    timeouts.write_ledger(db.session.connection(), ledger, history)
    if history:
        db.session.execute(HistoryEntry.__table__.insert(), history)
    db.session.commit()
    assert [_instance(k).state for k in ("C1", "C2", "C3")] == ["LATE", "WAIT", "LATE"]
    assert [e.source for e in _ledger(_instance("C2").id)] == ["on_webhook"]
    assert db.session.scalar(select(func.count()).select_from(HistoryEntry).where(
        HistoryEntry.trigger_type == "timeout")) == 2


def test_sweep_mixed_batch_with_actions_plain_and_stopped_timers(app):
    """One batch: a timeout with actions (through move(): variables, outbox rows), one without
    (set-based), one whose timeout transition is disabled (timer stopped, said why)."""
    wf = {
        "code": "MIXED", "initial_state": "NEW",
        "states": [{"code": "NEW", "is_initial": True},
                   {"code": "ACT", "timeout_hours": 1, "on_timeout_transition": "TA"},
                   {"code": "PLAIN", "timeout_hours": 2, "on_timeout_transition": "TP"},
                   {"code": "OFF", "timeout_hours": 1, "on_timeout_transition": "TO"},
                   {"code": "DONE", "is_final": True}],
        "transitions": [
            *({"code": f"GO_{s}", "from_state": "NEW", "to_state": s,
               "trigger_type": "on_webhook", "trigger_config": {"event_filter": s.lower()}}
              for s in ("ACT", "PLAIN", "OFF")),
            {"code": "TA", "from_state": "ACT", "to_state": "DONE", "trigger_type": "manual",
             "actions": [
                 {"type": "set_variable", "config": {"values": {"why": "late {record_key}"}}},
                 {"id": "tell", "type": "http_request",
                  "config": {"method": "POST", "url": "http://127.0.0.1:9/late/{record_key}"}}]},
            {"code": "TP", "from_state": "PLAIN", "to_state": "DONE", "trigger_type": "manual"},
            {"code": "TO", "from_state": "OFF", "to_state": "DONE", "trigger_type": "manual",
             "enabled": False},
        ],
    }
    import_document({"format": FORMAT, "workflow": wf}, replace=True)
    create_integration({"code": "MIXED_IN", "workflow_code": "MIXED"})
    integration = get_integration("MIXED_IN")
    plan = {"M0": "act", "M1": "plain", "M2": "off", "M3": "act", "M4": "plain", "M5": "off"}
    ingest(integration, [NewEvent("on_webhook", kind, key, None, {})
                         for key, kind in plan.items()], kick=False)
    process_pending(time_budget=30)
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=3)) == 4
    for key, kind in plan.items():
        inst = _instance(key)
        last = _ledger(inst.id)[-1]
        entry = db.session.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == inst.id)
                                   .order_by(HistoryEntry.id.desc())).first()
        assert last.source == "timeout" and entry.event_id == last.id
        assert entry.trigger_type == "timeout" and inst.version == 3
        deliveries = db.session.scalars(select(ActionDelivery)
                                        .where(ActionDelivery.instance_id == inst.id)).all()
        if kind == "off":
            assert (inst.state, inst.timeout_due_at) == ("OFF", None)
            assert last.result == "timeout transition disabled" == entry.notes
            assert deliveries == []
        elif kind == "act":
            assert inst.state == "DONE" and inst.vars == {"why": f"late {key}"}
            assert [(d.transition, d.action_id) for d in deliveries] == [("TA", "tell")]
            assert last.result == "fired TA: ACT → DONE"
        else:
            assert inst.state == "DONE" and inst.completed_at is not None and deliveries == []
            assert last.result == "fired TP: PLAIN → DONE"
            assert entry.notes == "timed out after 2 h in PLAIN"
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=6)) == 0


def test_events_page_filters_manual_source(app, auth, client):
    ledger_workflow()
    _send("K6", "go")
    fire_manual(_instance("K6").id, "OK", "", "alice")
    auth.login("admin")
    page = client.get("/events/?source=manual").get_data(as_text=True)
    assert "fired OK: WAIT" in page
