"""Bulk operations by filter through the API: dry run, run by the queue, cancel, retry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import AuditEntry, BulkOperation, HistoryEntry, Instance
from wfapp.queue import get_queue
from wfapp.services import bulk

from .lists import make_stuck


def _post(client: Any, headers: dict[str, str], url: str, body: Any) -> Any:
    return client.post(url, json=body, headers=headers)


def _states() -> dict[str, int]:
    db.session.expire_all()
    return dict(db.session.execute(select(Instance.state, func.count())
                                   .group_by(Instance.state)).all())


def test_advance_by_filter_dry_run_then_run(client, tokens, app):
    make_stuck(30)
    token = tokens["operator"]
    body = {"filter": {"workflow": "STUCKFLOW"}, "action": "advance",
            "transition": "release", "comment": "unblock", "dry_run": True}
    dry = _post(client, token, "/api/v1/instances/bulk", body)
    assert dry.status_code == 200, dry.json
    assert dry.json == {"operation_id": None, "matched": 30, "refused": []}
    assert db.session.scalar(select(func.count()).select_from(BulkOperation)) == 0
    started = _post(client, token, "/api/v1/instances/bulk",
                    {**body, "filter": {"workflow": "STUCKFLOW", "state": "HOLD"},
                     "dry_run": False})
    assert started.status_code == 202, started.json
    op = started.json["operation_id"]
    get_queue().drain()
    progress = client.get(f"/api/v1/operations/{op}",
                          headers=token).json
    assert (progress["status"], progress["total"], progress["done"], progress["failed"]) == \
        ("done", 30, 30, 0)
    assert _states() == {"DONE": 30}
    fired = db.session.scalar(select(func.count()).select_from(HistoryEntry)
                              .where(HistoryEntry.transition == "RELEASE"))
    assert fired == 30
    actions = set(db.session.scalars(select(AuditEntry.action)
                                     .where(AuditEntry.object_type == "operation")))
    assert actions == {"bulk_start", "bulk_done"}


def test_dry_run_names_refusals(client, tokens, app):
    make_stuck(5)
    token = tokens["operator"]
    answer = _post(client, token, "/api/v1/instances/bulk",
                   {"filter": {"integration": "STUCK_ORDERS", "active": True},
                    "action": "reset", "state": "NOPE", "note": "x", "dry_run": True}).json
    assert answer["matched"] == 5
    assert answer["refused"][0]["count"] == 5
    assert "NOPE is not a state" in answer["refused"][0]["reason"]
    bad = _post(client, token, "/api/v1/instances/bulk",
                {"filter": {"active": "yes", "run_id": -1}, "action": "advance",
                 "transition": "X"})
    assert bad.status_code == 422
    paths = {d["path"] for d in bad.json["error"]["details"]}
    assert paths == {"filter.active", "filter.run_id"}
    migrate = _post(client, tokens["author"], "/api/v1/instances/bulk",
                    {"action": "migrate", "to_version": 2})
    assert migrate.status_code == 422
    assert migrate.json["error"]["details"][0]["path"] == "filter.workflow"
    # Moving instances between versions is an author's decision, as the migrations API is.
    assert _post(client, token, "/api/v1/instances/bulk",
                 {"action": "migrate", "to_version": 2}).status_code == 403


def test_retry_never_acts_twice_and_cancel(client, tokens, app):
    keys = make_stuck(12)
    token = tokens["operator"]
    started = _post(client, token, "/api/v1/instances/bulk",
                    {"filter": {"state": "HOLD"}, "action": "advance",
                     "transition": "RELEASE"}).json
    op = started["operation_id"]
    queue = get_queue()
    queue.jobs.clear()
    # Two jobs of one operation, one after the other in small chunks, and a third later:
    # each row is claimed once.
    bulk.run(op, time_budget=60, chunk=5)
    bulk.run(op, time_budget=60, chunk=5)
    db.session.expire_all()
    operation = db.session.get(BulkOperation, op)
    assert (operation.status, operation.done, operation.failed) == ("done", 12, 0)
    fired = db.session.scalar(select(func.count()).select_from(HistoryEntry)
                              .where(HistoryEntry.transition == "RELEASE"))
    assert fired == len(keys)
    # A finished operation cannot be cancelled; a queued one can, and then does nothing.
    assert _post(client, token, f"/api/v1/operations/{op}/cancel", {}).status_code == 409
    make_stuck(3, prefix="NEW")
    second = _post(client, token, "/api/v1/instances/bulk",
                   {"filter": {"state": "HOLD"}, "action": "delete"}).json["operation_id"]
    cancelled = _post(client, token, f"/api/v1/operations/{second}/cancel", {})
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    queue.drain()
    assert _states() == {"DONE": 12, "HOLD": 3}


def test_replay_events_by_filter(client, tokens, app):
    make_stuck(4)
    from wfapp.models import Event
    db.session.execute(Event.__table__.update().values(status="failed", result="boom"))
    db.session.commit()
    token = tokens["operator"]
    dry = _post(client, token, "/api/v1/events/bulk",
                {"filter": {"integration": "STUCK_ORDERS"}, "action": "replay",
                 "dry_run": True}).json
    assert dry["matched"] == 4 and dry["refused"] == []
    op = _post(client, token, "/api/v1/events/bulk",
               {"filter": {"status": "failed"}, "action": "replay"}).json["operation_id"]
    get_queue().drain()
    operation = db.session.get(BulkOperation, op)
    db.session.refresh(operation)
    assert (operation.status, operation.done) == ("done", 4)
    replays = db.session.scalar(select(func.count()).select_from(AuditEntry)
                                .where(AuditEntry.action == "replay"))
    assert replays == 4


def test_rq_workers_two_jobs_of_one_operation_act_once(rq_app, tokens, client):
    """On RQ: two jobs of one operation in two worker processes at once, in short slices."""
    from tests.services import start_worker

    make_stuck(150)
    started = _post(client, tokens["operator"], "/api/v1/instances/bulk",
                    {"filter": {"state": "HOLD"}, "action": "advance",
                     "transition": "RELEASE"}).json
    get_queue().enqueue(bulk.JOB, started["operation_id"])  # a duplicate job, as a retry
    workers = [start_worker(rq_app.config, WFAPP_BULK_TIME_BUDGET="0.2") for _ in range(2)]
    for worker in workers:
        out, _ = worker.communicate(timeout=180)
        assert worker.returncode == 0, out
    db.session.expire_all()
    operation = db.session.get(BulkOperation, started["operation_id"])
    assert (operation.status, operation.done, operation.failed) == ("done", 150, 0)
    fired = db.session.scalar(select(func.count()).select_from(HistoryEntry)
                              .where(HistoryEntry.transition == "RELEASE"))
    assert fired == 150  # each instance advanced exactly once
