"""Queue entry points. Module-level functions taking ids; the worker supplies the app context.

The same functions run on RQ workers and on the embedded queue.
"""

from __future__ import annotations

import logging

from flask import current_app

from .extensions import db
from .queue import get_queue
from .services.events import has_pending, oldest_pending_age
from .services.processing import pending_partitions, process_pending
from .services.timeouts import fire_due_timeouts

log = logging.getLogger(__name__)


def process_events() -> int:
    """Process pending events in batches; fan out to idle workers while there is a backlog."""
    queue = get_queue()
    queue.take_kick()
    try:
        if len(pending_partitions()) > 1:
            queue.kick()  # another worker can take the other partitions meanwhile
        budget = float(current_app.config.get("JOB_TIME_BUDGET", 20))
        done = process_pending(time_budget=budget)
        if has_pending():
            queue.kick()
        return done
    finally:
        db.session.remove()


def sweep() -> dict[str, int]:
    """Fire due timeouts, and queue processing for pending events that lost their job."""
    try:
        fired = fire_due_timeouts(time_budget=float(current_app.config.get("JOB_TIME_BUDGET", 20)))
        requeued = 0
        oldest = oldest_pending_age()
        if oldest is not None:
            # Events waiting longer than two sweeps lost their job (or its mark): queue one anyway.
            stale = oldest > 2 * float(current_app.config.get("SWEEP_INTERVAL", 10))
            get_queue().kick(force=stale)
            requeued = 1
        if fired:
            log.info("sweep fired %d timeouts", fired)
        return {"timeouts_fired": fired, "requeued": requeued}
    finally:
        db.session.remove()


def prune_deliveries() -> int:
    """Keep the delivery log to the newest rows per integration and channel."""
    from .services.deliveries import prune

    try:
        return prune()
    finally:
        db.session.remove()
