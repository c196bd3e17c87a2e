"""The timeout sweep: fire the On Timeout Transition of every instance whose timer is due.

Timers are the `timeout_due_at` column (indexed only where set). A batch of due instances is
locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so sweeps on many hosts share the work, and
moved with the same compare-and-set as every other change (still at the version it was read
at), so an instance that someone else moved (or whose timer restarted) is left alone and running
the sweep twice at once fires nothing twice. Instances of one (workflow, version, state) whose
On Timeout Transition has no actions move in one set-based UPDATE (a timeout storm of 100,000
instances is a few hundred statements, not 100,000); a transition with actions is planned per
instance (`firing.plan_move`, which runs its actions' plugin code) before the batch writes, then
written through `firing.write_move` with its outbox rows. Each timeout is written to the
events ledger (source `timeout`) with a history row pointing at it; on PostgreSQL a group's
update, ledger rows and history rows are one statement. An instance with an event received
before its timer fell due still waiting in the inbox is not picked (one NOT EXISTS per due row,
on ix_event_pending_key / ix_event_run_id) and left for a later sweep, so the timeout applies
after that event.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from ..engine import CompiledWorkflow, timeout_due, timeout_transition
from ..extensions import db
from ..models import EventStatus, UTCDateTime, Workflow, utcnow
from ..shutdown import stopping
from ..yielding import engine_took
from . import tally
from .events import partition_of
from .firing import (
    EVENT,
    HISTORY,
    INSTANCE,
    INSTANCE_COLUMNS,
    InstanceRow,
    Move,
    PlannedMove,
    compiled_workflow,
    ledger_row,
    plan_move,
    row_to_instance,
    write_ledger,
    write_move,
)

SWEEP_ACTOR = "sweep"
TIMEOUT = "timeout"
WORKFLOW = Workflow.__table__


def _not_waiting() -> list[Any]:
    """Conditions: no event received before the instance's timer fell due is still pending.

    Per Record instances receive the events of their record key, Per Run instances (no record
    key) those of their run; ix_event_pending_key and ix_event_run_id answer each per instance.
    """
    by_key = select(EVENT.c.id).where(
        EVENT.c.status == EventStatus.PENDING.value,
        EVENT.c.integration_id == INSTANCE.c.integration_id,
        EVENT.c.record_key == INSTANCE.c.record_key,
        EVENT.c.received_at <= INSTANCE.c.timeout_due_at)
    by_run = select(EVENT.c.id).where(
        INSTANCE.c.record_key.is_(None),
        EVENT.c.status == EventStatus.PENDING.value,
        EVENT.c.integration_id == INSTANCE.c.integration_id,
        EVENT.c.run_id == INSTANCE.c.run_id,
        EVENT.c.received_at <= INSTANCE.c.timeout_due_at)
    # Two NOT EXISTS (anti-joins), not one EXISTS … OR …: the OR form is planned as a subplan
    # per row, costed high enough with stale statistics that PostgreSQL JIT-compiles the
    # sweep with nothing due (57 ms instead of 1).
    return [~by_key.exists(), ~by_run.exists()]


def _due(now: datetime, limit: int) -> list[Any]:
    """Lock the next due instances; those with events still waiting from before their timer
    fell due are left for a later sweep, so the timeout applies after those events."""
    query = (
        select(*INSTANCE_COLUMNS, INSTANCE.c.timeout_due_at)
        .join(WORKFLOW, WORKFLOW.c.id == INSTANCE.c.workflow_id)
        .where(INSTANCE.c.timeout_due_at <= now, WORKFLOW.c.enabled.is_(True),
               *_not_waiting())
        .order_by(INSTANCE.c.timeout_due_at)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=INSTANCE, skip_locked=True)
    return list(db.session.execute(query))


@dataclass
class _Planned:
    """The timeout of one instance whose transition has actions, decided but not yet written."""

    row: Any
    instance: InstanceRow
    change: Move
    planned: PlannedMove


def _plan_one(workflow: CompiledWorkflow, row: Any, now: datetime) -> _Planned | None:
    """Decide the On Timeout Transition of one instance, writing nothing (see `plan_move`)."""
    instance = row_to_instance(row)
    state = instance.state
    info = workflow.states.get(state)
    transition, _ = timeout_transition(workflow, state)
    if transition is None:
        return None
    hours = f"{info.timeout_hours:g}" if info and info.timeout_hours else "?"
    change = Move(transition.to_state, transition.code, TIMEOUT, SWEEP_ACTOR,
                  notes=f"timed out after {hours} h in {state}")
    return _Planned(row, instance, change, plan_move(workflow, instance, change, now))


def _write_one(workflow: CompiledWorkflow, item: _Planned, now: datetime,
               history: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> bool:
    """Write a planned timeout through `write_move`, which writes the outbox rows of its
    actions; True when it moved."""
    instance, change = item.instance, item.change
    state = instance.state
    mine: list[dict[str, Any]] = []
    if not write_move(db.session.connection(), instance, change, item.planned, now, mine):
        return False
    ledger.append(ledger_row(instance, TIMEOUT, change.transition or "",
                             _payload(workflow.states.get(state), item.row),
                             f"fired {change.transition}: {state} → {change.to_state}", now))
    history.extend(mine)
    return True


@dataclass
class _GroupChange:
    """What a timeout does to every instance of one (workflow, version, state) group."""

    values: dict[str, Any]      # the instance columns it sets (besides the version)
    to_state: str
    transition: str | None      # for history: the transition fired, or the one configured
    event_type: str             # the ledger row's type
    result: str                 # the ledger row's result
    notes: str                  # the history row's notes


def _fire_group(workflow: CompiledWorkflow, state: str, rows: list[Any], now: datetime,
                history: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> tuple[int, int]:
    """Move the due instances of one (workflow, version, state) whose transition has no actions
    in one UPDATE guarded by each instance's version (the compare-and-set of `move()`).

    Returns (instances moved, instances handled: moved or their timer stopped).
    """
    conn = db.session.connection()
    info = workflow.states.get(state)
    code = info.on_timeout_transition if info else None
    transition, why = timeout_transition(workflow, state)
    if transition is None:
        # Leave the instances where they are, say why once, and stop their timers.
        change = _GroupChange({"timeout_due_at": None}, state, code, code or "", why, why)
    else:
        target = workflow.states[transition.to_state]
        hours = f"{info.timeout_hours:g}" if info and info.timeout_hours else "?"
        change = _GroupChange(
            {"state": target.code, "active": not target.is_final, "entered_state_at": now,
             "timeout_due_at": timeout_due(now, target), "last_trigger": TIMEOUT,
             "last_transition": transition.code,
             "completed_at": now if target.is_final else None},
            target.code, transition.code, transition.code,
            f"fired {transition.code}: {state} → {target.code}",
            f"timed out after {hours} h in {state}")
    if conn.dialect.name == "postgresql":
        moved = _apply_in_one_statement(conn, info, rows, change, now)
    else:
        moved = _apply(conn, info, rows, change, now, history, ledger)
    if transition is None:
        return 0, len(moved)
    if moved:
        tally.note(rows[0].workflow_id, transition.code, TIMEOUT, now, len(moved))
    return len(moved), len(moved)


def _apply(conn: Connection, info: Any, rows: list[Any], change: _GroupChange, now: datetime,
           history: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> list[int]:
    """Update the group; its ledger and history rows go to `ledger` and `history`."""
    by_id = {row.id: row for row in rows}
    guard = tuple_(INSTANCE.c.id, INSTANCE.c.version).in_([(r.id, r.version) for r in rows])
    moved = list(conn.execute(
        update(INSTANCE).where(guard)
        .values(**change.values, version=INSTANCE.c.version + 1)
        .returning(INSTANCE.c.id)).scalars())
    for instance_id in moved:
        row = by_id[instance_id]
        history.append({"instance_id": instance_id, "at": now, "from_state": row.state,
                        "to_state": change.to_state, "transition": change.transition,
                        "trigger_type": TIMEOUT, "actor": SWEEP_ACTOR, "event_id": None,
                        "notes": change.notes})
        ledger.append(ledger_row(row_to_instance(row), TIMEOUT, change.event_type,
                                 _payload(info, row), change.result, now))
    return moved


def _apply_in_one_statement(conn: Connection, info: Any, rows: list[Any],
                            change: _GroupChange, now: datetime) -> list[int]:
    """PostgreSQL: update the group, insert its ledger rows and the history rows that point at
    them in one statement (data-modifying CTEs); the due rows travel as arrays (four parameters,
    not thousands), so neither the client nor the server parses a statement per row."""
    due = func.unnest(
        cast(bindparam("ids"), ARRAY(BigInteger)), cast(bindparam("versions"), ARRAY(Integer)),
        cast(bindparam("parts"), ARRAY(Integer)), cast(bindparam("payloads"), ARRAY(Text)),
    ).table_valued("id", "version", "part", "payload").render_derived(name="due")
    moved = (update(INSTANCE)
             .where(INSTANCE.c.id == due.c.id, INSTANCE.c.version == due.c.version)
             .values(**change.values, version=INSTANCE.c.version + 1)
             .returning(INSTANCE.c.id, INSTANCE.c.integration_id, INSTANCE.c.record_key,
                        INSTANCE.c.run_id, due.c.part, due.c.payload)
             .cte("moved"))
    at = literal(now, UTCDateTime())
    # One dedupe key per row, unique like ledger_row's: this call's token and the instance id.
    dedupe = literal(f"{TIMEOUT}:{uuid.uuid4().hex}:", String()).concat(
        cast(moved.c.id, String()))
    ledger = (insert(EVENT).from_select(
        ["integration_id", "source", "type", "record_key", "run_id", "payload", "dedupe_key",
         "partition", "received_at", "status", "result", "instance_id", "processed_at",
         "attempts"],
        select(moved.c.integration_id, literal(TIMEOUT, String()),
               literal(change.event_type[:100], String()), moved.c.record_key, moved.c.run_id,
               cast(moved.c.payload, JSON), dedupe, moved.c.part, at,
               literal(EventStatus.PROCESSED.value, String()),
               literal(change.result[:1000], Text()), moved.c.id, at, literal(1, Integer())))
        .returning(EVENT.c.id, EVENT.c.instance_id).cte("ledger"))
    statement = insert(HISTORY).from_select(
        ["instance_id", "at", "from_state", "to_state", "transition", "trigger_type", "actor",
         "event_id", "notes"],
        select(ledger.c.instance_id, at, literal(rows[0].state, String()),
               literal(change.to_state, String()), literal(change.transition, String()),
               literal(TIMEOUT, String()), literal(SWEEP_ACTOR, String()), ledger.c.id,
               literal(change.notes, Text()))).returning(HISTORY.c.instance_id)
    params = {
        "ids": [r.id for r in rows], "versions": [r.version for r in rows],
        "parts": [partition_of(r.integration_id, r.record_key, r.run_id) for r in rows],
        "payloads": [json.dumps(_payload(info, r)) for r in rows]}
    return list(conn.execute(statement, params).scalars())


def _payload(info: Any, row: Any) -> dict[str, Any]:
    """What the ledger shows of a timeout: the state, when it fell due, after how long."""
    return {"state": row.state, "due_at": row.timeout_due_at.isoformat(),
            "timeout_hours": info.timeout_hours if info else None}


def fire_due_timeouts(now: datetime | None = None, batch_size: int = 2000,
                      time_budget: float = 20.0) -> int:
    """Fire due timeouts in batches (one transaction each); return how many instances moved."""
    deadline = time.monotonic() + time_budget
    fired = 0
    while time.monotonic() < deadline:
        if stopping():
            break  # SIGTERM: the batches so far are committed; the next worker fires the rest
        moment = now or utcnow()
        rows = _due(moment, batch_size)
        if not rows:
            db.session.commit()
            break
        engine_took({"timeout": len(rows)})  # polls here pause while it fires (wfapp.yielding)
        history: list[dict[str, Any]] = []
        ledger: list[dict[str, Any]] = []
        workflows: dict[tuple[int, int], CompiledWorkflow | None] = {}
        groups: dict[tuple[int, int, str], list[Any]] = defaultdict(list)
        # Timeouts with actions are decided before anything is written: deciding runs the
        # actions' plugin code, and on SQLite the first write takes the database's one lock.
        planned: list[tuple[CompiledWorkflow, _Planned]] = []
        handled = 0
        for row in rows:
            # Each instance times out by the definition of the version it follows.
            version_key = (row.workflow_id, row.workflow_version)
            if version_key not in workflows:
                workflows[version_key] = compiled_workflow(*version_key)
            workflow = workflows[version_key]
            if workflow is None:
                continue
            transition, _ = timeout_transition(workflow, row.state)
            if transition is not None and transition.actions:
                item = _plan_one(workflow, row, moment)
                if item is not None:
                    planned.append((workflow, item))
            else:
                groups[(row.workflow_id, row.workflow_version, row.state)].append(row)
        for workflow, item in planned:
            moved = _write_one(workflow, item, moment, history, ledger)
            fired += moved
            handled += moved
        for (workflow_id, version, state), members in groups.items():
            group_workflow = workflows[(workflow_id, version)]
            if group_workflow is not None:
                moved_count, handled_count = _fire_group(group_workflow, state, members, moment,
                                                         history, ledger)
                fired += moved_count
                handled += handled_count
        # The ledger and history rows not written by a group's statement (timeouts with
        # actions; every group on SQLite): one statement for each kind.
        write_ledger(db.session.connection(), ledger, history)
        if history:
            db.session.connection().execute(insert(HISTORY), history)
        db.session.commit()
        if len(rows) < batch_size or handled == 0:
            break  # the last batch, or one whose instances nothing could move
    return fired


def next_due() -> datetime | None:
    """When the next timer falls due (for pages that show it)."""
    return db.session.scalar(select(INSTANCE.c.timeout_due_at)
                             .where(INSTANCE.c.timeout_due_at.is_not(None))
                             .order_by(INSTANCE.c.timeout_due_at).limit(1))
