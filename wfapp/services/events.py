"""The inbox: every trigger stores its events here first, then a worker processes them.

Plugins call `ingest()`; it writes the rows (a duplicate `(integration, dedupe_key)` is
acknowledged and ignored) and only after the commit asks the queue for a processing job.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..engine import RuleError
from ..extensions import db
from ..models import Event, EventStatus, Instance, Integration, utcnow
from ..queue import get_queue
from . import audit
from .errors import Conflict, NotFound, ValidationFailed
from .rowsets import insert_new_rows

EVENT = Event.__table__
PARTITIONS = 64
log = logging.getLogger(__name__)


@dataclass
class NewEvent:
    """An event a trigger wants stored."""

    source: str
    type: str = ""
    record_key: str | None = None
    run_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    dedupe_key: str | None = None
    #: Set when the trigger could not produce the event it wanted (a poll that timed out): the
    #: event is stored as `failed` with this reason as its result and is not evaluated.
    failure: str | None = None


@dataclass
class IngestResult:
    """How many events were stored and how many were duplicates."""

    stored: int
    duplicates: int


def partition_of(integration_id: int, record_key: str | None, run_id: int | None) -> int:
    """Events of one instance key land in one partition, so they are applied in order."""
    if record_key is not None:
        key = f"{integration_id}:{record_key}"
    else:
        key = f"{integration_id}#{run_id}"
    return zlib.crc32(key.encode()) % PARTITIONS


@lru_cache(maxsize=4)
def _insert_statements(dialect: str) -> tuple[Any, Any]:
    """The INSERT ... ON CONFLICT DO NOTHING RETURNING id statements for one row and for many,
    built once: a webhook stores one event per request, so building them is on the hot path."""
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(EVENT).on_conflict_do_nothing(
        index_elements=["integration_id", "dedupe_key"])
    return (statement.returning(EVENT.c.id),
            statement.returning(EVENT.c.id, sort_by_parameter_order=True))


def _insert_ignoring_duplicates(rows: list[dict[str, Any]]) -> list[int]:
    """Insert event rows, skipping repeated dedupe keys; the new ids in the rows' order."""
    connection = db.session.connection()  # Core level: a webhook pays no ORM overhead
    one, many = _insert_statements(connection.dialect.name)
    if len(rows) == 1:
        return list(connection.execute(one, rows[0]).scalars())
    if connection.dialect.name == "postgresql":
        return insert_new_rows(connection, EVENT, rows, ["integration_id", "dedupe_key"])
    return [row.id for row in connection.execute(many, rows)]


def _kick_after_commit() -> None:
    """Ask the queue for a processing job; the events are safe in the inbox whatever happens.

    When the queue (Redis) is unreachable the sweep, which re-queues pending events, gets
    them processed once it is back; the caller's request still succeeds.
    """
    try:
        get_queue().kick()
    except Exception as exc:  # noqa: BLE001 — a queue outage must not fail a committed ingest
        # One line, not a traceback per request: an outage would flood the log.
        log.warning("events stored, but the queue is unreachable (%s: %s); the sweep will "
                    "pick them up", type(exc).__name__, exc)


def kick_soon() -> None:
    """Like `_kick_after_commit`, from the process's kicker thread (no wait for Redis)."""
    try:
        get_queue().kick_soon()
    except Exception as exc:  # noqa: BLE001 — a queue outage must not fail a committed ingest
        log.warning("events stored, but the queue is unreachable (%s: %s)", type(exc).__name__,
                    exc)


MAX_KEY = 200


def dedupe_key(value: str | None) -> str:
    """The stored dedupe key: as given when it fits, else its SHA-256 (a random one when None)."""
    if value is None:
        return uuid.uuid4().hex
    return value if len(value) <= MAX_KEY else "sha256:" + hashlib.sha256(
        value.encode()).hexdigest()


def _link_failed_to_instances(ids: list[int]) -> None:
    """A failed event is never processed; link it to its instance so the instance page shows it."""
    instance = Instance.__table__
    found = (select(instance.c.id)
             .where(instance.c.integration_id == EVENT.c.integration_id,
                    or_(instance.c.record_key == EVENT.c.record_key,
                        instance.c.run_id == EVENT.c.run_id))
             .limit(1).scalar_subquery())
    db.session.execute(update(EVENT).where(EVENT.c.id.in_(ids)).values(instance_id=found))


class IntegrationChanged(RuntimeError):
    """The integration's configuration changed since the caller read it: nothing was stored."""


def store(integration_id: int, events: Sequence[NewEvent], kick: bool = True,
          expect_version: int | None = None) -> tuple[list[int], int]:
    """Store events in one transaction, then queue their processing: (new ids, duplicates).

    An event with a `failure` is stored as failed, with the reason as its result, linked to its
    instance when there is one, and not queued. Raises ValueError for a record key longer than
    200 characters (callers check first). With `expect_version`, raises IntegrationChanged
    (storing nothing) unless the integration's config_version is still that.
    """
    handle = _announce(events)
    try:
        ids, duplicates, queued = stage(integration_id, events, expect_version)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    finally:
        if handle:
            _retract(handle)
    if kick and queued:
        _kick_after_commit()
    return ids, duplicates


#: An ingest of this many events or more is announced while it is being stored (`_announce`).
ANNOUNCE_MIN = 50
#: How long an announcement counts at most (one whose announcer died is never retracted).
ANNOUNCE_SECONDS = 10.0


def _announce(events: Sequence[NewEvent]) -> str | None:
    """Announce a large ingest before its insert: its handle, or None (small, or no queue).

    Its events become visible to others only at the commit; an import or a BC notification
    of thousands of items takes a while to write. Work that yields to a backlog (polls, action
    deliveries) sees the announcement (`waiting_other_than`) and yields from the start, instead
    of running at full speed until the commit and then competing with the burst.
    """
    if len(events) < ANNOUNCE_MIN:
        return None
    counts: dict[str, int] = {}
    for event in events:
        if event.failure is None:
            counts[event.source] = counts.get(event.source, 0) + 1
    if sum(counts.values()) < ANNOUNCE_MIN:
        return None
    try:
        return get_queue().announce(counts, ANNOUNCE_SECONDS) or None
    except Exception as exc:  # noqa: BLE001 — the queue handles its outages; a hint never fails
        log.warning("could not announce an ingest (%s: %s)", type(exc).__name__, exc)
        return None


def _retract(handle: str) -> None:
    try:
        get_queue().retract(handle)
    except Exception as exc:  # noqa: BLE001 — it expires by itself
        log.warning("could not retract an announcement (%s: %s)", type(exc).__name__, exc)


def stage(integration_id: int, events: Sequence[NewEvent], expect_version: int | None = None
          ) -> tuple[list[int], int, int]:
    """Insert events in the caller's transaction without committing: (new ids, duplicates,
    how many wait for processing). The caller commits, then kicks when any wait. With
    `expect_version`, raises IntegrationChanged unless the integration's config_version is
    still that."""
    rows = event_rows(integration_id, events, utcnow())
    # Before the insert (an integration deleted since would fail it), and after: the insert
    # holds SQLite's write lock (and on PostgreSQL a later statement sees every change
    # committed before it), so no change slips in between.
    _check_version(integration_id, expect_version)
    ids = _insert_ignoring_duplicates(rows) if rows else []
    _check_version(integration_id, expect_version)
    failed = [i for i, status in _statuses(ids, rows) if status == EventStatus.FAILED.value]
    if failed:
        _link_failed_to_instances(failed)
    return ids, len(rows) - len(ids), len(ids) - len(failed)


#: The columns `event_rows` fills.
EVENT_ROW_KEYS = ("integration_id", "source", "type", "record_key", "run_id", "payload", "record",
                  "dedupe_key", "partition", "received_at", "status", "result", "attempts")


def event_rows(integration_id: int, events: Sequence[NewEvent], now: datetime
               ) -> list[dict[str, Any]]:
    """The inbox rows of events, as `stage()` inserts them; ValueError for a record key longer
    than 200 characters."""
    for e in events:
        if e.record_key is not None and len(e.record_key) > MAX_KEY:
            raise ValueError(f"record key longer than {MAX_KEY} characters")
    return [{
        "integration_id": integration_id, "source": e.source, "type": (e.type or "")[:100],
        "record_key": e.record_key, "run_id": e.run_id, "payload": e.payload,
        "record": e.record, "dedupe_key": dedupe_key(e.dedupe_key),
        "partition": partition_of(integration_id, e.record_key, e.run_id), "received_at": now,
        "status": EventStatus.PENDING.value if e.failure is None else EventStatus.FAILED.value,
        "result": "" if e.failure is None else e.failure[:1000], "attempts": 0,
    } for e in events]


_VERSION = select(Integration.__table__.c.config_version).where(
    Integration.__table__.c.id == bindparam("id"))


def _check_version(integration_id: int, expected: int | None) -> None:
    if expected is not None and db.session.connection().execute(
            _VERSION, {"id": integration_id}).scalar() != expected:
        raise IntegrationChanged(f"integration {integration_id} changed")


def _statuses(ids: list[int], rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(id, status) of the rows that were new; duplicates were skipped, so match by dedupe key."""
    if not any(r["status"] != EventStatus.PENDING.value for r in rows):
        return [(i, EventStatus.PENDING.value) for i in ids]
    if len(ids) == len(rows):
        return [(i, r["status"]) for i, r in zip(ids, rows, strict=True)]
    found = db.session.execute(select(EVENT.c.id, EVENT.c.status)
                               .where(EVENT.c.id.in_(ids))).all()
    return [(row.id, row.status) for row in found]


def ingest(integration: Integration, events: Sequence[NewEvent], kick: bool = True
           ) -> IngestResult:
    """Store events for an integration in one transaction, then queue their processing."""
    ids, duplicates = store(integration.id, events, kick)
    return IngestResult(len(ids), duplicates)


def get_event(event_id: int) -> Event:
    """Return the event with this id; raise NotFound otherwise."""
    event = db.session.get(Event, event_id)
    if event is None:
        raise NotFound(f"event {event_id} does not exist")
    return event


REPLAYABLE = (EventStatus.SKIPPED.value, EventStatus.FAILED.value)


def replay(event_id: int) -> Event:
    """Put a skipped or failed event back in the queue (a processed one cannot be replayed)."""
    event = get_event(event_id)
    refused = replay_many([event_id], audit.actor())
    if refused:
        db.session.rollback()
        raise Conflict(refused[0][1])
    db.session.commit()
    _kick_after_commit()
    db.session.refresh(event)
    return event


def replay_many(ids: Sequence[int], actor: str) -> list[tuple[int, str]]:
    """Put these events back in the queue in the caller's transaction, each audited; the ones
    refused, with why (only skipped or failed events can be replayed). The caller commits and
    then calls `kick()`."""
    rows = {row.id: row for row in db.session.execute(
        select(EVENT.c.id, EVENT.c.status, EVENT.c.result).where(EVENT.c.id.in_(list(ids))))}
    refused = [(i, f"event {i} does not exist") for i in ids if i not in rows]
    refused += [(i, f"event {i} is {row.status}; only skipped or failed events can be replayed")
                for i, row in rows.items() if row.status not in REPLAYABLE]
    wanted = [i for i, row in rows.items() if row.status in REPLAYABLE]
    if not wanted:
        return refused
    # Guarded by the status again: an event a worker picked up meanwhile is not touched.
    # Tried afresh: attempts used up before the cause was fixed must not fail it again at once.
    done = set(db.session.scalars(update(EVENT).where(
        EVENT.c.id.in_(wanted), EVENT.c.status.in_(REPLAYABLE))
        .values(status=EventStatus.PENDING.value, attempts=0,
                result=func.substr("replayed (was: " + func.coalesce(EVENT.c.result, "") + ")",
                                   1, 1000))
        .returning(EVENT.c.id)))
    for event_id in wanted:
        row = rows[event_id]
        if event_id in done:
            audit.record("replay", "event", str(event_id),
                         {"was": row.status, "result": (row.result or "")[:300]}, who=actor)
        else:
            refused.append((event_id, f"event {event_id} changed meanwhile; look again"))
    return refused


def kick() -> None:
    """Ask the queue for a processing job after events were put back (see `replay_many`)."""
    _kick_after_commit()


def oldest_pending_age() -> float | None:
    """Seconds the oldest pending event has waited, or None when none waits."""
    oldest = db.session.scalar(select(EVENT.c.received_at).where(
        EVENT.c.status == EventStatus.PENDING.value).order_by(EVENT.c.id).limit(1))
    if oldest is None:
        return None
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=utcnow().tzinfo)
    return (utcnow() - oldest).total_seconds()


def has_pending() -> bool:
    """Whether any event waits for processing."""
    return db.session.scalar(
        select(EVENT.c.id).where(EVENT.c.status == EventStatus.PENDING.value).limit(1)
    ) is not None


def pending_other_than(source: str, at_least: int) -> int:
    """How many pending events of sources other than `source` wait, counted up to `at_least`.

    Two short range scans of the pending events by source (ix_event_pending_source), below and
    above `source`, each stopping at `at_least` rows: cheap however many events of `source`
    itself wait, never a count over the table.
    """
    limit = max(1, at_least)
    pending = EVENT.c.status == EventStatus.PENDING.value
    # Ordered as the index is, so each scan walks it and stops at the limit.
    order = (EVENT.c.source, EVENT.c.id)
    below = select(EVENT.c.id).where(pending, EVENT.c.source < source).order_by(*order) \
        .limit(limit).subquery()
    above = select(EVENT.c.id).where(pending, EVENT.c.source > source).order_by(*order) \
        .limit(limit).subquery()
    found = db.session.execute(select(
        select(func.count()).select_from(below).scalar_subquery(),
        select(func.count()).select_from(above).scalar_subquery())).one()
    return min(limit, int(found[0]) + int(found[1]))


def waiting_other_than(source: str, at_least: int) -> int:
    """Events of other sources than `source` that wait, counted up to `at_least`: those
    pending in the inbox and those large ingests announce while they are being stored."""
    pending = pending_other_than(source, at_least)
    if pending >= at_least:
        return pending
    try:
        incoming = get_queue().incoming(source)
    except Exception as exc:  # noqa: BLE001 — without the queue, the inbox alone says
        log.warning("could not read announcements (%s: %s)", type(exc).__name__, exc)
        incoming = 0
    return min(max(1, at_least), pending + incoming)



@dataclass
class EventFilters:
    """The filters of the Events page and API."""

    integration: str | None = None
    status: str | None = None
    source: str | None = None
    run_id: int | None = None
    instance_id: int | None = None


# Events are a log: past a thousand, "more than 1,000" says enough, and counting further
# through millions of rows would cost more than the page itself.
EVENT_COUNT_BOUND = 1_000


def check_event_filters(filters: EventFilters) -> None:
    """ValidationFailed when a filter value cannot be one (an unknown status)."""
    if filters.status and filters.status not in [s.value for s in EventStatus]:
        raise ValidationFailed([RuleError("status", "must be pending, processed, skipped or "
                                                    "failed")])


def event_where(query: Any, filters: EventFilters) -> Any:
    """Add the filters to a query over the event table (ids looked up first, no joins)."""
    check_event_filters(filters)
    if filters.integration:
        integration_id = db.session.scalar(select(Integration.id).where(
            Integration.code == filters.integration.strip().upper()))
        query = query.where(Event.integration_id == (integration_id or -1))
    if filters.status:
        query = query.where(Event.status == filters.status)
    if filters.source:
        query = query.where(Event.source == filters.source)
    if filters.run_id is not None:
        query = query.where(Event.run_id == filters.run_id)
    if filters.instance_id is not None:
        query = query.where(Event.instance_id == filters.instance_id)
    return query


def list_events(filters: EventFilters, limit: int = 50, cursor: int | None = None,
                before: int | None = None) -> tuple[list[Event], int | None]:
    """A page of events, newest first; the cursor is the id to continue below.

    `before` (an id) gives the page just above it instead: the previous page.
    """
    rows, next_id, _ = list_events_page(filters, limit, cursor, before)
    return rows, next_id


def list_events_page(filters: EventFilters, limit: int = 50, cursor: int | None = None,
                     before: int | None = None
                     ) -> tuple[list[Event], int | None, int | None]:
    """A page of events, newest first: (rows, next cursor, previous cursor (`before`))."""
    size = max(1, min(limit, 500))
    query = event_where(select(Event), filters)
    if before is not None:
        rows = list(db.session.scalars(query.where(Event.id > before)
                                       .order_by(Event.id.asc()).limit(size + 1)))
        more_above = len(rows) > size
        rows = list(reversed(rows[:size]))
        return rows, (rows[-1].id if rows else None), (rows[0].id if rows and more_above
                                                       else None)
    if cursor is not None:
        query = query.where(Event.id < cursor)
    rows = list(db.session.scalars(query.order_by(Event.id.desc()).limit(size + 1)))
    next_id = rows[size - 1].id if len(rows) > size else None
    rows = rows[:size]
    return rows, next_id, (rows[0].id if rows and cursor is not None else None)


def count_events(filters: EventFilters, bound: int = EVENT_COUNT_BOUND) -> tuple[int, bool]:
    """How many events match: (exact, False), or (bound, True) when there are more."""
    limited = event_where(select(Event.id), filters).limit(bound + 1).subquery()
    total = db.session.scalar(select(func.count()).select_from(limited)) or 0
    return (bound, True) if total > bound else (total, False)
