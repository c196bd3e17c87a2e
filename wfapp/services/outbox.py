"""Transition actions: planned in the transition's transaction, delivered after it commits.

`plan()` runs inside `firing.move()`: in-transaction actions (`set_variable`) change the
variables the move writes, side-effecting ones become outbox rows (`action_delivery`). The
`deliver_actions` job wakes a per-process executor whose pump claims a batch of due rows —
taking a lease (visibility timeout) and counting the attempt in one transaction, within the
per-integration and per-action concurrency limits — whose request threads make the calls with
no transaction open, and whose pump then records a batch of results in one transaction:
succeeded, retried later (capped exponential backoff with jitter, or the receiver's
`Retry-After`), or failed after its last attempt. A worker killed mid-delivery leaves rows
whose lease runs out, and another worker delivers them again with the same `Idempotency-Key`:
at least once, never lost.

The outcome (succeeded, or failed for good) is stored as an `on_action_result` event of the
instance through the inbox, in the transaction that records the result, with a dedupe key per
delivery, so it moves the instance exactly once however often the delivery was retried.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import random
import threading
import time
import uuid
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import (
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from ..actions import ActionContext, ActionResult, ActionType
from ..engine import CompiledTransition
from ..extensions import affected, db
from ..models import ActionDelivery, ActionStatus, Integration, utcnow
from ..yielding import InboxYield
from . import audit, config_cache, counters, secrets
from .errors import Conflict, NotFound
from .events import EVENT_ROW_KEYS, NewEvent, event_rows, kick_soon, stage, store
from .registry import get_registry
from .rowsets import insert_rows, json_text

DELIVERY = ActionDelivery.__table__
RESULT_SOURCE = "on_action_result"
log = logging.getLogger(__name__)


# --- planning, inside the transition's transaction ----------------------------------------------


def apply_in_transaction(transition: CompiledTransition, context: ActionContext,
                         action_types: dict[str, ActionType]) -> dict[str, Any]:
    """The variables after the transition's in-transaction actions (set_variable), in order."""
    values = dict(context.vars)
    for action in transition.actions:
        kind = action_types.get(action.get("type") or "")
        if kind is not None and kind.in_transaction:
            context.vars = values
            values = {**values, **kind.apply(action.get("config") or {}, context)}
    return values


#: What an outbox row keeps of the action's context (secrets and settings are read when the
#: delivery runs; the delivery's own id, key and attempt are its columns).
SNAPSHOT_FIELDS = tuple(name for name in ActionContext.__dataclass_fields__
                        if name not in ("secrets", "settings", "delivery_id", "idempotency_key",
                                        "attempt"))


def outbox_rows(transition: CompiledTransition, context: ActionContext, workflow_id: int,
                integration_id: int, event_id: int | None, now: datetime,
                action_types: dict[str, ActionType]) -> list[dict[str, Any]]:
    """The outbox rows of the transition's side-effecting actions (one per delivery)."""
    rows = []
    # Shallow (asdict's deep copy cost several times the engine's decision per transition):
    # the values come from JSON and are not changed in place; the dicts are copied one level.
    snapshot = {name: (dict(value) if isinstance(value, dict) else value)
                for name in SNAPSHOT_FIELDS for value in (getattr(context, name),)}
    for position, action in enumerate(transition.actions):
        kind = action_types.get(action.get("type") or "")
        if kind is None or kind.in_transaction:
            continue  # an unknown type was refused on save; its plugin was removed since
        for config in kind.split(action.get("config") or {}):
            rows.append({
                "instance_id": context.instance_id, "workflow_id": workflow_id,
                "integration_id": integration_id, "transition": transition.code,
                "position": position, "action_id": str(action.get("id") or ""),
                "type": kind.name, "config": config, "context": snapshot,
                "status": ActionStatus.PENDING.value, "attempts": 0,
                "max_attempts": kind.max_attempts(config), "next_attempt_at": now,
                "lease_until": None, "leased_by": "", "idempotency_key": uuid.uuid4().hex,
                "last_status_code": None, "last_error": "", "request": {}, "response": None,
                "event_id": event_id, "created_at": now, "updated_at": now,
                "finished_at": None})
    return rows


def write_outbox(conn: Any, rows: list[dict[str, Any]]) -> None:
    """Insert outbox rows in the caller's transaction; wake a delivery once it commits."""
    if not rows:
        return
    # One statement for the batch on PostgreSQL (an executemany is a statement per row there).
    insert_rows(conn, DELIVERY, rows)
    _wake_after_commit()


def _wake_after_commit() -> None:
    session = db.session()
    if session.info.get("wfapp_wake_actions"):
        return
    session.info["wfapp_wake_actions"] = True
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def after_commit(_session: Any) -> None:
        _session.info.pop("wfapp_wake_actions", None)
        with app.app_context():
            wake()

    def after_rollback(_session: Any, _previous: Any) -> None:
        _session.info.pop("wfapp_wake_actions", None)

    from sqlalchemy import event

    event.listen(session, "after_commit", after_commit, once=True)
    event.listen(session, "after_soft_rollback", after_rollback, once=True)


def wake() -> None:
    """Wake this process's executor if it runs here (a worker, or the embedded queue), and
    queue a delivery job for the others (deliveries are also picked up by the schedule).

    The direct wake matters on a busy worker: the job waits in the queue behind event
    processing, and the deliveries of the transitions it commits would wait with it.
    """
    from ..queue import get_queue

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _executors_lock:
        local = _executors.get(app)
    if local is not None:
        local.wake()
    try:
        queue = get_queue()
        if queue.once("actions-wake", 0.2):
            queue.enqueue("wfapp.jobs.deliver_actions")
    except Exception as exc:  # noqa: BLE001 — the schedule delivers them once the queue is back
        log.warning("actions queued, but the queue is unreachable (%s: %s)",
                    type(exc).__name__, exc)


# --- delivering ---------------------------------------------------------------------------------

#: PostgreSQL advisory lock the claims take in turn, so that two processes counting the running
#: deliveries at the same time cannot both take the last slot of a concurrency limit.
CLAIM_LOCK = 0x7766_6F75
#: Attempts to record a batch of results before they are dropped (the database is away): the
#: rows' leases then run out and they are delivered again, with the same idempotency key.
STORE_ATTEMPTS = 5
#: How long the pump waits before claiming again when a concurrency limit held back every due
#: delivery (their slots are taken by calls running elsewhere, which free them when recorded).
HELD_BACK_PAUSE = 0.1
#: How long an idle executor pump (nothing queued, running or to record) lives before it exits.
IDLE_SECONDS = 2.0
#: How often a pump with deliveries to claim looks at the inbox for events waiting (yielding).
YIELD_CHECK_SECONDS = 0.25


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt: capped exponential, with full jitter over its top half."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return ceiling / 2 + random.random() * ceiling / 2


@dataclass
class Row:
    """What recording a delivery's result needs of its row (read when it was claimed)."""

    id: int
    instance_id: int | None
    integration_id: int
    action_id: str
    type: str
    transition: str
    context: dict[str, Any]
    request: dict[str, Any]
    max_attempts: int


ROW_COLUMNS = tuple(DELIVERY.c[name] for name in Row.__dataclass_fields__)


@dataclass
class Claimed:
    """A leased delivery with all its attempt needs, read in the claim (no query during it)."""

    id: int
    attempt: int
    owner: str
    type: str
    kind: ActionType | None
    config: dict[str, Any]
    context: ActionContext
    row: Row


def _due(now: datetime) -> Any:
    """Pending with its next attempt due, or running with an expired lease (its worker died)."""
    return or_(and_(DELIVERY.c.status == ActionStatus.PENDING.value,
                    DELIVERY.c.next_attempt_at <= now),
               and_(DELIVERY.c.status == ActionStatus.RUNNING.value,
                    DELIVERY.c.lease_until < now))


def _candidates(now: datetime, n: int) -> list[Any]:
    """Up to `n` due deliveries of each kind — pending and due, or running with an expired
    lease — oldest due first.

    Two ordered reads of the partial indexes (pending rows, running rows) instead of one read
    with OR: with OR the planner scans the whole table, finished deliveries included.
    """
    c = DELIVERY.c
    columns = (c.id, c.integration_id, c.workflow_id, c.transition, c.position, c.action_id,
               c.type, c.config, c.next_attempt_at)
    pending = list(db.session.execute(
        select(*columns).where(c.status == ActionStatus.PENDING.value, c.next_attempt_at <= now)
        .order_by(c.next_attempt_at, c.id).limit(n)))
    expired = list(db.session.execute(
        select(*columns).where(c.status == ActionStatus.RUNNING.value, c.lease_until < now)
        .order_by(c.next_attempt_at, c.id).limit(n)))
    if not expired:
        return pending
    return sorted(pending + expired, key=lambda row: (row.next_attempt_at is None,
                                                      row.next_attempt_at or now, row.id))


def _action_key(row: Any) -> tuple[Any, ...]:
    """The action a per-action limit counts: its id (else its place) in its transition."""
    return (row.workflow_id, row.transition, row.action_id or f"#{row.position}")


def _postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def claim(limit: int, owner: str, now: datetime | None = None) -> list[Claimed]:
    """Lease up to `limit` due deliveries within the concurrency limits; commits.

    The attempt is counted here, before the call, so a kill mid-delivery counts too.
    """
    return _claim(limit, owner, now)[0]


def _claim(limit: int, owner: str, now: datetime | None = None
           ) -> tuple[list[Claimed], bool]:
    """`claim`, and whether due deliveries were left (the limit or a cap reached); commits."""
    try:
        found = _claim_in_transaction(limit, owner, now or utcnow())
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return found


def _claim_in_transaction(limit: int, owner: str, now: datetime,
                          finished: Callable[[], set[int]] = set) -> tuple[list[Claimed], bool]:
    """Lease due deliveries in the caller's transaction: the claimed ones, and whether due
    ones were left (the limit or a cap reached).

    Leased rows — running anywhere, or claimed and waiting for a thread — count against the
    integration's limit (ACTION_CONCURRENCY_PER_INTEGRATION) and the action's own
    (`max_concurrency` in its config), so at most that many calls run at once across all
    processes; on PostgreSQL claims take turns (a transaction-level advisory lock) so two
    processes cannot both take the last slot. `finished()` names leased rows of the caller
    whose calls are over (their results not recorded yet): they hold no slot. Candidates,
    running counts, one UPDATE … RETURNING of the lease.
    """
    if limit <= 0:
        return [], False
    cfg = current_app.config
    lease = float(cfg.get("ACTION_LEASE_SECONDS", 120))
    per_integration = int(cfg.get("ACTION_CONCURRENCY_PER_INTEGRATION", 4))
    registry = get_registry().action_types
    c = DELIVERY.c
    if _postgres():
        # Claims take turns, so the candidates need no row locks (locking a hundred rows per
        # round is a write each); the UPDATE below re-checks that each is still due.
        db.session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
    candidates = _candidates(now, max(limit * 4, 100))
    if not candidates:
        return [], False
    over = finished()  # read after the lock: a call that ended meanwhile frees its slot
    running = (select(c.integration_id, c.workflow_id, c.transition, c.position, c.action_id,
                      func.count().label("n"))
               .where(c.status == ActionStatus.RUNNING.value, c.lease_until >= now,
                      c.integration_id.in_({r.integration_id for r in candidates}))
               .group_by(c.integration_id, c.workflow_id, c.transition, c.position,
                         c.action_id))
    if over:
        running = running.where(c.id.not_in(over))
    chosen = _choose(candidates, list(db.session.execute(running)), limit, per_integration,
                     registry)
    more = len(candidates) > len(chosen)
    if not chosen:
        return [], more
    leased = list(db.session.execute(
        update(DELIVERY).where(c.id.in_(chosen), _due(now))
        .values(status=ActionStatus.RUNNING.value, lease_until=now + timedelta(seconds=lease),
                leased_by=owner, attempts=c.attempts + 1, updated_at=now)
        .returning(*ROW_COLUMNS, c.config, c.attempts, c.idempotency_key)))
    order = {delivery_id: i for i, delivery_id in enumerate(chosen)}
    leased.sort(key=lambda row: order[row.id])  # oldest due first
    return _claimed(leased, owner, registry), more


def _choose(candidates: list[Any], running: list[Any], limit: int, per_integration: int,
            registry: dict[str, ActionType]) -> list[int]:
    """Up to `limit` candidate ids, oldest due first, that fit the concurrency limits beside
    the `running` counts (per integration and action)."""
    busy_integration: Counter[int] = Counter()
    busy_action: Counter[tuple[Any, ...]] = Counter()
    for row in running:
        busy_integration[row.integration_id] += row.n
        busy_action[_action_key(row)] += row.n
    chosen: list[int] = []
    for row in candidates:
        if len(chosen) >= limit:
            break
        kind = registry.get(row.type)
        cap = kind.max_concurrency(row.config or {}) if kind is not None else None
        key = _action_key(row)
        if busy_integration[row.integration_id] >= per_integration or \
                (cap is not None and busy_action[key] >= cap):
            continue
        busy_integration[row.integration_id] += 1
        busy_action[key] += 1
        chosen.append(row.id)
    return chosen


def _claimed(rows: list[Any], owner: str, registry: dict[str, ActionType]) -> list[Claimed]:
    """Claimed items with their contexts, the integration's code, settings and secrets filled.

    Secrets are never stored with the row; they are read when the delivery is claimed, from
    the per-process configuration cache (at most ACTION_CONFIG_SECONDS old, dropped at once by
    a change made in this process), so a busy outbox does not read and decrypt them per batch.
    """
    max_age = float(current_app.config.get("ACTION_CONFIG_SECONDS", 2))
    configs = {iid: config_cache.get(("action-integration", iid), max_age,
                                     functools.partial(_integration_config, iid))
               for iid in {row.integration_id for row in rows}}
    items = []
    for row in rows:
        snapshot = dict(row.context or {})
        context = ActionContext(**{k: v for k, v in snapshot.items()
                                   if k in ActionContext.__dataclass_fields__})
        code, settings, keys = configs[row.integration_id]
        context.integration = code or context.integration
        context.settings = dict(settings)
        context.delivery_id = row.id
        context.idempotency_key = row.idempotency_key
        context.attempt = row.attempts
        context.secrets = dict(keys)
        items.append(Claimed(row.id, row.attempts, owner, row.type, registry.get(row.type),
                             dict(row.config or {}), context, _row(row)))
    return items


def _integration_config(integration_id: int) -> tuple[str, dict[str, Any], dict[str, str]]:
    """An integration's code, settings and secrets (named ones and settings; empty if gone)."""
    integration = db.session.get(Integration, integration_id)
    keys = secrets.read_many({integration_id}, (secrets.NAMED, secrets.SETTING))
    return (integration.code if integration else "",
            dict(integration.settings or {}) if integration else {}, keys[integration_id])


def attempt(item: Claimed) -> ActionResult:
    """Make one attempt of a claimed delivery; no database work (the call may take long)."""
    if item.kind is None:
        return ActionResult(False, error=f"action type {item.type!r} is not installed",
                            retryable=False)
    try:
        return item.kind.deliver(item.config, item.context)
    except Exception as exc:  # noqa: BLE001 — a plugin's bug is a failed attempt, not a crash
        log.exception("action delivery %s raised", item.id)
        return ActionResult(False, error=f"{type(exc).__name__}: {exc}"[:500])


def deliver_one(item: Claimed) -> str | None:
    """Make one attempt of a claimed delivery and record it; return its new status."""
    return record([(item, attempt(item))])[item.id]


def finish(delivery_id: int, owner: str, attempt: int, result: ActionResult) -> str | None:
    """Record one attempt's result (see `record`); return the row's new status or None."""
    return record_results([(delivery_id, owner, attempt, result)])[delivery_id]


def _row(found: Any) -> Row:
    return Row(*(getattr(found, name) for name in Row.__dataclass_fields__))


def record(done: list[tuple[Claimed, ActionResult]]) -> dict[int, str | None]:
    """Record the results of claimed deliveries in one transaction (see `record_results`)."""
    return exchange([(item.row, item.owner, item.attempt, result) for item, result in done],
                    0, "")[0]


def record_results(done: list[tuple[int, str, int, ActionResult]]) -> dict[int, str | None]:
    """Record attempts' results, and the outcome events of the final ones, in one transaction.

    Each result is (delivery id, owner, attempt, result) and is guarded by owner and attempt:
    when the lease ran out and another worker took the row, this late result is dropped (the
    other attempt's result counts) and its status is None. Returns the new status per id.
    """
    rows = {row.id: _row(row) for row in db.session.execute(
        select(*ROW_COLUMNS).where(DELIVERY.c.id.in_([d[0] for d in done])))}
    out: dict[int, str | None] = {d[0]: None for d in done}
    out.update(exchange([(rows[i], owner, n, result) for i, owner, n, result in done
                         if i in rows], 0, "")[0])
    return out


def exchange(done: list[tuple[Row, str, int, ActionResult]], limit: int, owner: str,
             finished: Callable[[], set[int]] = set, conn: Connection | None = None
             ) -> tuple[dict[int, str | None], list[Claimed], bool]:
    """One executor round in one transaction: record results (see `record_results`), then
    claim up to `limit` more for `owner` (see `claim`; `finished` names its rows whose calls
    are over); returns the new statuses, the claimed deliveries and whether due ones were
    left. On PostgreSQL it runs on `conn` when given (the pump keeps one), and commits it."""
    if conn is None and not _postgres():
        try:
            out, queued = _record_in_transaction(done)
            items, more = _claim_in_transaction(limit, owner, utcnow(), finished)
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
    else:
        # PostgreSQL: a round is four statements in two round trips, whatever the batch holds
        # (see `_exchange_postgres`); on the pump's own connection it commits them itself.
        own = conn if conn is not None else db.session.connection()
        try:
            out, queued, leased, more = _exchange_postgres(own, done, limit, owner, finished,
                                                           commit=conn is not None)
            if conn is None:
                db.session.commit()
        except Exception:
            if conn is None:
                db.session.rollback()
            elif own.connection.driver_connection is not None:
                own.connection.driver_connection.rollback()
            raise
        items = _claimed(leased, owner, get_registry().action_types) if leased else []
    if queued:
        kick_soon()
    return out, items, more


def _results(done: list[tuple[Row, str, int, ActionResult]], now: datetime
             ) -> tuple[list[dict[str, Any]], dict[int, str], list[tuple[Row, NewEvent]]]:
    """Each result's row change, the status it gives its delivery and the outcome events of
    the final ones (succeeded, or failed after the last attempt)."""
    cfg = current_app.config
    base = float(cfg.get("ACTION_BACKOFF_BASE", 2.0))
    cap = float(cfg.get("ACTION_BACKOFF_CAP", 600.0))
    changes: list[dict[str, Any]] = []
    statuses: dict[int, str] = {}
    outcomes: list[tuple[Row, NewEvent]] = []
    for row, owner, attempts, result in done:
        if result.succeeded:
            status = ActionStatus.SUCCEEDED
        elif result.retryable and attempts < row.max_attempts:
            status = ActionStatus.PENDING
        else:
            status = ActionStatus.FAILED
        wait = backoff(attempts, base, cap) if result.retry_after is None else \
            max(result.retry_after, 0.0)
        changes.append({
            "b_id": row.id, "b_owner": owner, "b_attempts": attempts,
            "v_status": status.value, "v_code": result.status_code,
            "v_error": result.error[:2000], "v_request": result.request or row.request or {},
            "v_response": _small(result.response),
            "v_next": now + timedelta(seconds=wait) if status == ActionStatus.PENDING else None,
            "v_finished": now if status != ActionStatus.PENDING else None})
        statuses[row.id] = status.value
        # An alert's notification has no instance whose workflow could react to it.
        if status != ActionStatus.PENDING and row.instance_id is not None:
            outcomes.append((row, _outcome_event(row, status, result, attempts)))
    return changes, statuses, outcomes


def _outcome_label(row: Row, status: str) -> str:
    return counters.labels_text(counters.ACTION_OUTCOMES, (
        row.type, "retried" if status == ActionStatus.PENDING.value else status))


def _exchange_postgres(conn: Connection, done: list[tuple[Row, str, int, ActionResult]],
                       limit: int, owner: str, finished: Callable[[], set[int]], commit: bool
                       ) -> tuple[dict[int, str | None], int, list[Any], bool]:
    """`exchange` on PostgreSQL: the claims' turn (when claiming) and one statement that
    records the results with their outcome events and counts and reads the candidates with
    the running counts, sent together; then the lease (and the commit, with `commit`), sent
    together. Returns the new statuses, outcome events queued, the leased rows and whether
    due ones were left.

    The statements go through the driver in pipeline mode (two round trips a round, not
    four): the driver connection is the one `conn` stands for, in its transaction.
    """
    from psycopg.rows import namedtuple_row

    now = utcnow()
    changes, statuses, outcomes = _results(done, now)
    rows = {row.id: row for row, _, _, _ in done}
    given = [{"id": ch["b_id"], "owner": ch["b_owner"], "attempts": ch["b_attempts"],
              "status": ch["v_status"], "code": ch["v_code"], "error": ch["v_error"],
              "request": ch["v_request"], "response": ch["v_response"], "next_at": ch["v_next"],
              "finished_at": ch["v_finished"],
              "labels": _outcome_label(rows[ch["b_id"]], ch["v_status"])} for ch in changes]
    events = []
    for position, (row, new_event) in enumerate(outcomes):
        for event_row in event_rows(row.integration_id, [new_event], now):
            events.append({**event_row, "delivery_id": row.id, "position": position})
    cfg = current_app.config
    driver = conn.connection.driver_connection
    if driver is None:
        raise RuntimeError("the connection was closed")
    leased: list[Any] = []
    with driver.pipeline():
        if limit > 0:
            # Claims take turns (see `_claim_in_transaction`); the statement after it reads
            # the candidates and running counts once the turn is ours, in its own snapshot.
            driver.execute(_CLAIM_TURN)
        found = driver.cursor(row_factory=namedtuple_row).execute(_round_sql(), {
            "results": json_text(given),
            "events": json_text(events), "now": now,
            "counter": counters.ACTION_OUTCOMES, "n": max(limit * 4, 100) if limit > 0 else 0,
            # Rows whose calls ended (results not recorded yet) hold no slot; the rows this
            # statement records are left out of the counts by the statement itself.
            "over": sorted(finished()) if limit > 0 else []}).fetchone()
        recorded = set(found.recorded or [])
        candidates = [_Candidate(**c) for c in found.candidates or []]
        chosen = _choose(candidates, [_Running(**r) for r in found.running or []], limit,
                         int(cfg.get("ACTION_CONCURRENCY_PER_INTEGRATION", 4)),
                         get_registry().action_types) if candidates and limit > 0 else []
        cursor = None
        if chosen:
            lease = float(cfg.get("ACTION_LEASE_SECONDS", 120))
            cursor = driver.cursor(row_factory=namedtuple_row).execute(_LEASE, {
                "ids": chosen, "now": now, "owner": owner,
                "lease": now + timedelta(seconds=lease)})
        if commit:
            driver.commit()
        if cursor is not None:
            leased = cursor.fetchall()
    out: dict[int, str | None] = {i: (statuses[i] if i in recorded else None)
                                  for i in statuses}
    order = {delivery_id: i for i, delivery_id in enumerate(chosen)}
    leased.sort(key=lambda row: order[row.id])  # oldest due first
    return out, found.queued, leased, len(candidates) > len(chosen)


@dataclass
class _Candidate:
    id: int
    integration_id: int
    workflow_id: int | None
    transition: str
    position: int
    action_id: str
    type: str
    config: dict[str, Any]
    next_attempt_at: Any = None


@dataclass
class _Running:
    integration_id: int
    workflow_id: int | None
    transition: str
    position: int
    action_id: str
    n: int


_CLAIM_TURN = f"SELECT pg_advisory_xact_lock({CLAIM_LOCK})"
_DUE_SQL = (f"((status = '{ActionStatus.PENDING.value}' AND next_attempt_at <= %(now)s) OR "
            f"(status = '{ActionStatus.RUNNING.value}' AND lease_until < %(now)s))")
_CANDIDATE_COLUMNS = ("id, integration_id, workflow_id, transition, position, action_id, type, "
                      "config, next_attempt_at")
_LEASE = (
    f"UPDATE action_delivery SET status = '{ActionStatus.RUNNING.value}', "
    "lease_until = %(lease)s, leased_by = %(owner)s, attempts = attempts + 1, "
    f"updated_at = %(now)s WHERE id = ANY(CAST(%(ids)s AS bigint[])) AND {_DUE_SQL} "
    f"RETURNING {', '.join(Row.__dataclass_fields__)}, config, attempts, idempotency_key")


def _recordset_columns(table: Any, names: list[str]) -> str:
    """`name type, …` of a json_to_recordset alias, the types those of the table's columns."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    return ", ".join(f"{n} {table.c[n].type.compile(dialect=dialect)}" for n in names)


@functools.cache
def _round_sql() -> str:
    """The statement of a PostgreSQL round (built once): record the results — guarded by
    owner, attempt and status, as on SQLite — with, for the rows whose guard held, their
    outcome events (ON CONFLICT DO NOTHING: the dedupe key is per attempt) and their counts;
    then the due candidates and the running counts of their integrations (leaving out the
    rows recorded here, which this statement's snapshot still shows running)."""
    from .events import EVENT

    running, pending = ActionStatus.RUNNING.value, ActionStatus.PENDING.value
    event_columns = [c.name for c in EVENT.c if c.name in EVENT_ROW_KEYS]
    return f"""
WITH given AS (
  SELECT * FROM json_to_recordset(CAST(%(results)s AS json)) AS g(
    id bigint, owner text, attempts integer, status text, code integer, error text,
    request json, response json, next_at timestamptz, finished_at timestamptz, labels text)
), recorded AS (
  UPDATE action_delivery AS d SET status = g.status, lease_until = NULL, updated_at = %(now)s,
    last_status_code = g.code, last_error = g.error, request = g.request,
    response = g.response, next_attempt_at = g.next_at, finished_at = g.finished_at
  FROM given AS g
  WHERE d.id = g.id AND d.leased_by = g.owner AND d.attempts = g.attempts
    AND d.status = '{running}'
  RETURNING d.id
), counted AS (
  INSERT INTO metric_count (name, labels, count)
  SELECT %(counter)s, g.labels, count(*) FROM given AS g JOIN recorded AS r ON r.id = g.id
  GROUP BY g.labels
  RETURNING id
), outcomes AS (
  INSERT INTO event ({", ".join(event_columns)})
  SELECT {", ".join(f"e.{n}" for n in event_columns)}
  FROM json_to_recordset(CAST(%(events)s AS json)) AS e(
    {_recordset_columns(EVENT, event_columns)}, delivery_id bigint, position integer)
  JOIN recorded AS r ON r.id = e.delivery_id
  ORDER BY e.position
  ON CONFLICT (integration_id, dedupe_key) DO NOTHING
  RETURNING id
), candidates AS (
  -- Two ordered reads of the partial indexes (see `_candidates`), not one with OR.
  (SELECT {_CANDIDATE_COLUMNS} FROM action_delivery
   WHERE status = '{pending}' AND next_attempt_at <= %(now)s
   ORDER BY next_attempt_at, id LIMIT %(n)s)
  UNION ALL
  (SELECT {_CANDIDATE_COLUMNS} FROM action_delivery
   WHERE status = '{running}' AND lease_until < %(now)s
   ORDER BY next_attempt_at, id LIMIT %(n)s)
), running AS (
  SELECT d.integration_id, d.workflow_id, d.transition, d.position, d.action_id,
    count(*) AS n
  FROM action_delivery AS d
  WHERE d.status = '{running}' AND d.lease_until >= %(now)s
    AND d.integration_id IN (SELECT integration_id FROM candidates)
    AND d.id <> ALL(CAST(%(over)s AS bigint[]))
    AND NOT EXISTS (SELECT 1 FROM given AS g
                    WHERE g.id = d.id AND g.owner = d.leased_by AND g.attempts = d.attempts)
  GROUP BY d.integration_id, d.workflow_id, d.transition, d.position, d.action_id
)
SELECT (SELECT json_agg(id) FROM recorded) AS recorded,
  (SELECT count(*) FROM outcomes) AS queued,
  (SELECT count(*) FROM counted) AS counted,
  (SELECT json_agg(c ORDER BY c.next_attempt_at, c.id) FROM candidates AS c) AS candidates,
  (SELECT json_agg(r) FROM running AS r) AS running
"""


def _record_in_transaction(done: list[tuple[Row, str, int, ActionResult]]
                           ) -> tuple[dict[int, str | None], int]:
    """Record results in the caller's transaction (SQLite; PostgreSQL: `_exchange_postgres`):
    new statuses, outcome events queued.

    Each UPDATE is guarded by owner, attempt and status: a row whose lease ran out and that
    another worker took keeps that worker's attempt, and gets no outcome event from this one.
    """
    out: dict[int, str | None] = {d[0].id: None for d in done}
    if not done:
        return out, 0
    now = utcnow()
    c = DELIVERY.c
    changes, statuses, outcomes = _results(done, now)
    out.update(statuses)
    statement = (
        update(DELIVERY)
        .where(c.id == bindparam("b_id"), c.leased_by == bindparam("b_owner"),
               c.attempts == bindparam("b_attempts"), c.status == ActionStatus.RUNNING.value)
        .values(status=bindparam("v_status"), lease_until=None, updated_at=now,
                last_status_code=bindparam("v_code"), last_error=bindparam("v_error"),
                request=bindparam("v_request", type_=c.request.type),
                response=bindparam("v_response", type_=c.response.type),
                next_attempt_at=bindparam("v_next", type_=c.next_attempt_at.type),
                finished_at=bindparam("v_finished", type_=c.finished_at.type)))
    for change in changes:  # in-process: one prepared UPDATE each, its row count checked
        if affected(db.session.execute(statement, change)) != 1:
            out[change["b_id"]] = None
    # Counted in this transaction (the executor runs in worker processes: see counters).
    tally: Counter[tuple[str, str]] = Counter()
    for row, _, _, _ in done:
        status_value = out[row.id]
        if status_value is not None:
            tally[(row.type, "retried" if status_value == ActionStatus.PENDING.value
                   else status_value)] += 1
    for labels, count in tally.items():
        counters.add(counters.ACTION_OUTCOMES, labels, by=count)
    by_integration: dict[int, list[NewEvent]] = {}
    for row, event in outcomes:
        if out[row.id] is not None:
            by_integration.setdefault(row.integration_id, []).append(event)
    queued = 0
    for integration_id, events in by_integration.items():
        queued += stage(integration_id, events)[2]
    return out, queued


def _small(value: Any, limit: int = 20000) -> Any:
    """A response kept for the pages: as is when small, else a note and an excerpt."""
    text = json.dumps(value, default=str)
    return value if len(text) <= limit else {"truncated": text[:limit]}


def _outcome_event(row: Any, status: ActionStatus, result: ActionResult, attempts: int,
                   mark: str = "") -> NewEvent:
    """The outcome as an event of the instance, once per final attempt (its dedupe key).

    A delivery retried by hand after it failed ends in a new attempt, so its new outcome is a
    new event; the same attempt recorded twice is not.
    """
    context = dict(row.context or {})
    outcome = "succeeded" if status == ActionStatus.SUCCEEDED else "failed"
    name = row.action_id or row.type
    payload = {"action_id": row.action_id, "action_type": row.type, "outcome": outcome,
               "status_code": result.status_code, "response": _small(result.response, 5000),
               "error": result.error[:500], "attempts": attempts, "delivery_id": row.id,
               "transition": row.transition, "instance_id": row.instance_id,
               "vars": result.vars}
    return NewEvent(RESULT_SOURCE, f"{name}.{outcome}", context.get("record_key"),
                    context.get("run_id"), payload,
                    dedupe_key=f"action-result:{row.id}:{attempts}{mark}")


def deliver_due(limit: int = 50, owner: str | None = None) -> int:
    """Claim due deliveries, make their attempts one after another in this thread and record
    them in one transaction; return how many (for tests and the CLI; workers use the
    executor)."""
    items = claim(limit, owner or _owner())
    if items:
        record([(item, attempt(item)) for item in items])
    return len(items)


def _owner() -> str:
    from .processing import worker_id

    return f"{worker_id()}:{threading.get_ident()}"


# --- the per-process executor -------------------------------------------------------------------


class ActionExecutor:
    """Request threads that deliver actions off the job queue, and the pump that feeds them.

    The pattern of the poll executor (plugins/_poll_executor.py): the `deliver_actions` job only
    wakes it, so a slow receiver stalls no job (event processing, the timeout sweep). The
    pump thread claims a batch for the free threads in one transaction, the threads make the
    calls with no transaction open, and the pump records what they got — results and outcome
    events — in one transaction per batch, while the next calls run. The concurrency limits are
    kept by the claim (leased rows count), so the threads just take the queue in order.
    """

    def __init__(self, app: Flask, threads: int) -> None:
        from .processing import worker_id

        self.app = app
        self.threads = max(1, threads)
        self.owner = f"{worker_id()}:actions-{id(self):x}"
        self.cond = threading.Condition()
        self.queue: deque[Claimed] = deque()
        self.results: list[tuple[Claimed, ActionResult, int]] = []
        self.active = 0
        self.workers = 0
        self.pump: threading.Thread | None = None
        self.woken = False
        self.more = False
        self.held_until = 0.0
        self.stopping = False
        self.storing = False
        #: The pump thread's own connection on PostgreSQL (`local.conn`), kept across its
        #: rounds (no pool checkout and pre-ping per round); dropped when a round fails.
        self.local = threading.local()
        #: Counts (rounds, claimed, recorded, dropped) and seconds the pump's rounds took.
        self.stats: dict[str, float] = defaultdict(float)
        # Yielding to the inbox (ACTION_YIELD_BACKLOG; 0: never yield).
        config = app.config
        self.yielding = InboxYield(max(0, int(config.get("ACTION_YIELD_BACKLOG", 100))),
                                   YIELD_CHECK_SECONDS)
        self.yield_workers = max(1, min(int(config.get("ACTION_YIELD_CONCURRENCY", 2)),
                                        self.threads))

    def wake(self) -> dict[str, int]:
        """Ask for a claiming round; returns at once."""
        with self.cond:
            self.stopping = False
            self.woken = True
            if self.pump is None or not self.pump.is_alive():
                self.pump = threading.Thread(target=self._pump, daemon=True,
                                             name=f"wfapp-action-pump-{id(self):x}")
                self.pump.start()
            self.cond.notify_all()
            return {"queued": len(self.queue), "running": self.active, "workers": self.workers}

    def settled(self) -> bool:
        """True when nothing is queued, running, waiting to be recorded or being recorded."""
        with self.cond:
            return not (self.queue or self.active or self.results or self.woken or
                        self.storing)

    def idle(self) -> bool:
        """True when no delivery is running or waiting in this process (see `settled`)."""
        return self.settled()

    def stop(self, timeout: float = 30.0) -> None:
        """Claim nothing more, give back the claims not started, let running calls finish and
        be recorded (≤ `timeout`)."""
        with self.cond:
            self.stopping = True
            waiting = list(self.queue)
            self.queue.clear()
            self.cond.notify_all()
            pump = self.pump
        if waiting:
            try:
                with self.app.app_context():
                    release(waiting)
            except Exception:  # noqa: BLE001 — their leases run out; they are taken again then
                log.exception("could not give back %d claimed deliveries", len(waiting))
        if pump is not None and pump is not threading.current_thread():
            pump.join(timeout)

    # --- request threads ------------------------------------------------------------------------

    def _work(self) -> None:
        with self.app.app_context():  # plugins read the app's settings (SMTP)
            while True:
                with self.cond:
                    while not self.queue:
                        if self.stopping or not self.cond.wait(IDLE_SECONDS):
                            self.workers -= 1
                            self.cond.notify_all()
                            return
                    item = self.queue.popleft()
                    self.active += 1
                result = attempt(item)
                with self.cond:
                    self.active -= 1
                    self.results.append((item, result, 0))
                    self.cond.notify_all()

    def _submit(self, items: list[Claimed]) -> None:
        with self.cond:
            self.queue.extend(items)
            wanted = min(self.threads, len(self.queue) + self.active)
            for _ in range(max(0, wanted - self.workers)):
                self.workers += 1
                threading.Thread(target=self._work, daemon=True,
                                 name="wfapp-action-request").start()
            self.cond.notify_all()

    # --- the pump -------------------------------------------------------------------------------

    def _free(self) -> int:
        limit = self.yield_workers if self.yielding.active else self.threads
        return max(0, limit - self.active - len(self.queue))

    def _check_yield(self) -> None:
        """Yield while ACTION_YIELD_BACKLOG events other than action results wait to be
        applied; resume below half of that (`InboxYield`). Deliveries are work this process
        schedules; the inbox holds work other systems wait for, so on shared cores the inbox
        goes first."""
        if not self.yielding.due(time.monotonic()):
            return
        from .events import waiting_other_than

        waiting = waiting_other_than(RESULT_SOURCE, self.yielding.backlog)
        db.session.rollback()  # no transaction left open on the pump's session
        now = time.monotonic()
        with self.cond:
            began = self.yielding.since
            change = self.yielding.note(waiting, now)
            if change == "began":
                self.stats["yields"] += 1
                log.info("action deliveries yield: %s+ events wait in the inbox; at most %d at "
                         "once in this process until they are applied", waiting,
                         self.yield_workers)
            elif change == "ended" and began is not None:
                self.stats["yield_s"] += now - began
                log.info("action deliveries resume after yielding %.1f s", now - began)

    def _pump(self) -> None:
        try:
            self._pump_rounds()
        finally:
            self._drop_connection()

    def _drop_connection(self) -> None:
        conn = getattr(self.local, "conn", None)
        self.local.conn = None
        if conn is not None:
            conn.close()

    def _pump_rounds(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self.cond:
                held = self.held_until - time.monotonic()
                yielding = self.yielding.active
                if not (self.woken or self.results or
                        (self.more and held <= 0 and (self._free() > 0 or yielding)
                         and not self.stopping)):
                    self.cond.wait(min(0.5, held) if self.more and held > 0 else 0.5)
                woken, self.woken = self.woken, False
                results, self.results = self.results, []
                self.storing = bool(results)
                free = self._free()
                # While yielding, a round with no free slot still looks at the inbox again.
                claim_now = not self.stopping and (free > 0 or yielding) and (
                    woken or (self.more and time.monotonic() >= self.held_until))
                if results or claim_now or self.queue or self.active:
                    idle_since = time.monotonic()
                elif self.stopping or time.monotonic() - idle_since > IDLE_SECONDS:
                    self.pump = None
                    return
            if not (results or claim_now):
                continue
            try:
                with self.app.app_context():
                    try:
                        if claim_now:
                            self._check_yield()
                            with self.cond:
                                free = self._free()
                                if not free:  # yielding: look again after a pause
                                    self.more = True
                                    self.held_until = time.monotonic() + YIELD_CHECK_SECONDS
                        if results or free and claim_now:
                            self._round(results, free if claim_now else 0)
                    finally:
                        db.session.remove()
            except Exception:  # noqa: BLE001 — the database is away: try again next round
                log.exception("action pump round failed")
                self._drop_connection()
                time.sleep(1.0)
            finally:
                with self.cond:
                    self.storing = False
                    self.cond.notify_all()

    def _finished(self) -> set[int]:
        """Rows whose calls ended during this round (recorded by the next one)."""
        with self.cond:
            return {item.id for item, _, _ in self.results}

    def _round(self, results: list[tuple[Claimed, ActionResult, int]], free: int) -> None:
        """Record the results and claim for the free threads, in one transaction."""
        began = time.perf_counter()
        try:
            conn = getattr(self.local, "conn", None)
            if conn is None and db.engine.dialect.name == "postgresql":
                conn = self.local.conn = db.engine.connect()
            _, items, more = exchange([(i.row, i.owner, i.attempt, r) for i, r, _ in results],
                                      free, self.owner, self._finished, conn)
        except Exception:
            # Keep the results (counting the failure) for the next round; a row whose results
            # are dropped is delivered again once its lease runs out.
            retry = [(i, r, n + 1) for i, r, n in results if n + 1 < STORE_ATTEMPTS]
            self.stats["dropped"] += len(results) - len(retry)
            with self.cond:
                self.results.extend(retry)
            raise
        finally:
            self.stats["round_s"] += time.perf_counter() - began
            self.stats["rounds"] += 1
        self.stats["recorded"] += len(results)
        self.stats["claimed"] += len(items)
        with self.cond:
            # Full, held back by a limit, or slots just freed by recording: ask again soon —
            # after a pause when a limit held everything back (the slots are busy elsewhere).
            self.more = more or len(items) >= free > 0 or bool(results)
            if more and not items and not results:
                self.held_until = time.monotonic() + HELD_BACK_PAUSE
        if items:
            self._submit(items)


def release(items: list[Claimed]) -> None:
    """Give claimed deliveries that were never started back (their attempt not counted)."""
    c = DELIVERY.c
    try:
        for item in items:
            db.session.execute(
                update(DELIVERY).where(c.id == item.id, c.leased_by == item.owner,
                                       c.attempts == item.attempt,
                                       c.status == ActionStatus.RUNNING.value)
                .values(status=ActionStatus.PENDING.value, lease_until=None,
                        attempts=c.attempts - 1, updated_at=utcnow()))
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


_executors: weakref.WeakKeyDictionary[Flask, ActionExecutor] = weakref.WeakKeyDictionary()
_executors_lock = threading.Lock()


def executor() -> ActionExecutor:
    """This app's executor in this process (stopped gently at exit)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _executors_lock:
        found = _executors.get(app)
        if found is None:
            found = _executors[app] = ActionExecutor(app, int(app.config.get("ACTION_THREADS",
                                                                              8)))
            atexit.register(found.stop, 30.0)
        return found


# --- what people see and do ---------------------------------------------------------------------


def list_deliveries(*, status: str | None = None, workflow_id: int | None = None,
                    integration_id: int | None = None, instance_id: int | None = None,
                    type: str | None = None, limit: int = 50, cursor: int | None = None
                    ) -> tuple[list[ActionDelivery], int | None]:
    """A page of deliveries, newest first, with the cursor of the next page."""
    query = select(ActionDelivery)
    if status:
        query = query.where(ActionDelivery.status == status)
    if workflow_id is not None:
        query = query.where(ActionDelivery.workflow_id == workflow_id)
    if integration_id is not None:
        query = query.where(ActionDelivery.integration_id == integration_id)
    if instance_id is not None:
        query = query.where(ActionDelivery.instance_id == instance_id)
    if type:
        query = query.where(ActionDelivery.type == type)
    if cursor is not None:
        query = query.where(ActionDelivery.id < cursor)
    limit = max(1, min(limit, 500))
    rows = list(db.session.scalars(query.order_by(ActionDelivery.id.desc()).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def get_delivery(delivery_id: int) -> ActionDelivery:
    """The delivery with this id; NotFound otherwise."""
    row = db.session.get(ActionDelivery, delivery_id)
    if row is None:
        raise NotFound(f"action delivery {delivery_id} does not exist")
    return row


def retry_now(delivery_id: int, actor: str) -> ActionDelivery:
    """Make a pending or failed delivery due now (a failed one gets one more attempt)."""
    row = get_delivery(delivery_id)
    if row.status not in (ActionStatus.PENDING.value, ActionStatus.FAILED.value,
                          ActionStatus.GAVE_UP.value):
        raise Conflict(f"action delivery {delivery_id} is {row.status}; only pending, failed "
                       "or given-up deliveries can be retried")
    now = utcnow()
    more = max(row.max_attempts, row.attempts + 1)
    changed = affected(db.session.execute(
        update(DELIVERY).where(DELIVERY.c.id == delivery_id, DELIVERY.c.status == row.status)
        .values(status=ActionStatus.PENDING.value, next_attempt_at=now, max_attempts=more,
                finished_at=None, updated_at=now)))
    if changed != 1:
        db.session.rollback()
        raise Conflict(f"action delivery {delivery_id} changed meanwhile; look again")
    audit.record("retry", "action_delivery", str(delivery_id), {"was": row.status}, who=actor)
    db.session.commit()
    wake()
    db.session.refresh(row)
    return row


def give_up(delivery_id: int, actor: str) -> ActionDelivery:
    """Stop retrying a pending delivery: it fails now, and its `failed` outcome is an event."""
    row = get_delivery(delivery_id)
    if row.status != ActionStatus.PENDING.value:
        raise Conflict(f"action delivery {delivery_id} is {row.status}; only a pending "
                       "delivery can be given up")
    now = utcnow()
    changed = affected(db.session.execute(
        update(DELIVERY).where(DELIVERY.c.id == delivery_id,
                               DELIVERY.c.status == ActionStatus.PENDING.value)
        .values(status=ActionStatus.GAVE_UP.value, next_attempt_at=None, finished_at=now,
                updated_at=now)))
    if changed != 1:
        db.session.rollback()
        raise Conflict(f"action delivery {delivery_id} changed meanwhile; look again")
    audit.record("give_up", "action_delivery", str(delivery_id), {}, who=actor)
    counters.add(counters.ACTION_OUTCOMES, (row.type, ActionStatus.GAVE_UP.value))
    if row.instance_id is None:  # an alert's notification: no workflow reacts to it
        db.session.commit()
        db.session.refresh(row)
        return row
    # The workflow reacts as to a last failed attempt (store() commits this change with it).
    store(row.integration_id, [_outcome_event(
        row, ActionStatus.FAILED,
        ActionResult(False, row.last_status_code, row.response,
                     f"given up by {actor}" + (f" after: {row.last_error}" if row.last_error
                                               else "")),
        row.attempts, ":gave-up")])
    db.session.refresh(row)
    return row


def counts_by_status(workflow_id: int) -> dict[str, int]:
    """How many deliveries of a workflow are in each status (for the workflow card)."""
    return dict(db.session.execute(
        select(DELIVERY.c.status, func.count()).where(DELIVERY.c.workflow_id == workflow_id)
        .group_by(DELIVERY.c.status)).all())

