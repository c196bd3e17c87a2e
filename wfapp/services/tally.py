"""The transition tally: per-edge counts kept with the moves, for the diagram and the metrics.

A move notes what it fired in the session (`note`); just before that session commits, the
notes become rows of `transition_tally` in the same transaction, one per (workflow,
transition, trigger type, day). A rolled-back transaction drops its notes with it. Rows are
only ever appended by the hot path (no row every worker updates), and `compact()` rolls up
finished days, so reading the last seven days is a small indexed scan, never the history.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session

from ..extensions import db
from ..models import TransitionTally, Workflow, utcnow
from .rowsets import insert_rows

TALLY = TransitionTally.__table__
KEY = "wfapp_tally"


def day_of(moment: datetime) -> datetime:
    """Midnight UTC of the day a moment falls in."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def note(workflow_id: int, transition: str, trigger_type: str, at: datetime,
         count: int = 1) -> None:
    """Count a fired transition in the current transaction (written when it commits)."""
    tally: Counter[tuple[int, str, str, datetime]] = db.session.info.setdefault(KEY, Counter())
    tally[(workflow_id, transition, trigger_type, day_of(at))] += count


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    tally = session.info.pop(KEY, None)
    if tally:
        insert_rows(session.connection(), TALLY, [
            {"workflow_id": wid, "transition": code, "trigger_type": trigger, "day": day,
             "count": count} for (wid, code, trigger, day), count in tally.items()])


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(KEY, None)


def edge_counts(workflow_id: int, days: int = 7) -> dict[str, int]:
    """How often each transition of a workflow fired in the last `days` days (today included)."""
    since = day_of(utcnow()) - timedelta(days=days - 1)
    rows = db.session.execute(
        select(TALLY.c.transition, func.sum(TALLY.c.count))
        .where(TALLY.c.workflow_id == workflow_id, TALLY.c.day >= since)
        .group_by(TALLY.c.transition))
    return {code: int(total) for code, total in rows}


def totals() -> list[tuple[str, str, str, int]]:
    """(workflow code, transition, trigger type, count) since the tally began, for metrics."""
    rows = db.session.execute(
        select(Workflow.code, TALLY.c.transition, TALLY.c.trigger_type, func.sum(TALLY.c.count))
        .join(Workflow, Workflow.id == TALLY.c.workflow_id)
        .group_by(Workflow.code, TALLY.c.transition, TALLY.c.trigger_type))
    return [(w, t, k, int(c)) for w, t, k, c in rows]


def compact(before: datetime | None = None) -> int:
    """Roll up the rows of finished days into one per key and day; commits; return rows removed."""
    cutoff = day_of(before or utcnow())
    key = (TALLY.c.workflow_id, TALLY.c.transition, TALLY.c.trigger_type, TALLY.c.day)
    groups = db.session.execute(
        select(*key, func.sum(TALLY.c.count), func.count(), func.max(TALLY.c.id))
        .where(TALLY.c.day < cutoff).group_by(*key)
        .having(func.count() > 1)).all()
    removed = 0
    for wid, code, trigger, day, total, rows, last in groups:
        # Keep the newest row with the sum, delete the others: one statement each, one commit.
        match = [TALLY.c.workflow_id == wid, TALLY.c.transition == code,
                 TALLY.c.trigger_type == trigger, TALLY.c.day == day, TALLY.c.id <= last]
        db.session.execute(delete(TALLY).where(*match, TALLY.c.id != last))
        db.session.execute(TALLY.update().where(TALLY.c.id == last).values(count=total))
        removed += rows - 1
    db.session.commit()
    return removed
