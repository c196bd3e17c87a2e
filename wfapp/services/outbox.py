"""Transition actions: planned in the transition's transaction, delivered after it commits.

`plan()` runs inside `firing.move()`: in-transaction actions (`set_variable`) change the
variables the move writes, side-effecting ones become outbox rows (`action_delivery`). The
`deliver_actions` job wakes a per-process executor whose threads claim due rows — taking a
lease (visibility timeout), counting the attempt, committing — make the call with no
transaction open, then record the result: succeeded, retried later (capped exponential
backoff with jitter, or the receiver's `Retry-After`), or failed after its last attempt. A
worker killed mid-delivery leaves a row whose lease runs out, and another worker delivers it
again with the same `Idempotency-Key`: at least once, never lost.

The outcome (succeeded, or failed for good) is stored as an `on_action_result` event of the
instance through the inbox, with a dedupe key per delivery, so it moves the instance exactly
once however often the delivery was retried.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import and_, func, insert, or_, select, update

from ..actions import ActionContext, ActionResult, ActionType
from ..engine import CompiledTransition
from ..extensions import affected, db
from ..models import ActionDelivery, ActionStatus, Integration, utcnow
from . import audit, counters, secrets
from .errors import Conflict, NotFound
from .events import NewEvent, store
from .registry import get_registry

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


def outbox_rows(transition: CompiledTransition, context: ActionContext, workflow_id: int,
                integration_id: int, event_id: int | None, now: datetime,
                action_types: dict[str, ActionType]) -> list[dict[str, Any]]:
    """The outbox rows of the transition's side-effecting actions (one per delivery)."""
    rows = []
    snapshot = {k: v for k, v in asdict(context).items()
                if k not in ("secrets", "settings", "delivery_id", "idempotency_key", "attempt")}
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
    conn.execute(insert(DELIVERY), rows)
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
    """Queue a delivery job (deliveries are also picked up by the periodic schedule)."""
    from ..queue import get_queue

    try:
        queue = get_queue()
        if queue.once("actions-wake", 0.2):
            queue.enqueue("wfapp.jobs.deliver_actions")
    except Exception as exc:  # noqa: BLE001 — the schedule delivers them once the queue is back
        log.warning("actions queued, but the queue is unreachable (%s: %s)",
                    type(exc).__name__, exc)


# --- delivering ---------------------------------------------------------------------------------


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt: capped exponential, with full jitter over its top half."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return ceiling / 2 + random.random() * ceiling / 2


def claim(limit: int, owner: str, now: datetime | None = None) -> list[int]:
    """Lease up to `limit` due deliveries (respecting the per-integration limit); commits.

    Due: pending with its next attempt due, or running with an expired lease (its worker died).
    The attempt is counted here, before the call, so a kill mid-delivery counts too.
    """
    now = now or utcnow()
    cfg = current_app.config
    lease = float(cfg.get("ACTION_LEASE_SECONDS", 120))
    per_integration = int(cfg.get("ACTION_CONCURRENCY_PER_INTEGRATION", 4))
    due = or_(and_(DELIVERY.c.status == ActionStatus.PENDING.value,
                   DELIVERY.c.next_attempt_at <= now),
              and_(DELIVERY.c.status == ActionStatus.RUNNING.value,
                   DELIVERY.c.lease_until < now))
    query = (select(DELIVERY.c.id, DELIVERY.c.integration_id, DELIVERY.c.status)
             .where(due).order_by(DELIVERY.c.next_attempt_at, DELIVERY.c.id).limit(limit * 4))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(db.session.execute(query))
    if not rows:
        db.session.commit()
        return []
    busy: dict[int, int] = dict(db.session.execute(
        select(DELIVERY.c.integration_id, func.count())
        .where(DELIVERY.c.status == ActionStatus.RUNNING.value, DELIVERY.c.lease_until >= now,
               DELIVERY.c.integration_id.in_({r.integration_id for r in rows}))
        .group_by(DELIVERY.c.integration_id)).all())
    chosen: list[int] = []
    for row in rows:
        if len(chosen) >= limit:
            break
        if busy.get(row.integration_id, 0) >= per_integration:
            continue
        busy[row.integration_id] = busy.get(row.integration_id, 0) + 1
        chosen.append(row.id)
    if chosen:
        db.session.execute(
            update(DELIVERY).where(DELIVERY.c.id.in_(chosen), due)
            .values(status=ActionStatus.RUNNING.value, lease_until=now + timedelta(seconds=lease),
                    leased_by=owner, attempts=DELIVERY.c.attempts + 1, updated_at=now))
    db.session.commit()
    return chosen


def _context(row: ActionDelivery) -> ActionContext:
    snapshot = dict(row.context or {})
    context = ActionContext(**{k: v for k, v in snapshot.items()
                               if k in ActionContext.__dataclass_fields__})
    integration = db.session.get(Integration, row.integration_id)
    context.integration = integration.code if integration else context.integration
    context.delivery_id = row.id
    context.idempotency_key = row.idempotency_key
    context.attempt = row.attempts
    # Secrets are read per attempt, never stored with the row: a rotated secret applies at once.
    context.secrets = {**secrets.read_all(row.integration_id, secrets.NAMED),
                       **secrets.read_all(row.integration_id, secrets.SETTING)}
    context.settings = dict(integration.settings or {}) if integration else {}
    return context


def deliver_one(delivery_id: int, owner: str) -> str | None:
    """Make one attempt of a leased delivery and record it; return its new status."""
    row = db.session.get(ActionDelivery, delivery_id, populate_existing=True)
    if row is None or row.status != ActionStatus.RUNNING.value or row.leased_by != owner:
        db.session.rollback()
        return None
    attempt = row.attempts
    kind = get_registry().action_types.get(row.type)
    config = dict(row.config or {})
    if kind is None:
        result = ActionResult(False, error=f"action type {row.type!r} is not installed",
                              retryable=False)
    else:
        context = _context(row)
        db.session.rollback()  # no transaction stays open during the call
        try:
            result = kind.deliver(config, context)
        except Exception as exc:  # noqa: BLE001 — a plugin's bug is a failed attempt, not a crash
            log.exception("action delivery %s raised", delivery_id)
            result = ActionResult(False, error=f"{type(exc).__name__}: {exc}"[:500])
    return finish(delivery_id, owner, attempt, result)


def finish(delivery_id: int, owner: str, attempt: int, result: ActionResult) -> str | None:
    """Record an attempt's result, and its outcome event when it is final; commits.

    Guarded by owner and attempt: when the lease ran out and another worker took the row, this
    late result is dropped (the other attempt's result counts).
    """
    now = utcnow()
    row = db.session.get(ActionDelivery, delivery_id, populate_existing=True)
    if row is None:
        db.session.rollback()
        return None
    cfg = current_app.config
    if result.succeeded:
        status = ActionStatus.SUCCEEDED
    elif result.retryable and attempt < row.max_attempts:
        status = ActionStatus.PENDING
    else:
        status = ActionStatus.FAILED
    wait = backoff(attempt, float(cfg.get("ACTION_BACKOFF_BASE", 2.0)),
                   float(cfg.get("ACTION_BACKOFF_CAP", 600.0)))
    if result.retry_after is not None:
        wait = max(result.retry_after, 0.0)
    values: dict[str, Any] = {
        "status": status.value, "lease_until": None, "updated_at": now,
        "last_status_code": result.status_code, "last_error": result.error[:2000],
        "request": result.request or row.request or {}, "response": _small(result.response),
        "next_attempt_at": now + timedelta(seconds=wait) if status == ActionStatus.PENDING
        else None,
        "finished_at": now if status != ActionStatus.PENDING else None,
    }
    done = affected(db.session.execute(
        update(DELIVERY).where(DELIVERY.c.id == delivery_id, DELIVERY.c.leased_by == owner,
                               DELIVERY.c.attempts == attempt,
                               DELIVERY.c.status == ActionStatus.RUNNING.value)
        .values(**values)))
    if done != 1:
        db.session.rollback()
        return None
    # Counted in this transaction (the executor runs in worker processes: see counters).
    counters.add(counters.ACTION_OUTCOMES, (row.type, "retried" if status ==
                                            ActionStatus.PENDING else status.value))
    if status == ActionStatus.PENDING or row.instance_id is None:
        # An alert's notification has no instance whose workflow could react to its outcome.
        db.session.commit()
        return status.value
    _store_outcome(row, status, result, attempt)  # commits the row's update with the event
    return status.value


def _small(value: Any, limit: int = 20000) -> Any:
    """A response kept for the pages: as is when small, else a note and an excerpt."""
    import json

    text = json.dumps(value, default=str)
    return value if len(text) <= limit else {"truncated": text[:limit]}


def _store_outcome(row: ActionDelivery, status: ActionStatus, result: ActionResult,
                   attempts: int, mark: str = "") -> None:
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
    store(row.integration_id, [NewEvent(
        RESULT_SOURCE, f"{name}.{outcome}", context.get("record_key"), context.get("run_id"),
        payload, dedupe_key=f"action-result:{row.id}:{attempts}{mark}")])


def deliver_due(limit: int = 50, owner: str | None = None) -> int:
    """Claim and deliver due deliveries one after another in this thread; return how many."""
    owner = owner or _owner()
    done = 0
    for delivery_id in claim(limit, owner):
        deliver_one(delivery_id, owner)
        done += 1
    return done


def _owner() -> str:
    from .processing import worker_id

    return f"{worker_id()}:{threading.get_ident()}"


# --- the per-process executor -------------------------------------------------------------------


class ActionExecutor:
    """Threads that deliver actions off the job queue, so a slow receiver stalls no job.

    The `deliver_actions` job only wakes it: the pump claims as many due rows as there are free
    threads and hands them out; each thread records its own result.
    """

    def __init__(self, app: Flask, threads: int) -> None:
        self.app = app
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="wfapp-action")
        self.lock = threading.Lock()
        self.running = 0
        self.pumping = False

    def pump(self) -> int:
        """Claim due deliveries for the free threads and start them; return how many started."""
        with self.lock:
            if self.pumping:
                return 0
            self.pumping = True
            free = self.threads - self.running
        started = 0
        try:
            if free > 0:
                owner = _owner()
                ids = claim(free, owner)
                with self.lock:
                    self.running += len(ids)
                for delivery_id in ids:
                    self.pool.submit(self._run, delivery_id, owner)
                started = len(ids)
        finally:
            with self.lock:
                self.pumping = False
            db.session.remove()
        return started

    def _run(self, delivery_id: int, owner: str) -> None:
        with self.app.app_context():
            try:
                deliver_one(delivery_id, owner)
            except Exception:  # noqa: BLE001 — the lease runs out; another attempt follows
                log.exception("delivering action %s failed", delivery_id)
                db.session.rollback()
            finally:
                with self.lock:
                    self.running -= 1
                try:
                    self.pump()  # keep the threads busy while rows are due
                except Exception:  # noqa: BLE001
                    log.exception("claiming actions failed")
                db.session.remove()

    def idle(self) -> bool:
        """True when no delivery is running in this process."""
        with self.lock:
            return self.running == 0 and not self.pumping


_executors: dict[int, ActionExecutor] = {}
_executors_lock = threading.Lock()


def executor() -> ActionExecutor:
    """This app's executor in this process."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _executors_lock:
        found = _executors.get(id(app))
        if found is None or found.app is not app:
            found = ActionExecutor(app, int(app.config.get("ACTION_THREADS", 8)))
            _executors[id(app)] = found
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
    _store_outcome(row, ActionStatus.FAILED,
                   ActionResult(False, row.last_status_code, row.response,
                                f"given up by {actor}" + (f" after: {row.last_error}"
                                                          if row.last_error else "")),
                   row.attempts, ":gave-up")
    db.session.refresh(row)
    return row


def counts_by_status(workflow_id: int) -> dict[str, int]:
    """How many deliveries of a workflow are in each status (for the workflow card)."""
    return dict(db.session.execute(
        select(DELIVERY.c.status, func.count()).where(DELIVERY.c.workflow_id == workflow_id)
        .group_by(DELIVERY.c.status)).all())

