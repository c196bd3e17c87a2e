"""Bulk operations in chunks: the Advance dry run decides as the run does (conditions, the
instance's own version); a chunk is all or nothing; cancel between chunks; set-based actions
audit each row."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import AuditEntry, BulkOperation, Event, HistoryEntry, Instance
from wfapp.queue import get_queue
from wfapp.services import bulk, tally
from wfapp.services.definitions import import_document
from wfapp.services.instance_list import InstanceFilters
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.runs import start_run

from .lists import WORKFLOW, make_stuck

GATED = copy.deepcopy(WORKFLOW)
GATED["workflow"]["code"] = "GATED"
GATED["workflow"]["transitions"][1]["conditions"] = [
    {"field": "record.amount", "operator": "gt", "value": 100}]
# A captured variable: these moves go through firing.move() one by one, not set-based.
GATED["workflow"]["transitions"][1]["capture"] = {"paid": "record.amount"}


def _gated(amounts: list[int], prefix: str = "G") -> None:
    """Instances of GATED in HOLD, one per amount (the record the Manual condition reads)."""
    start_run(get_integration("GATES"), "import",
              [{"key": f"{prefix}{i}", "data": {"amount": a}} for i, a in enumerate(amounts)],
              "tester")
    get_queue().drain(limit=10_000)


@pytest.fixture
def gated(app: Any) -> None:
    import_document(copy.deepcopy(GATED))
    create_integration({"code": "GATES", "workflow_code": "GATED"})


def _operation(op: int) -> BulkOperation:
    db.session.expire_all()
    found = db.session.get(BulkOperation, op)
    assert found is not None
    return found


def _count(model: Any, *where: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_advance_dry_run_evaluates_conditions_on_each_instances_version(client, tokens, gated):
    _gated([50, 150, 200, 10, 500, 300])  # v1: RELEASE needs amount > 100 — two refused
    v2 = copy.deepcopy(GATED)
    v2["workflow"]["transitions"][1]["conditions"][0]["value"] = 250
    import_document(v2, replace=True)
    _gated([200], prefix="NEWER")  # follows v2: 200 is not > 250
    body = {"filter": {"workflow": "GATED"}, "action": "advance", "transition": "RELEASE",
            "dry_run": True}
    dry = client.post("/api/v1/instances/bulk", json=body, headers=tokens["operator"]).json
    assert dry["matched"] == 7
    assert sorted((r["count"], r["reason"]) for r in dry["refused"]) == [
        (1, "transition RELEASE cannot fire: condition record.amount gt 250 was false"),
        (2, "transition RELEASE cannot fire: condition record.amount gt 100 was false")]
    started = client.post("/api/v1/instances/bulk", json={**body, "dry_run": False},
                          headers=tokens["operator"])
    assert started.status_code == 202
    get_queue().drain()
    operation = _operation(started.json["operation_id"])
    # The run refuses exactly what the dry run said it would.
    assert (operation.status, operation.done, operation.failed) == ("done", 4, 3)
    assert {e["message"].split(" because ")[0] for e in operation.errors} == {
        "transition RELEASE cannot fire: condition record.amount gt 100 was false",
        "transition RELEASE cannot fire: condition record.amount gt 250 was false"}
    assert dict(db.session.execute(select(Instance.state, func.count())
                                   .group_by(Instance.state)).all()) == {"DONE": 4, "HOLD": 3}
    assert sorted(i.vars["paid"] for i in db.session.scalars(
        select(Instance).where(Instance.state == "DONE"))) == [150, 200, 300, 500]


def test_dry_run_groups_structural_refusals_without_reading_each_instance(app, gated):
    _gated([150, 150, 150])
    plan = bulk.plan("instances", "advance", InstanceFilters(workflow="GATED"),
                     {"transition": "NOPE"}, True, "tester")
    assert [r.as_dict() for r in plan.refused] == [{
        "count": 3, "reason": "transition 'NOPE' does not exist in this workflow",
        "workflow": "GATED", "state": "HOLD"}]


def test_a_chunk_that_fails_leaves_nothing_and_a_retry_acts_once(app, monkeypatch):
    make_stuck(12)
    plan = bulk.plan("instances", "advance", InstanceFilters(state="HOLD"),
                     {"transition": "RELEASE"}, False, "tester")
    op = plan.operation_id
    get_queue().jobs.clear()
    action = bulk.ACTIONS[("instances", "advance")]
    real = action.apply

    def crash(ids: list[int], params: dict[str, Any], actor: str) -> Any:
        real(ids, params, actor)  # the chunk's moves are made, then the job dies
        raise RuntimeError("worker killed")

    monkeypatch.setattr(action, "apply", crash)
    with pytest.raises(RuntimeError):
        bulk.run(op, time_budget=60, chunk=5)
    db.session.rollback()
    operation = _operation(op)
    assert (operation.cursor, operation.done) == (0, 0)
    assert _count(HistoryEntry, HistoryEntry.transition == "RELEASE") == 0
    monkeypatch.setattr(action, "apply", real)
    assert bulk.run(op, time_budget=60, chunk=5)
    operation = _operation(op)
    assert (operation.status, operation.done, operation.failed) == ("done", 12, 0)
    assert _count(HistoryEntry, HistoryEntry.transition == "RELEASE") == 12
    # Each move is in the events ledger, as a person's fire is.
    assert _count(Event, Event.source == "manual", Event.type == "RELEASE") == 12
    workflow_id = db.session.scalar(select(Instance.workflow_id).limit(1))
    assert tally.edge_counts(workflow_id)["RELEASE"] == 12
    assert bulk.run(op, time_budget=60, chunk=5)  # a late duplicate job finds it finished
    assert _count(HistoryEntry, HistoryEntry.transition == "RELEASE") == 12


def test_cancel_takes_effect_between_chunks(app):
    make_stuck(12)
    op = bulk.plan("instances", "advance", InstanceFilters(state="HOLD"),
                   {"transition": "RELEASE"}, False, "tester").operation_id
    assert op is not None
    get_queue().jobs.clear()
    assert bulk.run(op, time_budget=0, chunk=5) is False  # one chunk, then the slice ends
    assert _operation(op).done == 5
    bulk.cancel(op, "tester")
    assert bulk.run(op, time_budget=60, chunk=5) is True
    operation = _operation(op)
    assert (operation.status, operation.done, operation.cursor > 0) == ("cancelled", 5, True)
    assert _count(Instance, Instance.state == "DONE") == 5


def test_set_based_reset_delete_and_replay_audit_each_row(app):
    make_stuck(7)
    reset = bulk.plan("instances", "reset", InstanceFilters(state="HOLD"),
                      {"state": "new", "note": "start over"}, False, "tester").operation_id
    get_queue().jobs.clear()
    assert reset is not None and bulk.run(reset, time_budget=60, chunk=3)
    assert (_operation(reset).done, _count(Instance, Instance.state == "NEW")) == (7, 7)
    assert _count(AuditEntry, AuditEntry.action == "reset") == 7
    assert _count(HistoryEntry, HistoryEntry.trigger_type == "reset",
                  HistoryEntry.event_id.is_not(None)) == 7
    db.session.execute(Event.__table__.update().where(Event.source == "on_import")
                       .values(status="failed", result="boom", attempts=5))
    db.session.commit()
    replay = bulk.plan("events", "replay", bulk._filters("events", {"status": "failed"}), {},
                       False, "tester").operation_id
    assert replay is not None and bulk.run(replay, time_budget=60, chunk=3)
    assert _operation(replay).done == 7
    assert _count(Event, Event.status == "pending", Event.result == "replayed (was: boom)",
                  Event.attempts == 0) == 7  # tried afresh
    assert _count(AuditEntry, AuditEntry.action == "replay") == 7
    get_queue().drain()
    delete = bulk.plan("instances", "delete", InstanceFilters(workflow="STUCKFLOW"), {}, False,
                       "tester").operation_id
    get_queue().jobs.clear()
    assert delete is not None and bulk.run(delete, time_budget=60, chunk=4)
    assert (_operation(delete).done, _count(Instance)) == (7, 0)
    entries = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == "delete")))
    assert len(entries) == 7
    assert entries[0].details["workflow"] == "STUCKFLOW" and entries[0].actor.startswith("bulk:")
