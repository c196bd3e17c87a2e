"""Queue entry points. Module-level functions taking ids; the worker supplies the app context.

The same functions run on RQ workers and on the embedded queue.
"""

from __future__ import annotations

import logging
import time

from flask import current_app

from .extensions import db
from .queue import get_queue
from .services.events import has_pending, oldest_pending_age
from .services.processing import pending_partitions, process_pending
from .services.timeouts import fire_due_timeouts
from .shutdown import stopping

log = logging.getLogger(__name__)


def process_events() -> int:
    """Process pending events in batches; fan out to idle workers while there is a backlog."""
    queue = get_queue()
    queue.take_kick()
    try:
        if len(pending_partitions()) > 1:
            queue.kick()  # another worker can take the other partitions meanwhile
        deadline = time.monotonic() + float(current_app.config.get("JOB_TIME_BUDGET", 20))
        # A steady stream of events (polls, webhooks) keeps this job busy for its whole budget,
        # and the sweep job queued behind it would wait that long: between slices of one sweep
        # interval, fire the timeouts that fell due (about a millisecond when none did).
        step = max(1.0, float(current_app.config.get("SWEEP_INTERVAL", 10)))
        done = 0
        while True:
            slice_end = min(time.monotonic() + step, deadline)
            done += process_pending(time_budget=max(0.0, slice_end - time.monotonic()))
            # Back before the slice ended: nothing left that this worker may take (other
            # workers hold the partitions with work), so hand over as before.
            if time.monotonic() < slice_end or time.monotonic() >= deadline or \
                    not has_pending() or stopping():
                break
            fire_due_timeouts(time_budget=min(step, max(0.0, deadline - time.monotonic())))
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
        _resume_operations()
        return {"timeouts_fired": fired, "requeued": requeued}
    finally:
        db.session.remove()


def release_worker(owner: str) -> int:
    """Free the partition leases of a worker process known to be dead (the embedded queue
    killed it), so its partitions need not wait LEASE_SECONDS for their next batch."""
    from .services.processing import release_owner

    try:
        return release_owner(owner)
    finally:
        db.session.remove()


def deliver_actions() -> dict[str, int]:
    """Wake this process's action executor: its threads deliver due outbox rows.

    Returns at once (the deliveries run on the executor's threads), so a slow receiver holds
    up neither event processing nor the sweep queued behind this job.
    """
    from .services.outbox import executor

    try:
        return executor().wake()
    finally:
        db.session.remove()


def prune_deliveries() -> int:
    """Keep the delivery log to the newest rows per integration and channel."""
    from .services.deliveries import prune

    try:
        return prune()
    finally:
        db.session.remove()


def run_migration(migration_id: int) -> bool:
    """Move a migration's instances for one time budget; queue itself again until done."""
    from .services.migrations import run_migration as run

    try:
        finished = run(migration_id)
        if not finished:
            get_queue().enqueue("wfapp.jobs.run_migration", migration_id)
        return finished
    except Exception:
        db.session.rollback()
        log.exception("migration %s failed", migration_id)
        from .services.migrations import fail

        fail(migration_id)
        raise
    finally:
        db.session.remove()


def run_operation(operation_id: int) -> bool:
    """Work on a bulk operation for a slice of time; queue the next slice until it is done."""
    from .services.bulk import JOB, run

    try:
        finished = run(operation_id, float(current_app.config.get("BULK_TIME_BUDGET", 5)))
        if not finished:
            # Short slices, each a new job: no job outlives its timeout, and on the embedded
            # queue event processing gets its turn between slices.
            get_queue().enqueue(JOB, operation_id)
        return finished
    finally:
        db.session.remove()


def retention() -> dict[str, int]:
    """Purge what the retention settings no longer keep; roll up finished days of the tally."""
    from .services import counters, tally
    from .services import retention as policy

    try:
        removed = policy.purge(time_budget=float(current_app.config.get("JOB_TIME_BUDGET", 20)))
        removed["tally_rows"] = tally.compact()
        removed["counter_rows"] = counters.compact()
        return removed
    finally:
        db.session.remove()


def _resume_operations() -> None:
    """Give an unfinished bulk operation whose job was lost (a killed worker) a new one.

    A second job of one operation is harmless (rows are claimed by the cursor), so this only
    keeps it rare: at most one resume per operation per RESUME_SECONDS across all processes.
    """
    from .services.bulk import JOB, unfinished

    queue = get_queue()
    every = float(current_app.config.get("BULK_RESUME_SECONDS", 120))
    for operation_id in unfinished():
        # The first call only marks the operation (it was just queued by whoever started it).
        if queue.once(f"bulk-seen:{operation_id}", 10 * every) or \
                not queue.once(f"bulk-resume:{operation_id}", every):
            continue
        queue.enqueue(JOB, operation_id)


def evaluate_alerts() -> dict[str, int]:
    """Scheduled: check the alert rules, opening and resolving alerts."""
    from .services.alerts import evaluate

    try:
        return evaluate()
    finally:
        db.session.remove()
