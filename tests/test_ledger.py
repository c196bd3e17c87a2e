"""One path through the core: manual fires, timeouts and resets in the events ledger, in order."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import Event, HistoryEntry, Instance, utcnow
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.errors import Conflict
from wfapp.services.events import NewEvent, ingest
from wfapp.services.instances import fire_manual, reset_instance
from wfapp.services.integrations import create_integration, get_integration
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


def test_events_page_filters_manual_source(app, auth, client):
    ledger_workflow()
    _send("K6", "go")
    fire_manual(_instance("K6").id, "OK", "", "alice")
    auth.login("admin")
    page = client.get("/events/?source=manual").get_data(as_text=True)
    assert "fired OK: WAIT" in page
