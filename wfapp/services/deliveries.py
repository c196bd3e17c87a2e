"""The delivery log of inbound triggers: what did not become a new event, and why.

Accepted deliveries are the events themselves (the inbox already holds them), so the hot path of
a webhook writes nothing here. Duplicates, refusals (bad signature, wrong client state, ...) and
failed polls are logged with their reason and counted per integration, channel and outcome; the
log is pruned to the newest rows, the counters are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import affected, db
from ..models import Delivery, DeliveryCounter, DeliveryOutcome, Event, utcnow

KEEP_PER_CHANNEL = 500
REASON_LIMIT = 300


def record(integration_id: int, channel: str, outcome: DeliveryOutcome | str, reason: str = "",
           *, status_code: int | None = None, event_id: int | None = None,
           remote_addr: str = "", detail: dict[str, Any] | None = None,
           commit: bool = True) -> None:
    """Log one delivery and count it (in one transaction, committed unless `commit` is False)."""
    outcome = DeliveryOutcome(outcome).value
    now = utcnow()
    reason = reason[:REASON_LIMIT]
    db.session.add(Delivery(integration_id=integration_id, channel=channel[:40], at=now,
                            outcome=outcome, reason=reason, status_code=status_code,
                            event_id=event_id, remote_addr=(remote_addr or "")[:64],
                            detail=detail or {}))
    count(integration_id, channel, outcome, reason, now=now, commit=False)
    if commit:
        db.session.commit()


def count(integration_id: int, channel: str, outcome: str, reason: str = "", *, by: int = 1,
          now: datetime | None = None, commit: bool = True) -> None:
    """Add to a delivery counter without logging a row (for counts of dropped items)."""
    now = now or utcnow()
    table = DeliveryCounter.__table__
    dialect = db.session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(
        integration_id=integration_id, channel=channel[:40], outcome=outcome, count=by,
        last_at=now, last_reason=reason[:REASON_LIMIT])
    statement = statement.on_conflict_do_update(
        index_elements=["integration_id", "channel", "outcome"],
        set_={"count": table.c.count + by, "last_at": now,
              "last_reason": reason[:REASON_LIMIT]})
    db.session.execute(statement)
    if commit:
        db.session.commit()


@dataclass(frozen=True)
class DeliveryRow:
    """One line of a card's "recent deliveries" table."""

    at: datetime
    outcome: str
    reason: str
    event_id: int | None = None
    event_status: str | None = None
    status_code: int | None = None
    remote_addr: str = ""
    key: str = ""


def recent(integration_id: int, channel: str, source: str | None = None, limit: int = 20
           ) -> list[DeliveryRow]:
    """The newest deliveries of a channel: its log rows merged with the events of `source`."""
    rows = [DeliveryRow(d.at, d.outcome, d.reason, d.event_id, None, d.status_code,
                        d.remote_addr, str((d.detail or {}).get("key", "")))
            for d in db.session.scalars(
                select(Delivery).where(Delivery.integration_id == integration_id,
                                       Delivery.channel == channel)
                .order_by(Delivery.id.desc()).limit(limit))]
    if source is not None:
        events = db.session.execute(
            select(Event.id, Event.received_at, Event.status, Event.record_key, Event.type)
            .where(Event.integration_id == integration_id, Event.source == source)
            .order_by(Event.id.desc()).limit(limit)).all()
        rows += [DeliveryRow(e.received_at, DeliveryOutcome.ACCEPTED.value,
                             f"stored as event {e.id}" + (f" ({e.type})" if e.type else ""),
                             e.id, e.status, 202, "", e.record_key or "") for e in events]
    rows.sort(key=lambda r: r.at, reverse=True)
    return rows[:limit]


@dataclass(frozen=True)
class Counter:
    """How many deliveries of one outcome, and the latest one's time and reason."""

    outcome: str
    count: int
    last_at: datetime | None
    last_reason: str


def counters(integration_id: int, channel: str) -> dict[str, Counter]:
    """The counters of a channel by outcome."""
    rows = db.session.scalars(select(DeliveryCounter).where(
        DeliveryCounter.integration_id == integration_id, DeliveryCounter.channel == channel))
    return {r.outcome: Counter(r.outcome, r.count, r.last_at, r.last_reason) for r in rows}


def prune(keep: int = KEEP_PER_CHANNEL) -> int:
    """Delete log rows beyond the newest `keep` of each integration and channel."""
    deleted = 0
    pairs = db.session.execute(select(Delivery.integration_id, Delivery.channel).distinct()).all()
    for integration_id, channel in pairs:
        cutoff = db.session.scalar(
            select(Delivery.id).where(Delivery.integration_id == integration_id,
                                      Delivery.channel == channel)
            .order_by(Delivery.id.desc()).offset(keep).limit(1))
        if cutoff is not None:
            result = db.session.execute(delete(Delivery).where(
                Delivery.integration_id == integration_id, Delivery.channel == channel,
                Delivery.id <= cutoff))
            deleted += affected(result)
    db.session.commit()
    return deleted
