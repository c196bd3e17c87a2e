"""The baseline of the benchmark: one RQ job per event (what wfapp's batching replaces)."""

from __future__ import annotations

from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import Event, EventStatus
from wfapp.services.processing import process_batch


def process_one(event_id: int) -> None:
    """Process a single event in its own transaction, through the same engine code."""
    try:
        partition = db.session.scalar(select(Event.partition).where(
            Event.id == event_id, Event.status == EventStatus.PENDING.value))
        if partition is not None:
            # The oldest pending event of its partition: per-instance order is kept.
            process_batch(partition, limit=1)
    finally:
        db.session.remove()
