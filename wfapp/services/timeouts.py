"""The timeout sweep: fire the On Timeout Transition of every instance whose timer is due.

Timers are the `timeout_due_at` column (indexed only where set). A batch of due instances is
locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so sweeps on many hosts share the work, and
moved with the same compare-and-set as every other change (still at the version it was read
at), so an instance that someone else moved (or whose timer restarted) is left alone and running
the sweep twice at once fires nothing twice. Instances of one (workflow, version, state) whose
On Timeout Transition has no actions move in one set-based UPDATE (a timeout storm of 100,000
instances is a few hundred statements, not 100,000); a transition with actions goes through
`firing.move()` per instance, which writes its outbox rows. Each timeout is written to the
events ledger (source `timeout`); an instance with events received before its timer fell due
still waiting in the inbox is left for a later sweep, so the timeout is applied after them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_, update

from ..engine import CompiledWorkflow, timeout_due, timeout_transition
from ..extensions import affected, db
from ..models import Workflow, utcnow
from ..shutdown import stopping
from . import tally
from .firing import (
    HISTORY,
    INSTANCE,
    INSTANCE_COLUMNS,
    Move,
    compiled_workflow,
    history_row,
    ledger_row,
    move,
    pending_before,
    row_to_instance,
    write_ledger,
)

SWEEP_ACTOR = "sweep"
TIMEOUT = "timeout"
WORKFLOW = Workflow.__table__


def _due(now: datetime, limit: int) -> list[Any]:
    query = (
        select(*INSTANCE_COLUMNS, INSTANCE.c.timeout_due_at)
        .join(WORKFLOW, WORKFLOW.c.id == INSTANCE.c.workflow_id)
        .where(INSTANCE.c.timeout_due_at <= now, WORKFLOW.c.enabled.is_(True))
        .order_by(INSTANCE.c.timeout_due_at)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=INSTANCE, skip_locked=True)
    return list(db.session.execute(query))


def _fire_one(workflow: CompiledWorkflow, row: Any, now: datetime,
              history: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> bool:
    """Fire one instance's On Timeout Transition (or record why not); True when it moved."""
    conn = db.session.connection()
    instance = row_to_instance(row)
    state = instance.state
    info = workflow.states.get(state)
    code = info.on_timeout_transition if info else None
    transition, why = timeout_transition(workflow, state)
    payload = {"state": state, "due_at": row.timeout_due_at.isoformat(),
               "timeout_hours": info.timeout_hours if info else None}
    if transition is None:
        # Leave the instance where it is, say why once, and stop its timer (guarded like a move).
        note = why
        stopped = affected(conn.execute(
            update(INSTANCE).where(INSTANCE.c.id == instance.id,
                                   INSTANCE.c.version == instance.version)
            .values(timeout_due_at=None, version=INSTANCE.c.version + 1)))
        if stopped == 1:
            stop = [{"instance_id": instance.id, "at": now, "from_state": state,
                     "to_state": state, "transition": code, "trigger_type": TIMEOUT,
                     "actor": SWEEP_ACTOR, "event_id": None, "notes": note}]
            ledger.append(ledger_row(instance, TIMEOUT, code or "", payload, note, now))
            history.extend(stop)
        return False
    hours = f"{info.timeout_hours:g}" if info and info.timeout_hours else "?"
    note = f"timed out after {hours} h in {state}"
    mine: list[dict[str, Any]] = []
    change = Move(transition.to_state, transition.code, TIMEOUT, SWEEP_ACTOR, notes=note)
    if not move(conn, workflow, instance, change, now, mine):
        return False
    ledger.append(ledger_row(instance, TIMEOUT, transition.code, payload,
                             f"fired {transition.code}: {state} → {transition.to_state}", now))
    history.extend(mine)
    return True


def _fire_group(workflow: CompiledWorkflow, state: str, rows: list[Any], now: datetime,
                history: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> int:
    """Move the due instances of one (workflow, version, state) whose transition has no actions
    in one UPDATE guarded by each instance's version (the compare-and-set of `move()`)."""
    conn = db.session.connection()
    info = workflow.states.get(state)
    code = info.on_timeout_transition if info else None
    transition, why = timeout_transition(workflow, state)
    by_id = {row.id: row for row in rows}
    guard = tuple_(INSTANCE.c.id, INSTANCE.c.version).in_([(r.id, r.version) for r in rows])
    if transition is None:
        # Leave the instances where they are, say why once, and stop their timers.
        stopped = conn.execute(update(INSTANCE).where(guard)
                               .values(timeout_due_at=None, version=INSTANCE.c.version + 1)
                               .returning(INSTANCE.c.id)).scalars().all()
        for instance_id in stopped:
            row = by_id[instance_id]
            history.append({"instance_id": instance_id, "at": now, "from_state": state,
                            "to_state": state, "transition": code, "trigger_type": TIMEOUT,
                            "actor": SWEEP_ACTOR, "event_id": None, "notes": why})
            ledger.append(ledger_row(row_to_instance(row), TIMEOUT, code or "",
                                     _payload(info, row), why, now))
        return 0
    target = workflow.states[transition.to_state]
    moved = conn.execute(
        update(INSTANCE).where(guard).values(
            state=target.code, active=not target.is_final, entered_state_at=now,
            timeout_due_at=timeout_due(now, target), last_trigger=TIMEOUT,
            last_transition=transition.code, version=INSTANCE.c.version + 1,
            completed_at=now if target.is_final else None)
        .returning(INSTANCE.c.id)).scalars().all()
    hours = f"{info.timeout_hours:g}" if info and info.timeout_hours else "?"
    change = Move(target.code, transition.code, TIMEOUT, SWEEP_ACTOR,
                  notes=f"timed out after {hours} h in {state}")
    result = f"fired {transition.code}: {state} → {target.code}"
    for instance_id in moved:
        instance = row_to_instance(by_id[instance_id])
        history.append(history_row(instance, state, change, now))
        ledger.append(ledger_row(instance, TIMEOUT, transition.code,
                                 _payload(info, by_id[instance_id]), result, now))
    if moved:
        tally.note(rows[0].workflow_id, transition.code, TIMEOUT, now, len(moved))
    return len(moved)


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
        waiting = pending_before(db.session.connection(), rows)
        history: list[dict[str, Any]] = []
        ledger: list[dict[str, Any]] = []
        workflows: dict[tuple[int, int], CompiledWorkflow | None] = {}
        groups: dict[tuple[int, int, str], list[Any]] = defaultdict(list)
        deferred = 0
        for row in rows:
            key = (row.integration_id, row.record_key, None) if row.record_key is not None \
                else (row.integration_id, None, row.run_id)
            oldest = waiting.get(key)
            if oldest is not None and oldest <= row.timeout_due_at:
                deferred += 1  # events from before the timer fell due go first
                continue
            # Each instance times out by the definition of the version it follows.
            version_key = (row.workflow_id, row.workflow_version)
            if version_key not in workflows:
                workflows[version_key] = compiled_workflow(*version_key)
            workflow = workflows[version_key]
            if workflow is None:
                continue
            transition, _ = timeout_transition(workflow, row.state)
            if transition is not None and transition.actions:
                fired += _fire_one(workflow, row, moment, history, ledger)
            else:
                groups[(row.workflow_id, row.workflow_version, row.state)].append(row)
        for (workflow_id, version, state), members in groups.items():
            group_workflow = workflows[(workflow_id, version)]
            if group_workflow is not None:
                fired += _fire_group(group_workflow, state, members, moment, history, ledger)
        # One statement for the batch's ledger rows, then one for its history rows.
        write_ledger(db.session.connection(), ledger, history)
        if history:
            db.session.connection().execute(insert(HISTORY), history)
        db.session.commit()
        if len(rows) < batch_size or deferred == len(rows):
            break
    return fired


def next_due() -> datetime | None:
    """When the next timer falls due (for pages that show it)."""
    return db.session.scalar(select(INSTANCE.c.timeout_due_at)
                             .where(INSTANCE.c.timeout_due_at.is_not(None))
                             .order_by(INSTANCE.c.timeout_due_at).limit(1))
