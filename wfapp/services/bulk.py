"""Bulk operations: one action over every instance (or event) a filter matches.

`plan()` is the dry run (how many match, which would be refused and why) and, unless asked
only to look, stores a `bulk_operation` and queues `wfapp.jobs.run_operation`. `run()` takes
the matching rows in id order above the operation's cursor, chunk by chunk, and acts on each
through the same service function a person uses on one row (fire, reset, delete, replay).

Safe to retry: the cursor (and the done/failed counts) are written in the *same transaction*
as the change to the row — the service function's commit carries them — and that write only
happens when the cursor is still below the row's id. A second job of one operation (a retry,
a duplicate) therefore never acts on a row twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update

from ..engine import RuleError
from ..extensions import affected, db
from ..models import BulkOperation, Event, EventStatus, Instance, OperationStatus, utcnow
from . import audit, migrations
from . import events as event_service
from . import instances as instance_service
from .errors import Conflict, NotFound, ServiceError, ValidationFailed
from .firing import compiled_workflow
from .instance_list import InstanceFilters, filtered_ids

OPERATION = BulkOperation.__table__
CHUNK = 200
MAX_ERRORS = 50
MAX_REFUSED = 100
JOB = "wfapp.jobs.run_operation"


@dataclass
class Refusal:
    """A group of matching rows the action would refuse, and why."""

    count: int
    reason: str
    workflow: str | None = None
    state: str | None = None
    status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The refusal as the API shows it."""
        out: dict[str, Any] = {"count": self.count, "reason": self.reason}
        for key in ("workflow", "state", "status"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class BulkAction:
    """One action bulk operations offer: check its parameters, foresee refusals, apply it."""

    name: str
    target: str  # instances | events
    check: Callable[[dict[str, Any]], dict[str, Any]]
    refusals: Callable[[Any, dict[str, Any]], list[Refusal]]
    apply: Callable[[int, dict[str, Any], str], Any]
    #: Checks the params against the filter (and may add to them) before a dry run or start.
    prepare: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    #: The role a person needs to start it (moving instances between versions is an author's).
    role: str = "operator"


ACTIONS: dict[tuple[str, str], BulkAction] = {}


def register_action(action: BulkAction) -> None:
    """Offer one more bulk action (migrate-to-version plugs in here when versions exist)."""
    ACTIONS[(action.target, action.name)] = action


def role_needed(target: str, name: str) -> str:
    """The role starting (or dry-running) this action needs; "operator" for unknown ones,
    which are refused naming the field anyway."""
    found = ACTIONS.get((target, name))
    return found.role if found is not None else "operator"


def _text(params: dict[str, Any], key: str, required: bool = True, limit: int = 1000) -> str:
    value = params.get(key, "")
    if not isinstance(value, str):
        raise ValidationFailed([RuleError(key, "must be a string")])
    if required and not value.strip():
        raise ValidationFailed([RuleError(key, "is required")])
    if len(value) > limit or "\x00" in value:
        raise ValidationFailed([RuleError(key, f"must be up to {limit} characters, no NUL")])
    return value.strip()


def _groups(filters: InstanceFilters) -> list[tuple[tuple[int, int], str, int]]:
    """((workflow id, version), state, count) of the matching instances: each is decided by
    the workflow version it follows."""
    ids = filtered_ids(filters).subquery()
    return [((r[0], r[1]), r[2], r[3]) for r in db.session.execute(
        select(Instance.workflow_id, Instance.workflow_version, Instance.state, func.count())
        .where(Instance.id.in_(select(ids.c.id)))
        .group_by(Instance.workflow_id, Instance.workflow_version, Instance.state))]


def _advance_check(params: dict[str, Any]) -> dict[str, Any]:
    return {"transition": _text(params, "transition", limit=20).upper(),
            "comment": _text(params, "comment", required=False)}


def _advance_refusals(filters: InstanceFilters, params: dict[str, Any]) -> list[Refusal]:
    out = []
    for version, state, count in _groups(filters):
        workflow = compiled_workflow(*version)
        reason = instance_service.manual_problem(workflow, params["transition"], state)
        if reason:
            out.append(Refusal(count, reason, workflow.code if workflow else None, state))
    return out


def _advance(instance_id: int, params: dict[str, Any], actor: str) -> Any:
    return instance_service.fire_manual(instance_id, params["transition"], params["comment"],
                                        actor)


def _reset_check(params: dict[str, Any]) -> dict[str, Any]:
    return {"state": _text(params, "state", limit=20).upper(), "note": _text(params, "note")}


def _reset_refusals(filters: InstanceFilters, params: dict[str, Any]) -> list[Refusal]:
    out: dict[tuple[int, int], Refusal] = {}
    for version, _state, count in _groups(filters):
        workflow = compiled_workflow(*version)
        if workflow is None or params["state"] not in workflow.states:
            code = workflow.code if workflow else None
            found = out.setdefault(version, Refusal(
                0, f"state {params['state']} is not a state of workflow {code} version "
                   f"{version[1]}", code))
            found.count += count
    return list(out.values())


def _reset(instance_id: int, params: dict[str, Any], actor: str) -> Any:
    return instance_service.reset_instance(instance_id, params["state"], params["note"], actor)


def _delete(instance_id: int, params: dict[str, Any], actor: str) -> Any:
    return instance_service.delete_instance(instance_id, actor)


def _replay_refusals(filters: event_service.EventFilters, params: dict[str, Any]
                     ) -> list[Refusal]:
    ids = event_service.event_where(select(Event.id), filters).subquery()
    replayable = (EventStatus.SKIPPED.value, EventStatus.FAILED.value)
    return [Refusal(r[1], f"the event is {r[0]}; only skipped or failed events can be "
                          "replayed", status=r[0])
            for r in db.session.execute(
                select(Event.status, func.count()).where(Event.id.in_(select(ids.c.id)))
                .group_by(Event.status)) if r[0] not in replayable]


def _replay(event_id: int, params: dict[str, Any], actor: str) -> Any:
    return event_service.replay(event_id)


register_action(BulkAction("advance", "instances", _advance_check, _advance_refusals, _advance))
register_action(BulkAction("reset", "instances", _reset_check, _reset_refusals, _reset))
register_action(BulkAction("delete", "instances", lambda params: {},
                           lambda filters, params: [], _delete))
register_action(BulkAction("replay", "events", lambda params: {}, _replay_refusals, _replay))
register_action(BulkAction("migrate", "instances", migrations.bulk_check,
                           migrations.bulk_refusals, migrations.bulk_move,
                           migrations.bulk_prepare, role="author"))


def advance_options(filters: InstanceFilters) -> list[tuple[str, str]]:
    """(code, label) of the Manual transitions some matching instance can fire, the ones
    leaving the most matching instances first."""
    counts: dict[tuple[str, str], int] = {}
    for version, state, count in _groups(filters):
        for action in instance_service.manual_from(*version, state):
            key = (action.code, f"{action.code} · {action.label} ({state} → {action.to_state})")
            counts[key] = counts.get(key, 0) + count
    return [key for key, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def reset_options(filters: InstanceFilters) -> list[tuple[str, str]]:
    """(code, label) of the states every matching instance's workflow has."""
    common: dict[str, str] | None = None
    for version in {g[0] for g in _groups(filters)}:
        workflow = compiled_workflow(*version)
        states = {c: f"{c} · {s.description}" for c, s in (workflow.states.items()
                                                           if workflow else ())}
        common = states if common is None else {c: d for c, d in common.items()
                                                if c in states}
    return sorted((common or {}).items())


@dataclass
class Plan:
    """The dry run's answer, and the operation started (None for a dry run)."""

    matched: int
    refused: list[Refusal]
    operation_id: int | None = None

    @property
    def refused_count(self) -> int:
        """How many of the matched rows would be refused."""
        return sum(r.count for r in self.refused)


def _action(target: str, name: str) -> BulkAction:
    found = ACTIONS.get((target, name))
    if found is None:
        offered = sorted(n for t, n in ACTIONS if t == target)
        raise ValidationFailed([RuleError("action", f"must be one of {', '.join(offered)}")])
    return found


def _filters(target: str, data: dict[str, Any]) -> Any:
    if target == "instances":
        return InstanceFilters.from_dict(data)
    return event_service.EventFilters(**{k: data.get(k) for k in (
        "integration", "status", "source", "run_id", "instance_id")})


def _filter_dict(filters: Any) -> dict[str, Any]:
    if isinstance(filters, InstanceFilters):
        return filters.as_dict()
    return {k: getattr(filters, k) for k in ("integration", "status", "source", "run_id",
                                              "instance_id")}


def _ids(target: str, filters: Any) -> Any:
    if target == "instances":
        return filtered_ids(filters)
    return event_service.event_where(select(Event.id), filters)


def matched(target: str, filters: Any) -> int:
    """How many rows the filter matches (exactly: an operation's total)."""
    return db.session.scalar(select(func.count()).select_from(
        _ids(target, filters).subquery())) or 0


def plan(target: str, action_name: str, filters: Any, params: dict[str, Any], dry_run: bool,
         actor: str) -> Plan:
    """Count and check what the action would do; unless `dry_run`, start it as a queue job."""
    action = _action(target, action_name)
    checked = action.check(params)
    if action.prepare is not None:
        checked = action.prepare(filters, checked)
    count = matched(target, filters)
    refused = action.refusals(filters, checked)[:MAX_REFUSED]
    result = Plan(count, refused)
    if dry_run:
        return result
    if count == 0:
        raise Conflict("no rows match this filter; nothing to do")
    operation = BulkOperation(target=target, action=action.name, filter=_filter_dict(filters),
                              params=checked, status=OperationStatus.QUEUED.value,
                              total=count, done=0, failed=0, cursor=0, errors=[],
                              created_by=actor[:64], created_at=utcnow())
    db.session.add(operation)
    db.session.flush()
    audit.record("bulk_start", "operation", str(operation.id),
                 {"target": target, "action": action.name, "filter": operation.filter,
                  "params": checked, "matched": count,
                  "refused": [r.as_dict() for r in refused]}, who=actor)
    db.session.commit()
    from ..queue import get_queue  # the queue sits above services; imported where it is used

    get_queue().enqueue(JOB, operation.id)
    result.operation_id = operation.id
    return result


def get_operation(operation_id: int) -> BulkOperation:
    """The operation with this id; NotFound otherwise."""
    operation = db.session.get(BulkOperation, operation_id)
    if operation is None:
        raise NotFound(f"operation {operation_id} does not exist")
    return operation


def progress(operation: BulkOperation) -> dict[str, Any]:
    """`{"status", "total", "done", "failed"}` and what else the progress page shows."""
    return {"id": operation.id, "status": operation.status, "total": operation.total,
            "done": operation.done, "failed": operation.failed, "target": operation.target,
            "action": operation.action, "params": operation.params,
            "filter": operation.filter, "errors": operation.errors,
            "created_by": operation.created_by}


def cancel(operation_id: int, actor: str) -> BulkOperation:
    """Stop an operation between two rows; what it did so far stays done."""
    operation = get_operation(operation_id)
    changed = affected(db.session.execute(update(OPERATION).where(
        OPERATION.c.id == operation_id,
        OPERATION.c.status.in_([OperationStatus.QUEUED.value, OperationStatus.RUNNING.value]))
        .values(status=OperationStatus.CANCELLED.value, finished_at=utcnow())))
    if changed != 1:
        db.session.rollback()
        raise Conflict(f"operation {operation_id} is {operation.status}; only a queued or "
                       "running operation can be cancelled")
    audit.record("bulk_cancel", "operation", str(operation_id),
                 {"done": operation.done, "failed": operation.failed,
                  "total": operation.total}, who=actor)
    db.session.commit()
    db.session.refresh(operation)
    return operation


def _claim_row(operation_id: int, row_id: int, *, failed: bool) -> bool:
    """Move the cursor past `row_id` in the current transaction; False when another job did
    (or the operation was cancelled)."""
    counter = OPERATION.c.failed if failed else OPERATION.c.done
    if db.session.get_bind().dialect.name == "postgresql":
        # This row's transaction need not wait for its WAL flush: a crash loses the claim
        # together with the change (one transaction), so a retry redoes both, never one twice.
        # On a busy disk this is most of the time a row takes.
        db.session.execute(text("SET LOCAL synchronous_commit = off"))
    return affected(db.session.execute(update(OPERATION).where(
        OPERATION.c.id == operation_id, OPERATION.c.cursor < row_id,
        OPERATION.c.status == OperationStatus.RUNNING.value)
        .values({OPERATION.c.cursor: row_id, counter: counter + 1}))) == 1


def run(operation_id: int, time_budget: float = 20.0, chunk: int = CHUNK) -> bool:
    """Work on an operation for up to `time_budget` seconds; True when it has finished."""
    deadline = time.monotonic() + time_budget
    db.session.execute(update(OPERATION).where(
        OPERATION.c.id == operation_id, OPERATION.c.status == OperationStatus.QUEUED.value)
        .values(status=OperationStatus.RUNNING.value))
    db.session.commit()
    operation = db.session.get(BulkOperation, operation_id)
    if operation is None or operation.status != OperationStatus.RUNNING.value:
        return True
    action = _action(operation.target, operation.action)
    filters = _filters(operation.target, operation.filter)
    actor = f"bulk:{operation.id}:{operation.created_by}"[:64]
    while time.monotonic() < deadline:
        cursor = db.session.scalar(select(OPERATION.c.cursor).where(
            OPERATION.c.id == operation_id))
        query = _ids(operation.target, filters)
        key = query.selected_columns[0]
        ids = list(db.session.scalars(query.where(key > cursor).order_by(key).limit(chunk)))
        db.session.rollback()  # end the read; each row gets its own transaction
        if not ids:
            return _finish(operation_id)
        for row_id in ids:
            if not _claim_row(operation_id, row_id, failed=False):
                db.session.rollback()
                status = db.session.scalar(select(OPERATION.c.status).where(
                    OPERATION.c.id == operation_id))
                if status != OperationStatus.RUNNING.value:
                    return True  # cancelled meanwhile
                continue  # another job of this operation took the row
            try:
                # The service function commits the claim together with its change.
                action.apply(row_id, operation.params, actor)
            except ServiceError as error:
                db.session.rollback()
                _record_failure(operation_id, row_id, error.message)
            if time.monotonic() >= deadline:
                break
    return False


def _record_failure(operation_id: int, row_id: int, message: str) -> None:
    if not _claim_row(operation_id, row_id, failed=True):
        db.session.rollback()
        return
    errors = db.session.scalar(select(OPERATION.c.errors).where(
        OPERATION.c.id == operation_id)) or []
    if len(errors) < MAX_ERRORS:
        db.session.execute(update(OPERATION).where(OPERATION.c.id == operation_id).values(
            errors=[*errors, {"id": row_id, "message": message[:300]}]))
    db.session.commit()


def _finish(operation_id: int) -> bool:
    finished = affected(db.session.execute(update(OPERATION).where(
        OPERATION.c.id == operation_id, OPERATION.c.status == OperationStatus.RUNNING.value)
        .values(status=OperationStatus.DONE.value, finished_at=utcnow())))
    if finished:
        operation = get_operation(operation_id)
        audit.record("bulk_done", "operation", str(operation_id),
                     {"done": operation.done, "failed": operation.failed,
                      "total": operation.total}, who="worker")
    db.session.commit()
    return True


def unfinished() -> list[int]:
    """Ids of operations queued or running (the sweep makes sure each has a job)."""
    return list(db.session.scalars(select(OPERATION.c.id).where(OPERATION.c.status.in_(
        [OperationStatus.QUEUED.value, OperationStatus.RUNNING.value])).limit(100)))
