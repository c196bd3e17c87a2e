"""The timeout sweep: fire the On Timeout Transition of every instance whose timer is due.

Timers are the `timeout_due_at` column (indexed only where set). A batch of due instances is
locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so sweeps on many hosts share the work, and
moved with one set-based UPDATE per (workflow, version, state) whose guard — still in that
state and version and still due — is the compare-and-set: an instance that someone else moved
(or whose timer restarted) is left alone, so running the sweep twice at once fires nothing twice.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from ..engine import CompiledWorkflow, timeout_due, timeout_transition
from ..extensions import db
from ..models import Workflow, utcnow
from ..shutdown import stopping
from . import tally
from .firing import HISTORY, INSTANCE, compiled_workflow

SWEEP_ACTOR = "sweep"
WORKFLOW = Workflow.__table__


def _due(now: datetime, limit: int) -> list[Any]:
    query = (
        select(INSTANCE.c.id, INSTANCE.c.workflow_id, INSTANCE.c.workflow_version,
               INSTANCE.c.state, INSTANCE.c.version)
        .join(WORKFLOW, WORKFLOW.c.id == INSTANCE.c.workflow_id)
        .where(INSTANCE.c.timeout_due_at <= now, WORKFLOW.c.enabled.is_(True))
        .order_by(INSTANCE.c.timeout_due_at)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=INSTANCE, skip_locked=True)
    return list(db.session.execute(query))


def _fire_group(workflow: CompiledWorkflow, state: str, rows: list[Any], now: datetime,
                history: list[dict[str, Any]]) -> int:
    """Move every due instance of one (workflow, version, state) in one guarded UPDATE."""
    info = workflow.states.get(state)
    code = info.on_timeout_transition if info else None
    transition, note = timeout_transition(workflow, state)
    versions = {row.id: row.version for row in rows}
    # Still on this version too: a migration that moved it meanwhile decides by another.
    guard = [INSTANCE.c.id.in_(list(versions)), INSTANCE.c.state == state,
             INSTANCE.c.workflow_version == workflow.version, INSTANCE.c.timeout_due_at <= now]
    conn = db.session.connection()
    if transition is None:
        # Leave the instances where they are, say why once, and stop their timers.
        moved = conn.execute(update(INSTANCE).where(*guard)
                             .values(timeout_due_at=None, version=INSTANCE.c.version + 1)
                             .returning(INSTANCE.c.id)).scalars().all()
        history.extend({"instance_id": i, "at": now, "from_state": state, "to_state": state,
                        "transition": code, "trigger_type": "timeout", "actor": SWEEP_ACTOR,
                        "event_id": None, "notes": note} for i in moved)
        return 0
    target = workflow.states[transition.to_state]
    moved = conn.execute(
        update(INSTANCE).where(*guard).values(
            state=target.code, active=not target.is_final, entered_state_at=now,
            timeout_due_at=timeout_due(now, target), last_trigger="timeout",
            last_transition=transition.code, version=INSTANCE.c.version + 1,
            completed_at=now if target.is_final else None)
        .returning(INSTANCE.c.id)).scalars().all()
    if moved:
        tally.note(rows[0].workflow_id, transition.code, "timeout", now, len(moved))
    hours = f"{info.timeout_hours:g}" if info and info.timeout_hours else "?"
    note = f"timed out after {hours} h in {state}"
    history.extend({"instance_id": i, "at": now, "from_state": state,
                    "to_state": target.code, "transition": transition.code,
                    "trigger_type": "timeout", "actor": SWEEP_ACTOR, "event_id": None,
                    "notes": note} for i in moved)
    return len(moved)


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
        # Each instance times out by the definition of the version it follows.
        groups: dict[tuple[int, int, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row.workflow_id, row.workflow_version, row.state)].append(row)
        history: list[dict[str, Any]] = []
        workflows = {key: compiled_workflow(*key) for key in {(w, v) for w, v, _ in groups}}
        for (workflow_id, version, state), members in groups.items():
            workflow = workflows[(workflow_id, version)]
            if workflow is not None:
                fired += _fire_group(workflow, state, members, moment, history)
        if history:
            db.session.connection().execute(insert(HISTORY), history)
        db.session.commit()
        if len(rows) < batch_size:
            break
    return fired


def next_due() -> datetime | None:
    """When the next timer falls due (for pages that show it)."""
    return db.session.scalar(select(INSTANCE.c.timeout_due_at)
                             .where(INSTANCE.c.timeout_due_at.is_not(None))
                             .order_by(INSTANCE.c.timeout_due_at).limit(1))
