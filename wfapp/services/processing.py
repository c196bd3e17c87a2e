"""Processing stored events in batches: find or create the instance, decide, move, record.

A worker leases one partition of the inbox at a time (leases expire, so a killed worker's
partition is taken over), claims up to a batch of its pending events in received order and
handles them in one transaction. Every event is marked with what it did in the same
transaction that moved its instance, so an event is applied exactly once or not at all.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..engine import build_context, capture_vars, select_transition
from ..extensions import affected, db
from ..models import Event, EventStatus, InstanceMode, Integration, Lease, utcnow
from ..queue import TIMEOUTS
from .firing import (
    HISTORY,
    INSTANCE,
    INSTANCE_COLUMNS,
    InstanceRow,
    Move,
    compiled_workflow,
    create_instance,
    move,
    notes_excerpt,
    row_to_instance,
)
from .registry import get_registry

EVENT = Event.__table__
LEASE = Lease.__table__
log = logging.getLogger(__name__)
WORKER_ACTOR = "worker"


def worker_id() -> str:
    """A name for this process in leases and logs: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- leases -------------------------------------------------------------------------------------


def acquire_lease(name: str, owner: str, seconds: float) -> bool:
    """Take (or renew) a lease unless another live owner holds it; commits."""
    now = utcnow()
    values = {"owner": owner, "expires_at": now + timedelta(seconds=seconds)}
    condition = or_(LEASE.c.expires_at.is_(None), LEASE.c.expires_at < now, LEASE.c.owner == owner)
    result = db.session.execute(
        update(LEASE).where(LEASE.c.name == name, condition).values(**values))
    if affected(result) == 0:
        exists = db.session.scalar(select(LEASE.c.name).where(LEASE.c.name == name))
        if exists is not None:
            db.session.commit()
            return False
        try:
            db.session.execute(insert(LEASE).values(name=name, **values))
        except IntegrityError:  # another worker created it at the same moment
            db.session.rollback()
            return False
    db.session.commit()
    return True


def release_lease(name: str, owner: str) -> None:
    """Give a lease back; commits."""
    db.session.execute(update(LEASE).where(LEASE.c.name == name, LEASE.c.owner == owner)
                       .values(expires_at=None, owner=""))
    db.session.commit()


# --- batches ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What processing one event did."""

    status: EventStatus
    result: str
    instance_id: int | None = None


def pending_partitions() -> list[int]:
    """Partitions that have pending events."""
    return list(db.session.scalars(
        select(EVENT.c.partition).where(EVENT.c.status == EventStatus.PENDING.value).distinct()))


def _claim(conn: Connection, partition: int, limit: int) -> list[Any]:
    query = (select(EVENT).where(EVENT.c.status == EventStatus.PENDING.value,
                                 EVENT.c.partition == partition)
             .order_by(EVENT.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        # Another worker holding some of these rows means its lease overlapped ours: skip them.
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query))


def _load_instances(conn: Connection, events: list[Any], modes: dict[int, str]
                    ) -> dict[tuple[int, str, Any], InstanceRow]:
    record_keys = {(e.integration_id, e.record_key) for e in events
                   if modes.get(e.integration_id) == InstanceMode.PER_RECORD.value
                   and e.record_key is not None}
    run_keys = {(e.integration_id, e.run_id) for e in events
                if modes.get(e.integration_id) == InstanceMode.PER_RUN.value
                and e.run_id is not None}
    found: dict[tuple[int, str, Any], InstanceRow] = {}
    if record_keys:
        rows = conn.execute(select(*INSTANCE_COLUMNS).where(
            tuple_(INSTANCE.c.integration_id, INSTANCE.c.record_key).in_(list(record_keys))))
        for row in rows:
            found[(row.integration_id, "r", row.record_key)] = row_to_instance(row)
    if run_keys:
        rows = conn.execute(select(*INSTANCE_COLUMNS).where(
            tuple_(INSTANCE.c.integration_id, INSTANCE.c.run_id).in_(list(run_keys))))
        for row in rows:
            found[(row.integration_id, "u", row.run_id)] = row_to_instance(row)
    return found


def _give_up(conn: Connection, events: list[Any], now: datetime) -> None:
    """Mark events that broke processing too often as failed: they never block again."""
    conn.execute(
        update(EVENT).where(EVENT.c.id.in_([e.id for e in events]),
                            EVENT.c.status == EventStatus.PENDING.value)
        .values(status=EventStatus.FAILED.value, processed_at=now,
                result=f"gave up after {events[0].attempts} attempts: processing crashed or "
                       "ran out of time each time; fix the cause, then replay it"))


def _start_attempt(partition: int, limit: int) -> list[Any]:
    """Claim a batch and count the attempt in its own commit, so a crash or a kill counts too.

    Events that already had an attempt that never finished are processed one at a time, so only
    an event that really breaks processing uses up its attempts; after MAX_EVENT_ATTEMPTS it is
    marked failed instead of being tried again.
    """
    conn = db.session.connection()
    events = _claim(conn, partition, limit)
    most = int(current_app.config.get("MAX_EVENT_ATTEMPTS", 3))
    poisoned = [e for e in events if e.attempts >= most]
    if poisoned:
        log.error("giving up on events %s of partition %s after %d attempts",
                  [e.id for e in poisoned], partition, most)
        _give_up(conn, poisoned, utcnow())
        events = [e for e in events if e.attempts < most]
    retried = next((i for i, e in enumerate(events) if e.attempts > 0), None)
    if retried is not None:
        events = events[:retried] or events[:1]
    if events:
        conn.execute(update(EVENT).where(EVENT.c.id.in_([e.id for e in events]))
                     .values(attempts=EVENT.c.attempts + 1))
    db.session.commit()
    return [e.id for e in events]


def process_batch(partition: int, limit: int = 200) -> int:
    """Handle up to `limit` pending events of a partition in one transaction; return how many."""
    ids = _start_attempt(partition, limit)
    if not ids:
        return 0
    conn = db.session.connection()
    query = select(EVENT).where(EVENT.c.id.in_(ids), EVENT.c.status == EventStatus.PENDING.value
                                ).order_by(EVENT.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    events = list(conn.execute(query))
    if not events:
        db.session.commit()
        return 0
    integrations = {
        row.id: row for row in conn.execute(
            select(Integration.__table__).where(
                Integration.__table__.c.id.in_({e.integration_id for e in events})))
    }
    modes = {i: row.instance_mode for i, row in integrations.items()}
    instances = _load_instances(conn, events, modes)
    history: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    now = utcnow()
    for event in events:
        outcome = _process_one(conn, event, integrations[event.integration_id], instances,
                               history, now)
        updates.append({"eid": event.id, "status": outcome.status.value,
                        "result": outcome.result[:1000], "instance_id": outcome.instance_id,
                        "processed_at": now})
    if history:
        conn.execute(insert(HISTORY), history)
    conn.execute(
        update(EVENT).where(and_(EVENT.c.id == bindparam("eid"),
                                 EVENT.c.status == EventStatus.PENDING.value))
        .values(status=bindparam("status"), result=bindparam("result"),
                instance_id=bindparam("instance_id"), processed_at=bindparam("processed_at")),
        updates)
    db.session.commit()
    return len(ids)


def _key(integration: Any, event: Any) -> tuple[int, str, Any] | None:
    if integration.instance_mode == InstanceMode.PER_RUN.value:
        return None if event.run_id is None else (integration.id, "u", event.run_id)
    return None if event.record_key is None else (integration.id, "r", event.record_key)


def _process_one(conn: Connection, event: Any, integration: Any,
                 instances: dict[tuple[int, str, Any], InstanceRow],
                 history: list[dict[str, Any]], now: datetime) -> Outcome:
    """Evaluate one event; the instance moves (or is created) inside the batch transaction."""
    if integration.workflow_id is None:
        return Outcome(EventStatus.SKIPPED, f"integration {integration.code} has no workflow")
    workflow = compiled_workflow(integration.workflow_id)
    if workflow is None:
        return Outcome(EventStatus.SKIPPED, "the integration's workflow no longer exists")
    if not workflow.enabled:
        return Outcome(EventStatus.SKIPPED, f"workflow {workflow.code} is disabled")
    key = _key(integration, event)
    if key is None:
        what = "run id" if integration.instance_mode == InstanceMode.PER_RUN.value else \
            "record key"
        return Outcome(EventStatus.FAILED, f"event has no {what}")
    record = event.record
    record_status = (event.payload or {}).get("status") if record is not None else None
    instance = instances.get(key)
    created = False
    if instance is not None and instance.workflow_id != integration.workflow_id:
        # The integration now uses another workflow; the old instance keeps its own.
        workflow = compiled_workflow(instance.workflow_id) or workflow
    if instance is None:
        if integration.instance_mode == InstanceMode.PER_RUN.value:
            # The run started while the workflow was disabled (or before it was attached): its
            # summary event, replayed now, starts the run's instance.
            instance = create_instance(
                conn, integration.workflow_id, workflow, integration.id, None, event.run_id,
                {}, WORKER_ACTOR, event.source, now, event.id)
            instances[key] = instance
            created = True
        elif record_status == "error":
            return Outcome(EventStatus.PROCESSED, "record failed: a failed record never "
                           "creates an instance")
        else:
            instance = create_instance(
                conn, integration.workflow_id, workflow, integration.id, event.record_key,
                None, record or {}, WORKER_ACTOR, event.source, now, event.id)
            instances[key] = instance
            created = True
    trigger_types = get_registry().trigger_types
    view = {"source": event.source, "type": event.type, "payload": event.payload or {},
            "record": {"key": event.record_key, "data": record, "status": record_status}
            if record is not None else None}
    for _attempt in range(5):
        context = build_context(event.payload or {},
                                record if record is not None else instance.data,
                                instance.context())
        decision = select_transition(workflow, instance.state, event.source, view, context,
                                     trigger_types)
        transition = decision.transition
        if transition is None:
            if record is not None and record != instance.data:
                conn.execute(update(INSTANCE).where(INSTANCE.c.id == instance.id)
                             .values(data=record))
                instance.data = dict(record)
            prefix = "created the instance; " if created else ""
            return Outcome(EventStatus.PROCESSED, prefix + decision.reason, instance.id)
        change = Move(transition.to_state, transition.code, event.source, WORKER_ACTOR,
                      event.id, notes_excerpt(event.payload or {}),
                      vars=capture_vars(transition, context, instance.vars),
                      data=dict(record) if record is not None else None)
        before = instance.state
        if move(conn, workflow, instance, change, now, history):
            prefix = "created the instance; " if created else ""
            return Outcome(EventStatus.PROCESSED, f"{prefix}fired {transition.code}: "
                           f"{before} → {transition.to_state}", instance.id)
        # Someone else (a person, the sweep) moved it first: decide again on its new state.
        fresh = conn.execute(select(*INSTANCE_COLUMNS).where(INSTANCE.c.id == instance.id)).first()
        if fresh is None:
            return Outcome(EventStatus.SKIPPED, "instance was deleted meanwhile")
        instance = instances[key] = row_to_instance(fresh)
    return Outcome(EventStatus.FAILED, "instance kept changing under this event; replay it")


def _process_batch_safely(partition: int, size: int) -> int:
    """A batch; when it fails, retry event by event and mark the one that fails as failed.

    One event that breaks processing (a bug, data the database refuses) must not block the
    events behind it in its partition forever: it is recorded as failed, with the error, and
    can be replayed once the cause is fixed.
    """
    try:
        return process_batch(partition, size)
    except TIMEOUTS:
        # The job ran out of time: the attempt is counted; end this job (the next one takes the
        # events one at a time) instead of starting more work the alarm can no longer stop.
        db.session.rollback()
        raise
    except Exception:
        db.session.rollback()
        log.exception("batch of partition %s failed; retrying event by event", partition)
    try:
        return process_batch(partition, 1)
    except TIMEOUTS:
        db.session.rollback()
        raise
    except Exception as exc:
        db.session.rollback()
        event_id = db.session.scalar(
            select(EVENT.c.id).where(EVENT.c.status == EventStatus.PENDING.value,
                                     EVENT.c.partition == partition)
            .order_by(EVENT.c.id).limit(1))
        if event_id is None:
            return 0
        log.exception("event %s failed", event_id)
        db.session.execute(update(EVENT).where(EVENT.c.id == event_id).values(
            status=EventStatus.FAILED.value, result=f"error: {exc}"[:1000],
            processed_at=utcnow()))
        db.session.commit()
        return 1


def process_pending(time_budget: float = 20.0, batch_size: int | None = None) -> int:
    """Work through pending events partition by partition until none is left or time is up."""
    owner = worker_id()
    lease_seconds = float(current_app.config.get("LEASE_SECONDS", 60))
    size = batch_size or int(current_app.config.get("EVENT_BATCH_SIZE", 200))
    deadline = time.monotonic() + time_budget
    done = 0
    while time.monotonic() < deadline:
        partitions = pending_partitions()
        if not partitions:
            break
        random.shuffle(partitions)
        worked = False
        for partition in partitions:
            name = f"partition:{partition}"
            if not acquire_lease(name, owner, lease_seconds):
                continue
            worked = True
            try:
                while time.monotonic() < deadline:
                    count = _process_batch_safely(partition, size)
                    done += count
                    if count < size:
                        break
                    acquire_lease(name, owner, lease_seconds)
            finally:
                db.session.rollback()
                release_lease(name, owner)
            if time.monotonic() >= deadline:
                break
        if not worked:
            break  # every partition with work is leased by another worker
    return done
