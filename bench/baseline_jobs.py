"""The baseline of the benchmark: one RQ job per event (what wfapp's batching replaces)."""

from __future__ import annotations

import time

from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import Event, EventStatus
from wfapp.services.processing import process_batch


def process_one(event_id: int) -> None:
    """Process a single event in its own transaction, through the same engine code.

    Each call takes the oldest pending event of the partition (per-instance order is kept), so
    two jobs of one partition may take each other's event: the job ends only once its own event
    is done, else one left pending would wait for a job that has already run.
    """
    try:
        while True:
            partition = db.session.scalar(select(Event.partition).where(
                Event.id == event_id, Event.status == EventStatus.PENDING.value))
            if partition is None:
                return
            if process_batch(partition, limit=1) == 0:
                time.sleep(0.01)  # another job holds the partition's oldest event
    finally:
        db.session.remove()
