"""What an integration card shows about its scheduled triggers: per transition, the instances
waiting, the next due time, the failing timers and the latest error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select

from ..extensions import db
from .schedules import (
    INTEGRATION,
    TIMER,
    WORKFLOW,
    ScheduledTransition,
    scheduled_transitions,
)


@dataclass(frozen=True)
class ScheduleSummary:
    """One scheduled transition as an integration card shows it."""

    workflow: str
    transition: str
    from_state: str
    enabled: bool
    interval_seconds: float
    waiting: int
    next_due: datetime | None
    failing: int
    max_failures: int
    last_error: str
    last_error_at: datetime | None


def summary(integration_id: int, trigger_type: str) -> list[ScheduleSummary]:
    """Per scheduled transition of the integration's workflow (and any with timers here)."""
    stats = {
        (r.workflow_id, r.transition): r for r in db.session.execute(
            select(TIMER.c.workflow_id, TIMER.c.transition, func.count().label("waiting"),
                   func.min(TIMER.c.due_at).label("next_due"),
                   func.sum(case((TIMER.c.failures > 0, 1), else_=0)).label("failing"),
                   func.max(TIMER.c.failures).label("max_failures"))
            .where(TIMER.c.integration_id == integration_id,
                   TIMER.c.trigger_type == trigger_type)
            .group_by(TIMER.c.workflow_id, TIMER.c.transition))}
    workflow_id = db.session.scalar(select(INTEGRATION.c.workflow_id)
                                    .where(INTEGRATION.c.id == integration_id))
    workflow_ids = {w for w, _ in stats} | ({workflow_id} if workflow_id else set())
    # Timers are per (workflow, transition); the definition shown is the newest version's that
    # has the transition (older instances may poll as an older version says).
    transitions: dict[tuple[int, str], ScheduledTransition] = {}
    for (w, _version, c), found in sorted(
            scheduled_transitions(trigger_type, workflow_ids).items()):
        transitions[(w, c)] = found
    codes = dict(db.session.execute(select(WORKFLOW.c.id, WORKFLOW.c.code)
                                    .where(WORKFLOW.c.id.in_(list(workflow_ids)))).all())
    out = []
    for key in sorted(set(transitions) | set(stats), key=lambda k: (codes.get(k[0], ""), k[1])):
        t, s = transitions.get(key), stats.get(key)
        last = None
        if s is not None and s.failing:
            last = db.session.execute(
                select(TIMER.c.last_error, TIMER.c.last_run_at)
                .where(TIMER.c.integration_id == integration_id,
                       TIMER.c.workflow_id == key[0], TIMER.c.transition == key[1],
                       TIMER.c.failures > 0)
                .order_by(TIMER.c.last_run_at.desc()).limit(1)).first()
        out.append(ScheduleSummary(
            workflow=codes.get(key[0], "?"), transition=key[1],
            from_state=t.from_state if t else "", enabled=bool(t and t.enabled),
            interval_seconds=t.interval if t else 0.0,
            waiting=int(s.waiting) if s else 0, next_due=s.next_due if s else None,
            failing=int(s.failing or 0) if s else 0,
            max_failures=int(s.max_failures or 0) if s else 0,
            last_error=last.last_error if last else "",
            last_error_at=last.last_run_at if last else None))
    db.session.commit()
    return out
