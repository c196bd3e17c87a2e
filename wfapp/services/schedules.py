"""Scheduled triggers (polls): one timer per waiting instance and scheduled transition.

A trigger type whose `schedule_seconds(config)` returns a number is *scheduled*: for every active
instance in a transition's From State (transition enabled) there is one `instance_timer` row
that says when that instance is next due for that transition. Like the timeout sweep, the
timers live in the database, so a restart loses none.

- Which transitions are scheduled is read from each instance's own workflow version (the
  immutable document, see `versions.py`), never from the latest definition rows: an instance
  pinned to version 1 is polled as version 1 says (URL, interval), and not at all when its
  version has no poll transition leaving its state.
- `sync()` keeps the timers in step with the instances, set-based: it drops timers whose
  instance left the state, re-entered it (`entered_at` differs from the instance's
  `entered_state_at`) or ended, or whose transition is gone from the instance's version, disabled
  or of another trigger type there; and it creates the missing ones (first due =
  entered_state_at + interval).
- `claim_due()` selects due timers (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite takes its
  single write lock first), moves each one's `due_at` one interval ahead and commits, all in one
  transaction: two schedulers never claim one instance twice per interval. A timer that fell
  behind (the workers were down) is due once, then one interval after the claim — a restart
  never fires a burst of catch-up polls. A disabled workflow or integration keeps its timers
  but none is claimed; they are due at once when it is enabled again.
- `finish_many()` records how claimed runs went: success resets the failure count; a failure
  backs off (see `backoff_seconds`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count
from typing import Any

from flask import current_app
from sqlalchemy import (
    Float,
    Interval,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import affected, db
from ..models import Instance, InstanceTimer, Integration, Workflow, WorkflowVersion, utcnow
from .registry import get_registry
from .versions import compiled_workflow

TIMER = InstanceTimer.__table__
INSTANCE = Instance.__table__
VERSION = WorkflowVersion.__table__
WORKFLOW = Workflow.__table__
INTEGRATION = Integration.__table__

#: A failing timer waits at most this long (or its own interval, when that is longer).
MAX_BACKOFF_SECONDS = 3600.0
#: ... and at most this many intervals.
MAX_BACKOFF_INTERVALS = 10
ERROR_LIMIT = 1000

# Which integration a claim starts with, so that under a small limit no integration is always
# served last (round-robin across claims in this process).
_rotation = count()


@dataclass(frozen=True)
class ScheduledTransition:
    """A transition of a scheduled trigger type in one workflow version, with its interval."""

    workflow_id: int
    version: int
    code: str
    from_state: str
    enabled: bool
    config: Mapping[str, Any]
    interval: float


#: (workflow id, version, transition code): the key of a scheduled transition.
Key = tuple[int, int, str]


@dataclass(frozen=True)
class ClaimedTimer:
    """One claimed timer with what its run needs (the instance as it was at the claim)."""

    timer_id: int
    instance_id: int
    integration_id: int
    workflow_id: int
    transition: str
    config: Mapping[str, Any]
    interval: float
    due_at: datetime
    record_key: str | None
    run_id: int | None
    state: str
    vars: Mapping[str, Any]
    data: Mapping[str, Any]
    failures: int
    #: The workflow version the instance follows (whose transition this run polls for).
    workflow_version: int = 0


def _version_cache() -> dict[tuple[str, int, datetime, int], tuple[ScheduledTransition, ...]]:
    """Scheduled transitions per (trigger type, workflow, its creation, version), per app.

    Versions never change, so what a version schedules is worked out once; the key carries the
    workflow's creation time because a re-created workflow may get the same id.
    """
    store: dict[tuple[str, int, datetime, int], tuple[ScheduledTransition, ...]] = \
        current_app.extensions["wfapp"].setdefault("scheduled_versions", {})
    return store


def _of_version(trigger: Any, trigger_type: str, workflow_id: int, number: int
                ) -> tuple[ScheduledTransition, ...]:
    """The transitions of `trigger_type` in one version that their plugin gives an interval."""
    compiled = compiled_workflow(workflow_id, number)
    if compiled is None:
        return ()
    out = []
    for t in compiled.transitions.values():
        if t.trigger_type != trigger_type:
            continue
        config = dict(t.config)
        try:
            seconds = trigger.schedule_seconds(config)
        except (TypeError, ValueError):
            seconds = None
        if seconds is None or not seconds > 0:
            continue
        out.append(ScheduledTransition(workflow_id, number, t.code, t.from_state,
                                       bool(t.enabled), config, float(seconds)))
    return tuple(out)


def scheduled_transitions(trigger_type: str, workflow_ids: Iterable[int] | None = None
                          ) -> dict[Key, ScheduledTransition]:
    """Transitions of `trigger_type` that their plugin gives an interval, in every version,
    by (workflow, version, code): each instance is scheduled by the version it follows."""
    trigger = get_registry().trigger_types.get(trigger_type)
    if trigger is None:
        return {}
    query = (select(VERSION.c.workflow_id, VERSION.c.number, WORKFLOW.c.created_at)
             .join(WORKFLOW, WORKFLOW.c.id == VERSION.c.workflow_id))
    if workflow_ids is not None:
        query = query.where(VERSION.c.workflow_id.in_(list(workflow_ids)))
    cache = _version_cache()
    out = {}
    for workflow_id, number, created_at in db.session.execute(query).all():
        key = (trigger_type, workflow_id, created_at, number)
        found = cache.get(key)
        if found is None:
            found = cache[key] = _of_version(trigger, trigger_type, workflow_id, number)
        for t in found:
            out[(workflow_id, number, t.code)] = t
    return out


def _applies(transitions: Mapping[Key, ScheduledTransition]) -> Any:
    """SQL: the timer's transition leaves its instance's state in the version it follows."""
    valid = [(t.workflow_id, t.version, t.from_state, t.code)
             for t in transitions.values() if t.enabled]
    return tuple_(INSTANCE.c.workflow_id, INSTANCE.c.workflow_version, INSTANCE.c.state,
                  TIMER.c.transition).in_(valid)


def _plus_seconds(column: Any, seconds: float) -> Any:
    """SQL for `column + seconds` on this database (the timers are set-based SQL)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return column + func.make_interval(0, 0, 0, 0, 0, 0, cast(literal(seconds), Float),
                                           type_=Interval)
    # SQLite keeps datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text; strftime gives milliseconds.
    return func.strftime("%Y-%m-%d %H:%M:%f", column, f"{seconds:+.3f} seconds").op("||")("000")


def _insert_ignoring_conflicts(columns: list[str], query: Any) -> Any:
    dialect = db.session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(TIMER).from_select(columns, query).on_conflict_do_nothing(
        index_elements=["instance_id", "transition"])


def sync(trigger_type: str) -> tuple[int, int]:
    """Drop stale timers and create missing ones, set-based; commits. Returns (dropped, made)."""
    transitions = scheduled_transitions(trigger_type)
    # Stale: no such instance state any more, re-entered, ended, moved to another workflow, or
    # the transition is gone from the instance's version, disabled there, or no longer of this
    # (scheduled) trigger type (a transition whose interval became invalid is not in
    # `transitions`: its timers go too).
    #
    # Each timer is joined to its instance by the instance's primary key (an outer join, the
    # version test after it): with a correlated EXISTS carrying the version test, PostgreSQL
    # could pick the (workflow, version, state) index instead and, with statistics from before a
    # bulk load, loop over every waiting instance for every timer — minutes on 100,000 rows.
    current = and_(INSTANCE.c.active.is_(True),
                   INSTANCE.c.entered_state_at == TIMER.c.entered_at,
                   INSTANCE.c.workflow_id == TIMER.c.workflow_id, _applies(transitions))
    stale_ids = (select(TIMER.c.id)
                 .select_from(TIMER.outerjoin(INSTANCE, INSTANCE.c.id == TIMER.c.instance_id))
                 .where(TIMER.c.trigger_type == trigger_type,
                        or_(INSTANCE.c.id.is_(None), not_(current))))
    stale = delete(TIMER).where(TIMER.c.id.in_(stale_ids.scalar_subquery()))
    dropped = affected(db.session.execute(stale))
    made = 0
    columns = ["instance_id", "workflow_id", "integration_id", "transition", "trigger_type",
               "entered_at", "due_at", "failures", "last_error"]
    for (workflow_id, version, code), t in transitions.items():
        if not t.enabled:
            continue
        # An index probe on ix_instance_workflow_version: a version without waiting instances
        # costs next to nothing.
        missing = select(
            INSTANCE.c.id, INSTANCE.c.workflow_id, INSTANCE.c.integration_id,
            literal(code), literal(trigger_type), INSTANCE.c.entered_state_at,
            _plus_seconds(INSTANCE.c.entered_state_at, t.interval), literal(0), literal(""),
        ).where(
            INSTANCE.c.workflow_id == workflow_id, INSTANCE.c.workflow_version == version,
            INSTANCE.c.state == t.from_state, INSTANCE.c.active.is_(True),
            not_(exists().where(TIMER.c.instance_id == INSTANCE.c.id,
                                TIMER.c.transition == code)))
        made += len(db.session.execute(
            _insert_ignoring_conflicts(columns, missing).returning(TIMER.c.id)).all())
    db.session.commit()
    return dropped, made


def _take_write_lock() -> None:
    """On SQLite, start the transaction with the database's write lock (no SKIP LOCKED there).

    Any UPDATE takes SQLite's single write lock for the rest of the transaction, even one that
    changes no row; a second scheduler waits here and then sees the first one's claims.
    """
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.commit()  # a fresh transaction, so the lock comes with the latest snapshot
        db.session.execute(text("UPDATE instance_timer SET failures = failures WHERE 0"))


def _due_integrations(trigger_type: str, now: datetime) -> list[int]:
    """Enabled integrations with due timers (a disabled one keeps its timers, unclaimed)."""
    enabled = select(INTEGRATION.c.id).where(INTEGRATION.c.enabled.is_(True))
    return list(db.session.scalars(
        select(TIMER.c.integration_id).where(TIMER.c.trigger_type == trigger_type,
                                             TIMER.c.due_at <= now,
                                             TIMER.c.integration_id.in_(enabled)).distinct()))


def _lock_due(trigger_type: str, integration_id: int, limit: int, now: datetime
              ) -> list[Any]:
    """Lock up to `limit` due timers of one integration, oldest due first, in one query.

    The locking part reads one table through its (trigger_type, due_at) index only, so its cost
    grows with `limit`, not with how many timers are due; timers of disabled workflows are
    passed over (and kept). Each locked timer comes back with its instance when it is still
    there (`found`), else stale: its instance moved on since the last sync.
    """
    paused = select(WORKFLOW.c.id).where(WORKFLOW.c.enabled.is_(False))
    locked = (select(TIMER.c.id)
              .where(TIMER.c.trigger_type == trigger_type, TIMER.c.due_at <= now,
                     TIMER.c.integration_id == integration_id,
                     TIMER.c.workflow_id.not_in(paused))
              .order_by(TIMER.c.due_at, TIMER.c.id).limit(limit))
    if db.session.get_bind().dialect.name == "postgresql":
        locked = locked.with_for_update(skip_locked=True)
    locked_cte = locked.cte("locked")
    # Whether the timer still applies to its instance's version is decided by the caller,
    # against the scheduled transitions of that version.
    query = (
        select(TIMER.c.id, TIMER.c.instance_id, TIMER.c.integration_id, TIMER.c.workflow_id,
               TIMER.c.transition, TIMER.c.due_at, TIMER.c.failures, INSTANCE.c.record_key,
               INSTANCE.c.run_id, INSTANCE.c.state, INSTANCE.c.vars, INSTANCE.c.data,
               INSTANCE.c.workflow_version, INSTANCE.c.id.is_not(None).label("found"))
        .select_from(locked_cte)
        .join(TIMER, TIMER.c.id == locked_cte.c.id)
        .outerjoin(INSTANCE, and_(INSTANCE.c.id == TIMER.c.instance_id,
                                  INSTANCE.c.entered_state_at == TIMER.c.entered_at,
                                  INSTANCE.c.workflow_id == TIMER.c.workflow_id,
                                  INSTANCE.c.active.is_(True)))
        .order_by(TIMER.c.due_at, TIMER.c.id))
    return list(db.session.execute(query))


def _current(row: Any, transitions: Mapping[Key, ScheduledTransition]
             ) -> ScheduledTransition | None:
    """The scheduled transition a locked timer runs for, None when it no longer applies: its
    instance moved on, or the version it follows has no such enabled transition from its state."""
    if not row.found:
        return None
    t = transitions.get((row.workflow_id, row.workflow_version, row.transition))
    return t if t is not None and t.enabled and t.from_state == row.state else None


def next_due_after_claim(due_at: datetime, interval: float, now: datetime) -> datetime:
    """One interval after the claimed due time; one interval from now when it fell behind."""
    step = timedelta(seconds=interval)
    following = due_at + step
    return following if following > now else now + step


def _claim_batch(trigger_type: str, integration_id: int, limit: int, now: datetime,
                 transitions: Mapping[Key, ScheduledTransition]
                 ) -> list[ClaimedTimer]:
    """Claim due timers of one integration and move them one interval ahead (not committed).

    A locked timer that no longer applies (its instance moved on since the last sync) is
    dropped here, as the next sync would, and its place is filled from the timers behind it.
    """
    claimed: list[ClaimedTimer] = []
    for _ in range(5):
        want = limit - len(claimed)
        rows = _lock_due(trigger_type, integration_id, want, now)
        batch = []
        for r in rows:
            t = _current(r, transitions)
            if t is not None:
                batch.append(ClaimedTimer(
                    r.id, r.instance_id, r.integration_id, r.workflow_id, r.transition,
                    t.config, t.interval, r.due_at, r.record_key, r.run_id, r.state,
                    dict(r.vars or {}), dict(r.data or {}), r.failures, t.version))
        if batch:
            db.session.execute(
                update(TIMER).where(TIMER.c.id == bindparam("tid"))
                .values(due_at=bindparam("due"), last_run_at=now),
                [{"tid": c.timer_id, "due": next_due_after_claim(c.due_at, c.interval, now)}
                 for c in batch])
        claimed.extend(batch)
        stale = {r.id for r in rows} - {c.timer_id for c in batch}
        if stale:
            db.session.execute(delete(TIMER).where(TIMER.c.id.in_(list(stale))))
        if len(rows) < want or not stale:
            break  # nothing more is due, or every locked timer was claimed
    return claimed


def claim_due(trigger_type: str, limit: int, *, per_integration: Mapping[int, int] | None = None,
              sync_first: bool = False, now: datetime | None = None) -> list[ClaimedTimer]:
    """Claim up to `limit` due timers and move them one interval ahead; commits.

    `per_integration`, when given, caps the claim per integration id; integrations it does not
    name (or names with 0) are not claimed this time. The limit is shared out across the
    integrations with due work, starting with a different one each call. `sync_first` runs
    `sync()` before claiming.
    """
    if sync_first:
        sync(trigger_type)
    if limit <= 0:
        return []
    transitions = scheduled_transitions(trigger_type)
    _take_write_lock()
    now = now or utcnow()
    caps = dict(per_integration) if per_integration is not None else None
    integrations = [i for i in _due_integrations(trigger_type, now)
                    if caps is None or caps.get(i, 0) > 0]
    if integrations:
        start = next(_rotation) % len(integrations)
        integrations = integrations[start:] + integrations[:start]
    claimed: list[ClaimedTimer] = []
    left = {i: (caps[i] if caps is not None else limit) for i in integrations}
    # Share the limit out; what an integration with fewer due timers leaves goes round again to
    # those that filled their share.
    while integrations and len(claimed) < limit:
        again = []
        for position, integration_id in enumerate(integrations):
            remaining = limit - len(claimed)
            if remaining <= 0:
                break
            share = min(math.ceil(remaining / (len(integrations) - position)),
                        left[integration_id])
            batch = _claim_batch(trigger_type, integration_id, share, now, transitions)
            claimed.extend(batch)
            left[integration_id] -= len(batch)
            if len(batch) == share and left[integration_id] > 0:
                again.append(integration_id)
        integrations = again
    db.session.commit()
    return claimed


def release(claims: Sequence[tuple[int, datetime]]) -> None:
    """Give claimed runs that never started back: each timer is due again at its claimed time.

    For a scheduler that stops with claims it has not started (a worker's warm shutdown), so
    a restart loses none of them. Commits.
    """
    if claims:
        db.session.execute(update(TIMER).where(TIMER.c.id == bindparam("tid"))
                           .values(due_at=bindparam("due")),
                           [{"tid": timer_id, "due": due} for timer_id, due in claims])
    db.session.commit()


def backoff_seconds(interval: float, failures: int) -> float:
    """How long a timer waits after its `failures`-th failure in a row.

    interval × 2^failures, capped at 10 intervals and at 1 hour — but never less than one
    interval (a timer whose interval is over an hour keeps its interval).
    """
    cap = max(interval, min(MAX_BACKOFF_INTERVALS * interval, MAX_BACKOFF_SECONDS))
    return min(cap, interval * 2.0 ** min(failures, 32))


@dataclass(frozen=True)
class Finished:
    """How one claimed run went: `error` None for success."""

    timer_id: int
    interval: float
    failures: int  # the failure count at the claim
    error: str | None = None


def finish_many(results: Sequence[Finished], now: datetime | None = None) -> None:
    """Record runs: reset the failure count of successes, back off failures; commits.

    A timer that was dropped meanwhile (its instance moved on) is simply not there any more.
    """
    now = now or utcnow()
    recovered = [{"tid": r.timer_id} for r in results if r.error is None and r.failures]
    failed = [{"tid": r.timer_id, "n": r.failures + 1, "error": r.error[:ERROR_LIMIT],
               "due": now + timedelta(seconds=backoff_seconds(r.interval, r.failures + 1))}
              for r in results if r.error is not None]
    if recovered:
        db.session.execute(update(TIMER).where(TIMER.c.id == bindparam("tid"))
                           .values(failures=0, last_error=""), recovered)
    if failed:
        db.session.execute(update(TIMER).where(TIMER.c.id == bindparam("tid"))
                           .values(failures=bindparam("n"), last_error=bindparam("error"),
                                   due_at=bindparam("due"), last_run_at=now), failed)
    db.session.commit()


def finish(timer_id: int, error: str | None = None) -> None:
    """Record one run (see `finish_many`); the interval and failure count are read here."""
    row = db.session.execute(
        select(TIMER.c.workflow_id, TIMER.c.transition, TIMER.c.trigger_type, TIMER.c.failures,
               INSTANCE.c.workflow_version)
        .join(INSTANCE, INSTANCE.c.id == TIMER.c.instance_id)
        .where(TIMER.c.id == timer_id)).first()
    if row is None:
        db.session.commit()
        return
    t = scheduled_transitions(row.trigger_type, [row.workflow_id]).get(
        (row.workflow_id, row.workflow_version, row.transition))
    interval = t.interval if t is not None else 60.0
    finish_many([Finished(timer_id, interval, row.failures, error)])
