"""The timeout sweep: fire the On Timeout Transition of every instance whose timer is due.

Timers are the `timeout_due_at` column (indexed only where set). Batches are locked with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so sweeps on many hosts share the work; everywhere the
compare-and-set in `move()` makes a second sweep of the same instance fire nothing.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from ..extensions import db
from ..models import Workflow, utcnow
from .firing import (
    HISTORY,
    INSTANCE,
    INSTANCE_COLUMNS,
    Move,
    compiled_workflow,
    move,
    row_to_instance,
)

SWEEP_ACTOR = "sweep"
WORKFLOW = Workflow.__table__


def _due(now: datetime, limit: int) -> list[Any]:
    query = (
        select(*INSTANCE_COLUMNS)
        .join(WORKFLOW, WORKFLOW.c.id == INSTANCE.c.workflow_id)
        .where(INSTANCE.c.timeout_due_at <= now, WORKFLOW.c.enabled.is_(True))
        .order_by(INSTANCE.c.timeout_due_at)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=INSTANCE, skip_locked=True)
    return list(db.session.execute(query))


def fire_due_timeouts(now: datetime | None = None, batch_size: int = 1000,
                      time_budget: float = 20.0) -> int:
    """Fire due timeouts in batches (one transaction each); return how many instances moved."""
    deadline = time.monotonic() + time_budget
    fired = 0
    while time.monotonic() < deadline:
        moment = now or utcnow()
        rows = _due(moment, batch_size)
        if not rows:
            db.session.commit()
            break
        conn = db.session.connection()
        history: list[dict[str, Any]] = []
        for row in rows:
            instance = row_to_instance(row)
            workflow = compiled_workflow(instance.workflow_id)
            state = workflow.states.get(instance.state) if workflow else None
            code = state.on_timeout_transition if state else None
            transition = workflow.transitions.get(code) if workflow and code else None
            if transition is None or not transition.enabled:
                # Leave the instance where it is, say why once, and stop the timer.
                note = "timeout transition disabled" if transition is not None else \
                    f"state {instance.state} has no On Timeout Transition any more"
                result = conn.execute(
                    update(INSTANCE).where(INSTANCE.c.id == instance.id,
                                           INSTANCE.c.version == instance.version)
                    .values(timeout_due_at=None, version=instance.version + 1))
                if result.rowcount == 1:
                    history.append({"instance_id": instance.id, "at": moment,
                                    "from_state": instance.state, "to_state": instance.state,
                                    "transition": code, "trigger_type": "timeout",
                                    "actor": SWEEP_ACTOR, "event_id": None, "notes": note})
                continue
            hours = f"{state.timeout_hours:g}" if state and state.timeout_hours else "?"
            if move(conn, workflow, instance,
                    Move(transition.to_state, transition.code, "timeout", SWEEP_ACTOR,
                         notes=f"timed out after {hours} h in {instance.state}"),
                    moment, history):
                fired += 1
        if history:
            conn.execute(insert(HISTORY), history)
        db.session.commit()
        if len(rows) < batch_size:
            break
    return fired


def next_due() -> datetime | None:
    """When the next timer falls due (for pages that show it)."""
    return db.session.scalar(select(INSTANCE.c.timeout_due_at)
                             .where(INSTANCE.c.timeout_due_at.is_not(None))
                             .order_by(INSTANCE.c.timeout_due_at).limit(1))
