"""Bulk operations: one action over every instance (or event) a filter matches.

`plan()` is the dry run (how many match, which would be refused and why) and, unless asked
only to look, stores a `bulk_operation` and queues `wfapp.jobs.run_operation`. `run()` takes
the matching rows in id order above the operation's cursor, a chunk (BULK_CHUNK, default 500)
per transaction, and acts on the chunk with the same decisions a person's action on one row
makes: Advance decides per instance in memory (`instances.manual_move`, the instance's own
version) and moves each through `firing.move()` (compare-and-set, actions, tally), writing the
history and ledger rows of the whole chunk at once; Reset likewise; Delete, Replay and Migrate
are set-based statements over the chunk.

Safe to retry: the chunk is claimed by moving the cursor from the value it was read at to the
chunk's last id — a compare-and-set in the *same transaction* as the changes to the chunk's
rows, with the done/failed counts. A second job of one operation (a retry, a duplicate) finds
the cursor moved and never acts on those rows; a crash loses the claim with the changes.
Cancelling takes effect between chunks; progress moves once per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.exc import DBAPIError

from ..engine import CompiledWorkflow, RuleError
from ..extensions import affected, db
from ..models import BulkOperation, Event, EventStatus, Instance, OperationStatus, utcnow
from . import audit, migrations, tally
from . import events as event_service
from . import instances as instance_service
from .errors import Conflict, NotFound, ValidationFailed
from .firing import (
    HISTORY,
    INSTANCE,
    INSTANCE_COLUMNS,
    InstanceRow,
    Move,
    compiled_workflow,
    history_row,
    move,
    pending_before,
    plan_move,
    row_to_instance,
    write_ledger,
)
from .instance_list import InstanceFilters, filtered_ids

OPERATION = BulkOperation.__table__
CHUNK = 500
MAX_CHUNK = 5000
#: Rows the Advance dry run reads per query when it evaluates conditions instance by instance.
DRY_RUN_PAGE = 2000
#: PostgreSQL deadlock / serialization failure: the chunk is rolled back whole and tried again.
RETRYABLE = {"40P01", "40001"}
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
    #: Acts on a chunk of ids in the caller's transaction (no commit); returns the refused
    #: ids with why. Each row it acts on is audited or gets history, as one row's action would.
    apply: Callable[[list[int], dict[str, Any], str], list[tuple[int, str]]]
    #: Checks the params against the filter (and may add to them) before a dry run or start.
    prepare: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    #: The role a person needs to start it (moving instances between versions is an author's).
    role: str = "operator"
    #: Called after each chunk's commit (replayed events ask for a processing job).
    after_commit: Callable[[], None] | None = None


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


def _reason_key(reason: str) -> str:
    """A refusal's reason without the instance's own value (so refusals group by condition)."""
    head, found, _ = reason.partition(" was false because ")
    return f"{head} was false" if found else reason


def _advance_refusals(filters: InstanceFilters, params: dict[str, Any]) -> list[Refusal]:
    """What the run would refuse, decided by the run's own code (`instances.manual_move`) on
    the version each instance follows: once per (workflow, version, state) group when the
    decision cannot depend on the instance, else instance by instance (conditions)."""
    code, comment = params["transition"], params["comment"]
    ids = filtered_ids(filters)
    counts: dict[tuple[str | None, str, str], int] = {}
    for workflow_id, version, state, count in db.session.execute(
            select(INSTANCE.c.workflow_id, INSTANCE.c.workflow_version, INSTANCE.c.state,
                   func.count()).where(INSTANCE.c.id.in_(ids.subquery().select()))
            .group_by(INSTANCE.c.workflow_id, INSTANCE.c.workflow_version, INSTANCE.c.state)):
        workflow = compiled_workflow(workflow_id, version)
        if workflow is None:
            key: tuple[str | None, str, str] = (
                None, state, "the instance's workflow (or its version) no longer exists")
            counts[key] = counts.get(key, 0) + count
            continue
        transition = workflow.transitions.get(code)
        if transition is None or not transition.conditions or transition.from_state != state:
            # Nothing instance-specific can change this group's answer: decide once for it.
            probe = InstanceRow(0, workflow_id, 0, None, None, state, 0, {}, {}, version)
            change, problem = instance_service.manual_move(workflow, probe, code, comment, "")
            if change is None:
                key = (workflow.code, state, problem)
                counts[key] = counts.get(key, 0) + count
            continue
        group = ids.with_only_columns(*INSTANCE_COLUMNS).where(
            INSTANCE.c.workflow_id == workflow_id, INSTANCE.c.workflow_version == version,
            INSTANCE.c.state == state)
        after = 0
        while True:  # keyset pages: a large group is read in bounded pieces
            rows = db.session.execute(group.where(INSTANCE.c.id > after)
                                      .order_by(INSTANCE.c.id).limit(DRY_RUN_PAGE)).all()
            if not rows:
                break
            after = rows[-1].id
            for row in rows:
                change, problem = instance_service.manual_move(
                    workflow, row_to_instance(row), code, comment, "")
                if change is None:
                    key = (workflow.code, state, _reason_key(problem))
                    counts[key] = counts.get(key, 0) + 1
    return [Refusal(n, reason, workflow_code, state) for (workflow_code, state, reason), n
            in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][2]))]


class _Workflows:
    """Compiled workflow versions looked up once per chunk."""

    def __init__(self) -> None:
        self.found: dict[tuple[int, int], CompiledWorkflow | None] = {}

    def get(self, row: InstanceRow) -> CompiledWorkflow | None:
        key = (row.workflow_id, row.workflow_version)
        if key not in self.found:
            self.found[key] = compiled_workflow(*key)
        return self.found[key]


def _plain(workflow: CompiledWorkflow, row: InstanceRow, change: Move) -> bool:
    """Whether a move sets the same columns for every instance of its group: no transition
    actions (they may change variables or send something) and no captured variable."""
    transition = workflow.transitions.get(change.transition or "") \
        if change.trigger_type != "reset" else None
    return change.data is None and (transition is None or (
        not transition.actions and (change.vars is None or change.vars == row.vars)))


def _move_chunk(ids: list[int], decide: Callable[[CompiledWorkflow, InstanceRow],
                                                 tuple[Move | None, str]],
                moved_hook: Callable[[InstanceRow, str, Move], None] | None = None
                ) -> list[tuple[int, str]]:
    """Move each instance of a chunk as `decide` says, as a person's fire or reset would;
    returns the refused ids, with why. `moved_hook(row, state before, move)` is called for
    each instance moved (a reset audits it there).

    Decided in memory per instance. Written per chunk: moves that set the same columns for a
    whole group (same version, target and transition; no actions, no captures) are one
    compare-and-set UPDATE per group — `(id, version) IN (...)`, so an instance that moved
    meanwhile is refused, not moved blindly; any other move goes through `firing.move()`
    itself. History and ledger rows are inserted once for the chunk. No row locks are taken.
    """
    conn = db.session.connection()
    rows = [row_to_instance(r) for r in conn.execute(
        select(*INSTANCE_COLUMNS).where(INSTANCE.c.id.in_(ids)).order_by(INSTANCE.c.id))]
    found = {row.id for row in rows}
    refused = [(i, f"instance {i} does not exist") for i in ids if i not in found]
    # Events received before this change and still waiting are applied first, as for one row.
    waiting = pending_before(conn, rows)
    workflows = _Workflows()
    now = utcnow()
    history: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    groups: dict[tuple[int, int, str, str | None, str], list[tuple[InstanceRow, Move]]] = {}
    for row in rows:
        workflow = workflows.get(row)
        if workflow is None:
            refused.append((row.id, f"instance {row.id}: its workflow no longer exists"))
            continue
        change, problem = decide(workflow, row)
        if change is None:
            refused.append((row.id, problem))
            continue
        key = (row.integration_id, row.record_key, None) if row.record_key is not None \
            else (row.integration_id, None, row.run_id)
        if key in waiting:
            refused.append((row.id, "events received earlier are still waiting to be applied "
                                    "to this instance; run the action again for it later"))
            continue
        if _plain(workflow, row, change):
            groups.setdefault((row.workflow_id, row.workflow_version, change.to_state,
                               change.transition, change.trigger_type), []).append((row, change))
            continue
        before = row.state
        if not move(conn, workflow, row, change, now, history):
            refused.append((row.id, "the instance changed meanwhile"))
            continue
        ledger.append(instance_service.ledger_of(row, change, before, now))
        if moved_hook is not None:
            moved_hook(row, before, change)
    for (workflow_id, version, _, transition, trigger), members in groups.items():
        workflow = workflows.found[(workflow_id, version)]
        assert workflow is not None  # groups hold only instances whose workflow was found
        # The columns move() sets (a plain move sets the same ones for every member: no
        # variables, no data); the version moves on by one, guarded per row.
        first_row, first_change = members[0]
        values = {key: value for key, value in
                  plan_move(workflow, first_row, first_change, now).values.items()
                  if key not in ("vars", "data", "version")}
        moved = set(conn.execute(update(INSTANCE).where(
            tuple_(INSTANCE.c.id, INSTANCE.c.version).in_([(r.id, r.version)
                                                           for r, _ in members]))
            .values(**values, version=INSTANCE.c.version + 1)
            .returning(INSTANCE.c.id)).scalars())
        for row, change in members:
            if row.id not in moved:
                refused.append((row.id, "the instance changed meanwhile"))
                continue
            history.append(history_row(row, row.state, change, now))
            ledger.append(instance_service.ledger_of(row, change, row.state, now))
            if moved_hook is not None:
                moved_hook(row, row.state, change)
        if transition is not None and moved:
            tally.note(workflow_id, transition, trigger, now, count=len(moved))
    write_ledger(conn, ledger, history)
    if history:
        conn.execute(insert(HISTORY), history)
    return refused


def _advance(ids: list[int], params: dict[str, Any], actor: str) -> list[tuple[int, str]]:
    return _move_chunk(ids, lambda workflow, row: instance_service.manual_move(
        workflow, row, params["transition"], params["comment"], actor))


def _reset_check(params: dict[str, Any]) -> dict[str, Any]:
    return {"state": _text(params, "state", limit=20).upper(), "note": _text(params, "note")}


def _reset_refusals(filters: InstanceFilters, params: dict[str, Any]) -> list[Refusal]:
    ids = filtered_ids(filters).subquery()
    out: dict[tuple[int, int], Refusal] = {}
    for workflow_id, version, count in db.session.execute(
            select(INSTANCE.c.workflow_id, INSTANCE.c.workflow_version, func.count())
            .where(INSTANCE.c.id.in_(select(ids.c.id)))
            .group_by(INSTANCE.c.workflow_id, INSTANCE.c.workflow_version)):
        workflow = compiled_workflow(workflow_id, version)
        if workflow is None or params["state"] not in workflow.states:
            code = workflow.code if workflow else None
            out[(workflow_id, version)] = Refusal(
                count, f"state {params['state']} is not a state of workflow {code} "
                       f"version {version}", code)
    return list(out.values())


def _reset(ids: list[int], params: dict[str, Any], actor: str) -> list[tuple[int, str]]:
    state, note = params["state"], params["note"]

    def decide(workflow: CompiledWorkflow, row: InstanceRow) -> tuple[Move | None, str]:
        if state not in workflow.states:
            return None, f"state {state!r} is not a state of this workflow"
        return Move(state, None, "reset", actor, notes=note), ""

    def audited(row: InstanceRow, before: str, change: Move) -> None:
        # Each instance reset is audited, as a person's reset is.
        audit.record("reset", "instance", str(row.id),
                     {"from": before, "to": state, "note": note}, who=actor)

    return _move_chunk(ids, decide, audited)


def _delete(ids: list[int], params: dict[str, Any], actor: str) -> list[tuple[int, str]]:
    deleted = set(instance_service.delete_many(ids, actor))
    return [(i, f"instance {i} does not exist") for i in ids if i not in deleted]


def _replay_refusals(filters: event_service.EventFilters, params: dict[str, Any]
                     ) -> list[Refusal]:
    ids = event_service.event_where(select(Event.id), filters).subquery()
    replayable = (EventStatus.SKIPPED.value, EventStatus.FAILED.value)
    return [Refusal(r[1], f"the event is {r[0]}; only skipped or failed events can be "
                          "replayed", status=r[0])
            for r in db.session.execute(
                select(Event.status, func.count()).where(Event.id.in_(select(ids.c.id)))
                .group_by(Event.status)) if r[0] not in replayable]


def _replay(ids: list[int], params: dict[str, Any], actor: str) -> list[tuple[int, str]]:
    return event_service.replay_many(ids, actor)


register_action(BulkAction("advance", "instances", _advance_check, _advance_refusals, _advance))
register_action(BulkAction("reset", "instances", _reset_check, _reset_refusals, _reset))
register_action(BulkAction("delete", "instances", lambda params: {},
                           lambda filters, params: [], _delete))
register_action(BulkAction("replay", "events", lambda params: {}, _replay_refusals, _replay,
                           after_commit=event_service.kick))
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
    """Stop an operation between two chunks; what it did so far stays done."""
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


def _claim_chunk(operation_id: int, cursor: int, last_id: int) -> bool:
    """Move the cursor from `cursor` to `last_id` in the current transaction; False when
    another job of this operation did first (or the operation was cancelled)."""
    return affected(db.session.execute(update(OPERATION).where(
        OPERATION.c.id == operation_id, OPERATION.c.cursor == cursor,
        OPERATION.c.status == OperationStatus.RUNNING.value)
        .values(cursor=last_id))) == 1


def _count(operation_id: int, done: int, refused: list[tuple[int, str]]) -> None:
    """Add a chunk's outcome to the operation (its row is locked by the claim already)."""
    values: dict[Any, Any] = {OPERATION.c.done: OPERATION.c.done + done,
                              OPERATION.c.failed: OPERATION.c.failed + len(refused)}
    if refused:
        errors = db.session.scalar(select(OPERATION.c.errors).where(
            OPERATION.c.id == operation_id)) or []
        room = max(0, MAX_ERRORS - len(errors))
        if room:
            values[OPERATION.c.errors] = [*errors, *({"id": i, "message": m[:300]}
                                                     for i, m in sorted(refused)[:room])]
    db.session.execute(update(OPERATION).where(OPERATION.c.id == operation_id).values(values))


def _one_chunk(operation_id: int, action: BulkAction, params: dict[str, Any], query: Any,
               size: int, actor: str) -> str:
    """Claim and act on the next chunk in one transaction: "done", "empty", "stopped", or
    "taken" (another job claimed it first)."""
    key = query.selected_columns[0]
    for attempt in range(3):
        try:
            cursor, status = db.session.execute(select(OPERATION.c.cursor, OPERATION.c.status)
                                                .where(OPERATION.c.id == operation_id)).one()
            if status != OperationStatus.RUNNING.value:
                db.session.rollback()
                return "stopped"
            ids = list(db.session.scalars(query.where(key > cursor).order_by(key).limit(size)))
            if not ids:
                db.session.rollback()
                return "empty"
            if not _claim_chunk(operation_id, cursor, ids[-1]):
                db.session.rollback()
                return "taken"
            refused = action.apply(ids, params, actor)
            _count(operation_id, len(ids) - len(refused), refused)
            db.session.commit()
            break
        except DBAPIError as error:
            db.session.rollback()
            # A deadlock with another writer of these rows: nothing of the chunk was kept.
            if getattr(error.orig, "sqlstate", None) not in RETRYABLE or attempt == 2:
                raise
    if action.after_commit is not None:
        action.after_commit()
    return "done"


def run(operation_id: int, time_budget: float = 20.0, chunk: int | None = None) -> bool:
    """Work on an operation for up to `time_budget` seconds (at least one chunk); True when it
    has finished (or was cancelled)."""
    # Bounded: a chunk's ids are bound parameters of its statements.
    size = max(1, min(MAX_CHUNK, chunk or int(current_app.config.get("BULK_CHUNK", CHUNK))))
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
    query = _ids(operation.target, filters)
    params = dict(operation.params)
    while True:
        outcome = _one_chunk(operation_id, action, params, query, size, actor)
        if outcome == "empty":
            return _finish(operation_id)
        if outcome == "stopped":
            return True  # cancelled meanwhile
        if time.monotonic() >= deadline:
            return False


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
