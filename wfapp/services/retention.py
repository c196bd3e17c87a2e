"""Retention: purge processed events and finished instances older than the configured days.

Runs from the scheduler (`wfapp.jobs.retention`) in batches, one transaction each, so a large
backlog never holds a long transaction. Only `processed` events go (pending, failed and skipped
ones stay: they still need a person or a replay); only finished instances go, with their history
(the history of an active instance is never purged). Each run that removed something writes one
audit row with its counts; the admin Retention page shows them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select

from ..extensions import db
from ..models import AuditEntry, Event, EventStatus, HistoryEntry, Instance, utcnow
from ..shutdown import stopping
from . import audit

AUDIT_ACTION = "retention.purge"


@dataclass
class Policy:
    """How long to keep things, in days (0 = forever), and the batch size."""

    event_days: int
    instance_days: int
    batch: int

    def event_cutoff(self, now: datetime) -> datetime | None:
        """Processed events before this moment are purged (None: keep them)."""
        return now - timedelta(days=self.event_days) if self.event_days > 0 else None

    def instance_cutoff(self, now: datetime) -> datetime | None:
        """Instances finished before this moment are purged (None: keep them)."""
        return now - timedelta(days=self.instance_days) if self.instance_days > 0 else None


def policy() -> Policy:
    """The retention settings of this app."""
    config = current_app.config
    return Policy(max(0, int(config.get("RETENTION_EVENT_DAYS") or 0)),
                  max(0, int(config.get("RETENTION_INSTANCE_DAYS") or 0)),
                  max(1, int(config.get("RETENTION_BATCH") or 1000)))


def _old_events(cutoff: datetime) -> Any:
    return (Event.status == EventStatus.PROCESSED.value, Event.processed_at < cutoff)


def _old_instances(cutoff: datetime) -> Any:
    return (Instance.active.is_(False), Instance.completed_at.is_not(None),
            Instance.completed_at < cutoff)


def eligible(now: datetime | None = None) -> dict[str, int | None]:
    """How many events and instances the policy would purge now (None: that part is off)."""
    now = now or utcnow()
    rules = policy()
    out: dict[str, int | None] = {"events": None, "instances": None}
    events = rules.event_cutoff(now)
    if events is not None:
        out["events"] = db.session.scalar(
            select(func.count()).select_from(Event).where(*_old_events(events)))
    instances = rules.instance_cutoff(now)
    if instances is not None:
        out["instances"] = db.session.scalar(
            select(func.count()).select_from(Instance).where(*_old_instances(instances)))
    return out


def purge(now: datetime | None = None, time_budget: float = 60.0) -> dict[str, int]:
    """Purge in batches until done or out of time; audited; return what was removed."""
    now = now or utcnow()
    rules = policy()
    deadline = time.monotonic() + time_budget
    removed = {"events": 0, "instances": 0, "history": 0}
    cutoff = rules.event_cutoff(now)
    while cutoff is not None and time.monotonic() < deadline and not stopping():
        ids = db.session.scalars(select(Event.id).where(*_old_events(cutoff))
                                 .order_by(Event.id).limit(rules.batch)).all()
        if not ids:
            break
        db.session.execute(delete(Event).where(Event.id.in_(ids), *_old_events(cutoff)))
        db.session.commit()
        removed["events"] += len(ids)
    cutoff = rules.instance_cutoff(now)
    while cutoff is not None and time.monotonic() < deadline and not stopping():
        query = (select(Instance.id).where(*_old_instances(cutoff))
                 .order_by(Instance.completed_at).limit(rules.batch))
        if db.session.get_bind().dialect.name == "postgresql":
            # A reset waits for this batch instead of reviving an instance being purged.
            query = query.with_for_update(skip_locked=True)
        ids = db.session.scalars(query).all()
        if not ids:
            db.session.commit()
            break
        history = db.session.scalar(select(func.count()).select_from(HistoryEntry)
                                    .where(HistoryEntry.instance_id.in_(ids))) or 0
        # The guard is repeated in the DELETE; the history goes with its instance (ON DELETE
        # CASCADE), so an instance that is kept keeps all of its history.
        gone = db.session.scalars(delete(Instance).where(Instance.id.in_(ids),
                                                          *_old_instances(cutoff))
                                  .returning(Instance.id)).all()
        db.session.commit()
        removed["instances"] += len(gone)
        removed["history"] += history if len(gone) == len(ids) else 0
    if removed["events"] or removed["instances"]:
        audit.record(AUDIT_ACTION, "retention", "scheduler",
                     {**removed, "event_days": rules.event_days,
                      "instance_days": rules.instance_days}, who=audit.actor())
        db.session.commit()
    return removed


def recent_runs(limit: int = 20) -> list[AuditEntry]:
    """The latest purges (from the audit log), newest first."""
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == AUDIT_ACTION)
                                   .order_by(AuditEntry.id.desc()).limit(limit)))
