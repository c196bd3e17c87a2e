"""Processing stored events in batches: find or create the instance, decide, move, record.

A worker leases a few partitions of the inbox at a time (leases expire, so a killed worker's
partitions are taken over), claims up to a batch of their pending events in received order and
handles them in one transaction: decided in memory, written set-based. Every event is marked
with what it did in the same transaction that moved its instance, so an event is applied
exactly once or not at all.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache
from types import SimpleNamespace
from typing import Any

from flask import current_app
from sqlalchemy import (
    BigInteger,
    Integer,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ..engine import (
    CompiledWorkflow,
    build_context,
    capture_vars,
    event_view,
    select_transition,
)
from ..extensions import affected, db
from ..models import Event, EventStatus, InstanceMode, Integration, Lease, Workflow, utcnow
from ..queue import TIMEOUTS
from ..shutdown import stopping
from ..yielding import engine_took
from . import tally
from .firing import (
    HISTORY,
    INSTANCE,
    INSTANCE_COLUMNS,
    InstanceRow,
    Move,
    NewInstance,
    apply_planned,
    compiled_workflow,
    create_instances,
    initial_instance,
    notes_excerpt,
    plan_move,
    row_to_instance,
)
from .outbox import RESULT_SOURCE, write_outbox
from .registry import get_registry
from .rowsets import among, insert_rows, pairs_among, recordset
from .versions import WORKFLOW_HEAD, compiled_from_head

EVENT = Event.__table__
LEASE = Lease.__table__
log = logging.getLogger(__name__)
WORKER_ACTOR = "worker"


def worker_id() -> str:
    """A name for this process in leases and logs: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- leases -------------------------------------------------------------------------------------


def acquire_leases(names: list[str], owner: str, seconds: float, commit: bool = True
                   ) -> list[str]:
    """Take (or renew) those leases no other live owner holds; return the names taken.

    Commits unless `commit` is false (the caller then commits them with more work).

    Two statements whatever the number of names: the missing lease rows are created free, then
    one UPDATE takes every free, expired or already owned one.
    """
    now = utcnow()
    conn = db.session.connection()
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    # Sorted: two workers creating the same rows in opposite orders could deadlock.
    conn.execute(module.insert(LEASE).values([{"name": n, "owner": "", "expires_at": None}
                                              for n in sorted(names)])
                 .on_conflict_do_nothing(index_elements=["name"]))
    free = or_(LEASE.c.expires_at.is_(None), LEASE.c.expires_at < now, LEASE.c.owner == owner)
    taken = list(conn.execute(
        update(LEASE).where(LEASE.c.name.in_(names), free)
        .values(owner=owner, expires_at=now + timedelta(seconds=seconds))
        .returning(LEASE.c.name)).scalars())
    if commit:
        db.session.commit()
    return sorted(taken, key=names.index)


def acquire_lease(name: str, owner: str, seconds: float) -> bool:
    """Take (or renew) a lease unless another live owner holds it; commits."""
    return bool(acquire_leases([name], owner, seconds))


def release_leases(names: list[str], owner: str, commit: bool = True) -> None:
    """Give leases back; commits unless `commit` is false."""
    db.session.execute(update(LEASE).where(LEASE.c.name.in_(names), LEASE.c.owner == owner)
                       .values(expires_at=None, owner=""))
    if commit:
        db.session.commit()


@dataclass
class _Leases:
    """The partition leases a worker holds for a group of batches."""

    names: list[str]
    owner: str
    released: bool = False


def release_lease(name: str, owner: str) -> None:
    """Give a lease back; commits."""
    release_leases([name], owner)


def release_owner(owner: str) -> int:
    """Free every lease `owner` holds (a worker process known to be dead); commits."""
    freed = affected(db.session.execute(update(LEASE).where(LEASE.c.owner == owner)
                                        .values(expires_at=None, owner="")))
    db.session.commit()
    return freed


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


def _claim(conn: Connection, partitions: list[int], limit: int) -> list[tuple[int, int]]:
    """Count an attempt on up to `limit` pending events of `partitions`; (id, attempts before).

    One `UPDATE … WHERE id IN (SELECT … LIMIT … FOR UPDATE SKIP LOCKED) RETURNING`: the claim
    and the attempt in one statement. Not committed here.
    """
    chosen = (select(EVENT.c.id).where(EVENT.c.status == EventStatus.PENDING.value,
                                       EVENT.c.partition.in_(partitions))
              .order_by(EVENT.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        # Another worker holding some of these rows means its lease overlapped ours: skip them.
        chosen = chosen.with_for_update(skip_locked=True)
    rows = conn.execute(update(EVENT).where(EVENT.c.id.in_(chosen.scalar_subquery()))
                        .values(attempts=EVENT.c.attempts + 1)
                        .returning(EVENT.c.id, EVENT.c.attempts))
    return sorted((row.id, row.attempts - 1) for row in rows)


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
        rows = conn.execute(select(*INSTANCE_COLUMNS).where(pairs_among(
            conn, INSTANCE.c.integration_id, INSTANCE.c.record_key, list(record_keys))))
        for row in rows:
            found[(row.integration_id, "r", row.record_key)] = row_to_instance(row)
    if run_keys:
        rows = conn.execute(select(*INSTANCE_COLUMNS).where(pairs_among(
            conn, INSTANCE.c.integration_id, INSTANCE.c.run_id, list(run_keys))))
        for row in rows:
            found[(row.integration_id, "u", row.run_id)] = row_to_instance(row)
    return found


def _give_up(conn: Connection, ids: list[int], attempts: int, now: datetime) -> None:
    """Mark events that broke processing too often as failed: they never block again."""
    conn.execute(
        update(EVENT).where(EVENT.c.id.in_(ids), EVENT.c.status == EventStatus.PENDING.value)
        .values(status=EventStatus.FAILED.value, processed_at=now,
                attempts=EVENT.c.attempts - 1,  # the claim counted one it will not make
                result=f"gave up after {attempts} attempts: processing crashed or "
                       "ran out of time each time; fix the cause, then replay it"))


def _uncount(conn: Connection, ids: list[int]) -> None:
    """Take back the attempt counted on claimed events that will not be processed now."""
    if ids:
        conn.execute(update(EVENT).where(EVENT.c.id.in_(ids), EVENT.c.attempts > 0,
                                         EVENT.c.status == EventStatus.PENDING.value)
                     .values(attempts=EVENT.c.attempts - 1))


def _count_attempt(conn: Connection, partitions: list[int], limit: int) -> list[int]:
    """Claim a batch and count its attempt, uncommitted; the ids to process.

    The caller commits before processing them, so a crash or a kill counts too. Events that
    already had an attempt that never finished are processed one at a time, so only an event
    that really breaks processing uses up its attempts; after MAX_EVENT_ATTEMPTS it is marked
    failed instead of being tried again.
    """
    claimed = _claim(conn, partitions, limit)
    most = int(current_app.config.get("MAX_EVENT_ATTEMPTS", 3))
    poisoned = [i for i, before in claimed if before >= most]
    if poisoned:
        log.error("giving up on events %s of partitions %s after %d attempts",
                  poisoned, partitions, most)
        _give_up(conn, poisoned, most, utcnow())
    events = [(i, before) for i, before in claimed if before < most]
    retried = next((n for n, (_, before) in enumerate(events) if before > 0), None)
    if retried is not None:
        keep = events[:retried] or events[:1]
        _uncount(conn, [i for i, _ in events[len(keep):]])
        events = keep
    return [i for i, _ in events]


def _start_attempt(partitions: list[int], limit: int) -> list[int]:
    """Claim a batch and count the attempt in its own commit; the ids to process."""
    ids = _count_attempt(db.session.connection(), partitions, limit)
    db.session.commit()
    return ids


# `compiled_workflow`, remembered for one batch.
Workflows = Callable[..., CompiledWorkflow | None]
# How often a batch decides again the events of instances that another writer changed first.
ROUNDS = 5
# The instance columns a move sets besides vars, data and version (see `firing.plan_move`).
MOVE_COLUMNS = ("state", "active", "entered_state_at", "timeout_due_at", "last_trigger",
                "last_transition", "completed_at")


@dataclass
class _Route:
    """Where an event goes: its instance's key, its integration and the workflow it uses."""

    key: tuple[int, str, Any]
    integration: Any
    workflow: CompiledWorkflow
    creates: bool = False  # the event's instance does not exist yet: the batch creates it


@dataclass
class _Change:
    """One instance as the events of a batch left it in memory, before it is written."""

    instance: InstanceRow
    expected: int  # its version when read: the compare-and-set of its one UPDATE
    moved: dict[str, Any] = field(default_factory=dict)  # the columns its last move set
    touched: bool = False  # its data or variables changed without a move


@dataclass
class _Round:
    """What one pass over a batch's events decided, in event order, before it is written."""

    changes: dict[int, _Change] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    fired: list[tuple[int, int, str, str]] = field(default_factory=list)

    def change(self, instance: InstanceRow) -> _Change:
        """The change of `instance`, started with its version as read."""
        if instance.id not in self.changes:
            self.changes[instance.id] = _Change(instance, instance.version)
        return self.changes[instance.id]


def process_batch(partitions: int | list[int], limit: int = 200) -> int:
    """Handle up to `limit` pending events of leased partitions in one transaction; how many."""
    return _batch([partitions] if isinstance(partitions, int) else partitions, limit)[0]


def _batch(partitions: list[int], limit: int, claimed: list[int] | None = None,
           claim_next: bool = False, leases: _Leases | None = None) -> tuple[int, list[int]]:
    """Process a batch; how many events, and the next batch's ids when `claim_next`.

    Every event is decided in memory first (an instance steps through its events in received
    order); then the batch writes with a few statements: the new instances, one compare-and-set
    UPDATE of the changed instances, the history and outbox rows, the events' results. The
    events of an instance that another writer changed meanwhile are decided again on its new
    state (read locked), so none is applied twice or on a state it did not see.

    `claimed` are ids whose attempt an earlier commit counted; without them the batch claims
    its own in a commit first. With `claim_next` the next batch is claimed and its attempt
    counted in this batch's own commit: one commit per batch instead of two. When no next
    batch is left, `leases` are released in that same commit.
    """
    ids = claimed if claimed is not None else _start_attempt(partitions, limit)
    if not ids:
        return 0, []
    conn = db.session.connection()
    # Not locked: the lease makes this worker the only one on these partitions; should a lease
    # have expired under a slow batch, the events' results are written only where still
    # pending, and a batch that finds one already done rolls back whole (`_write_events`).
    events = list(conn.execute(
        select(EVENT).where(among(conn, EVENT.c.id, ids),
                            EVENT.c.status == EventStatus.PENDING.value)
        .order_by(EVENT.c.id)))
    if not events:
        following = _count_attempt(conn, partitions, limit) if claim_next else []
        _end(following, leases)
        return 0, following
    # Polls in this process pause at once for a burst (wfapp.yielding), not a look later.
    engine_took(Counter(event.source for event in events))
    integrations, workflows = _integrations(conn, {e.integration_id for e in events})
    modes = {i: row.instance_mode for i, row in integrations.items()}
    instances = _load_instances(conn, events, modes)
    now = utcnow()
    history: list[dict[str, Any]] = []
    outcomes, routes, new = _route_all(events, integrations, instances, workflows)
    if new and conn.dialect.name == "sqlite":
        # Creating the new instances is the batch's first write (without any, deciding the
        # first round comes before it anyway).
        _rehearse(conn, events, routes, new, instances, workflows, now)
    created = create_instances(conn, [item for _, item in new], now, history)
    for (key, _item), instance in zip(new, created, strict=True):
        instances[key] = instance
    deliveries: list[dict[str, Any]] = []
    outcomes.update(_apply(conn, [e for e in events if e.id in routes], routes, instances,
                           workflows, history, deliveries, now))
    insert_rows(conn, HISTORY, history)
    write_outbox(conn, deliveries)
    _write_events(conn, [(event.id, outcomes[event.id]) for event in events], now)
    following = _count_attempt(conn, partitions, limit) if claim_next else []
    _end(following, leases)
    return len(ids), following


def _end(following: list[int], leases: _Leases | None) -> None:
    """Commit a batch; with nothing claimed after it, its group's leases go back in that commit."""
    if leases is not None and not following:
        release_leases(leases.names, leases.owner, commit=False)
        db.session.commit()
        leases.released = True
        return
    db.session.commit()


def _integrations(conn: Connection, ids: set[int]) -> tuple[dict[int, Any], Workflows]:
    """The batch's integrations, and a look-up of compiled workflows remembered for the batch.

    Each integration comes with its workflow's head row (enabled, versions) in the same
    statement, so the workflows they use need no query of their own.
    """
    table = Integration.__table__
    head = [c.label(f"wf_{c.key}") for c in WORKFLOW_HEAD]
    rows = list(conn.execute(select(table, *head)
                             .outerjoin(Workflow, Workflow.id == table.c.workflow_id)
                             .where(table.c.id.in_(ids))))
    heads = {row.workflow_id: SimpleNamespace(**{c.key: row._mapping[f"wf_{c.key}"]
                                                 for c in WORKFLOW_HEAD})
             for row in rows if row.workflow_id is not None and row.wf_created_at is not None}

    @cache
    def workflows(workflow_id: int, version: int | None = None) -> CompiledWorkflow | None:
        if workflow_id in heads:
            return compiled_from_head(workflow_id, heads[workflow_id], version)
        return compiled_workflow(workflow_id, version)

    return {row.id: row for row in rows}, workflows


def _apply(conn: Connection, events: list[Any], routes: dict[int, _Route],
           instances: dict[tuple[int, str, Any], InstanceRow], workflows: Workflows,
           history: list[dict[str, Any]], deliveries: list[dict[str, Any]], now: datetime
           ) -> dict[int, Outcome]:
    """Decide the routed events in memory and compare-and-set their instances; their outcomes.

    The history and outbox rows of the moves that were written go to `history` and
    `deliveries`. The events of an instance that another writer changed first are decided
    again on its new state, read locked, up to ROUNDS times.
    """
    outcomes: dict[int, Outcome] = {}
    todo = events
    for _round in range(ROUNDS):
        work = _Round()
        decided = [(event, _process_one(conn, event, routes[event.id], instances, workflows,
                                        work, now))
                   for event in todo]
        lost = _write_instances(conn, work)
        history += [row for row in work.history if row["instance_id"] not in lost]
        deliveries += [row for row in work.deliveries if row["instance_id"] not in lost]
        for instance_id, workflow_id, code, trigger in work.fired:
            if instance_id not in lost:
                tally.note(workflow_id, code, trigger, now)
        todo = []
        for event, outcome in decided:
            if outcome.instance_id in lost:
                todo.append(event)
            else:
                outcomes[event.id] = outcome
        if not todo:
            return outcomes
        # Someone else (a person, the sweep) changed these first: decide again on their state.
        _reload(conn, [work.changes[i] for i in lost], routes, todo, instances)
    for event in todo:
        outcomes[event.id] = Outcome(EventStatus.FAILED,
                                     "instance kept changing under this event; replay it")
    return outcomes


def _key(integration: Any, event: Any) -> tuple[int, str, Any] | None:
    if integration.instance_mode == InstanceMode.PER_RUN.value:
        return None if event.run_id is None else (integration.id, "u", event.run_id)
    return None if event.record_key is None else (integration.id, "r", event.record_key)


def _route(event: Any, integration: Any, instances: dict[tuple[int, str, Any], InstanceRow],
           workflows: Workflows, creating: set[tuple[int, str, Any]]) -> _Route | Outcome:
    """Where an event goes, or its outcome when it goes nowhere (no workflow, no key, …)."""
    if integration.workflow_id is None:
        return Outcome(EventStatus.SKIPPED, f"integration {integration.code} has no workflow")
    workflow = workflows(integration.workflow_id)
    if workflow is None:
        return Outcome(EventStatus.SKIPPED, "the integration's workflow no longer exists")
    if not workflow.enabled:
        return Outcome(EventStatus.SKIPPED, f"workflow {workflow.code} is disabled")
    key = _key(integration, event)
    per_run = integration.instance_mode == InstanceMode.PER_RUN.value
    if key is None:
        return Outcome(EventStatus.FAILED, f"event has no {'run id' if per_run else 'record key'}")
    if key in instances or key in creating:
        return _Route(key, integration, workflow)
    record_status = (event.payload or {}).get("status") if event.record is not None else None
    # A Per Run instance whose run started while the workflow was disabled (or before it was
    # attached) is started by the run's summary event, replayed now.
    if not per_run and record_status == "error":
        return Outcome(EventStatus.PROCESSED, "record failed: a failed record never "
                       "creates an instance")
    creating.add(key)
    return _Route(key, integration, workflow, creates=True)


def _route_all(events: list[Any], integrations: dict[int, Any],
               instances: dict[tuple[int, str, Any], InstanceRow], workflows: Workflows
               ) -> tuple[dict[int, Outcome], dict[int, _Route],
                          list[tuple[tuple[int, str, Any], NewInstance]]]:
    """Route every event; the outcomes of those that go nowhere, and the instances to create."""
    outcomes: dict[int, Outcome] = {}
    routes: dict[int, _Route] = {}
    creating: set[tuple[int, str, Any]] = set()
    new: list[tuple[tuple[int, str, Any], NewInstance]] = []
    for event in events:
        integration = integrations[event.integration_id]
        route = _route(event, integration, instances, workflows, creating)
        if isinstance(route, Outcome):
            outcomes[event.id] = route
            continue
        routes[event.id] = route
        if route.creates:
            per_run = integration.instance_mode == InstanceMode.PER_RUN.value
            new.append((route.key, NewInstance(
                integration.workflow_id, route.workflow, integration.id,
                None if per_run else event.record_key, event.run_id if per_run else None,
                {} if per_run else dict(event.record or {}), WORKER_ACTOR, event.source,
                event.id)))
    return outcomes, routes, new


def _rehearse(conn: Connection, events: list[Any], routes: dict[int, _Route],
              new: list[tuple[tuple[int, str, Any], NewInstance]],
              instances: dict[tuple[int, str, Any], InstanceRow], workflows: Workflows,
              now: datetime) -> None:
    """Decide the routed events on copies of their instances and throw the result away.

    SQLite has one write lock for the whole database, taken by a batch's first write and held
    until its commit. Deciding runs plugin code (trigger types, actions); should that hang or
    spin on some event, it does so here, before the batch writes anything, so pages and API
    writes go on while the stuck job waits to be killed. The real decisions follow, the same
    (deciding is deterministic), once the new instances have their ids.
    """
    copies = {key: replace(instance) for key, instance in instances.items()}
    for placeholder, (key, item) in enumerate(new, start=1):
        copies[key] = initial_instance(item, -placeholder)
    work = _Round()
    for event in events:
        if event.id in routes:
            _process_one(conn, event, routes[event.id], copies, workflows, work, now)


def _process_one(conn: Connection, event: Any, route: _Route,
                 instances: dict[tuple[int, str, Any], InstanceRow], workflows: Workflows,
                 work: _Round, now: datetime) -> Outcome:
    """Decide one event on its instance in memory; what it changes is noted in `work`."""
    instance = instances.get(route.key)
    if instance is None:
        return Outcome(EventStatus.SKIPPED, "instance was deleted meanwhile")
    workflow = route.workflow
    if (instance.workflow_id != route.integration.workflow_id
            or instance.workflow_version != workflow.version):
        # An instance follows the workflow and version it started on (until migrated), even
        # when the integration now uses another workflow or new instances start on another.
        workflow = workflows(instance.workflow_id, instance.workflow_version) or workflow
    change = work.change(instance)
    record = event.record
    record_status = (event.payload or {}).get("status") if record is not None else None
    captured = (event.payload or {}).get("vars") if event.source == RESULT_SOURCE else None
    if isinstance(captured, dict) and captured:
        # An action's captured response values become variables before deciding, so the
        # On Action Result transition's conditions see them; kept even if none fires.
        instance.vars = {**instance.vars, **captured}
        instance.version += 1
        change.touched = True
    view = event_view(event.source, event.type, event.payload or {}, event.record_key, record,
                      record_status)
    context = build_context(event.payload or {}, record if record is not None else instance.data,
                            instance.context())
    decision = select_transition(workflow, instance.state, event.source, view, context,
                                 get_registry().trigger_types)
    transition = decision.transition
    prefix = "created the instance; " if route.creates else ""
    if transition is None:
        if record is not None and record != instance.data:
            instance.data = dict(record)
            change.touched = True
        return Outcome(EventStatus.PROCESSED, prefix + decision.reason, instance.id)
    before = instance.state
    planned = plan_move(workflow, instance, Move(
        transition.to_state, transition.code, event.source, WORKER_ACTOR, event.id,
        notes_excerpt(event.payload or {}), vars=capture_vars(transition, context, instance.vars),
        data=dict(record) if record is not None else None), now)
    apply_planned(instance, planned)
    change.moved = planned.values
    work.history.append(planned.history)
    work.deliveries += planned.deliveries
    work.fired.append((instance.id, instance.workflow_id, transition.code, event.source))
    return Outcome(EventStatus.PROCESSED, f"{prefix}fired {transition.code}: "
                   f"{before} → {transition.to_state}", instance.id)


def _write_instances(conn: Connection, work: _Round) -> set[int]:
    """Compare-and-set every instance the round changed; return the ids another writer changed.

    Two statements at most: the moved instances, and those whose data or variables alone
    changed. Each is written only if its version is still the one the round read.
    """
    moved: list[dict[str, Any]] = []
    touched: list[dict[str, Any]] = []
    for change in work.changes.values():
        instance = change.instance
        row = {"id": instance.id, "expected": change.expected, "version": instance.version,
               "vars": instance.vars, "data": instance.data}
        if change.moved:
            moved.append({**change.moved, **row})
        elif change.touched:
            touched.append(row)
    written = _compare_and_set(conn, moved, (*MOVE_COLUMNS, "vars", "data", "version")) \
        | _compare_and_set(conn, touched, ("vars", "data", "version"))
    return {row["id"] for row in moved + touched} - written


def _compare_and_set(conn: Connection, rows: list[dict[str, Any]], columns: tuple[str, ...]
                     ) -> set[int]:
    """Write `columns` of each row's instance if its version is still `expected`; return ids.

    One `UPDATE … FROM json_to_recordset(…) RETURNING id` on PostgreSQL; on SQLite (in-process,
    no round trips, one writer at a time) one prepared UPDATE per row.
    """
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        given = recordset("v", {"id": BigInteger(), "expected": Integer(),
                                 **{c: INSTANCE.c[c].type for c in columns}})
        statement = (update(INSTANCE)
                     .where(INSTANCE.c.id == given.c.id, INSTANCE.c.version == given.c.expected)
                     .values({c: given.c[c] for c in columns}).returning(INSTANCE.c.id))
        return set(conn.execute(statement, {"rows": rows}).scalars())
    one = (update(INSTANCE)
           .where(INSTANCE.c.id == bindparam("b_id"),
                  INSTANCE.c.version == bindparam("b_expected"))
           .values({c: bindparam(f"b_{c}") for c in columns}))
    return {row["id"] for row in rows
            if conn.execute(one, {f"b_{k}": v for k, v in row.items()}).rowcount == 1}


def _reload(conn: Connection, changes: list[_Change], routes: dict[int, _Route],
            events: list[Any], instances: dict[tuple[int, str, Any], InstanceRow]) -> None:
    """Read instances another writer changed again, locked (PostgreSQL) so the retry wins."""
    query = select(*INSTANCE_COLUMNS).where(INSTANCE.c.id.in_([c.instance.id for c in changes]))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    fresh = {row.id: row_to_instance(row) for row in conn.execute(query)}
    stale = {c.instance.id for c in changes}
    for event in events:
        key = routes[event.id].key
        current = instances.get(key)
        if current is not None and current.id in stale:
            if current.id in fresh:
                instances[key] = fresh[current.id]
            else:
                del instances[key]  # deleted meanwhile: its events are skipped
            routes[event.id].creates = False


class Overtaken(Exception):
    """Another worker processed some events of this batch first (its lease had expired)."""

    def __init__(self, message: str, ids: list[int]) -> None:
        super().__init__(message)
        self.ids = ids


def _write_events(conn: Connection, outcomes: list[tuple[int, Outcome]], now: datetime) -> None:
    """Store what each event did, in one statement (PostgreSQL) or one prepared UPDATE.

    Only events still pending are written; if any is not, another worker applied it first and
    this batch must not commit (raises Overtaken): its moves were decided on events that are
    no longer this worker's to apply.
    """
    rows = [{"eid": event_id, "status": outcome.status.value, "result": outcome.result[:1000],
             "instance_id": outcome.instance_id} for event_id, outcome in outcomes]
    pending = EVENT.c.status == EventStatus.PENDING.value
    if conn.dialect.name == "postgresql":
        given = recordset("v", {"eid": BigInteger(), "status": EVENT.c.status.type,
                                 "result": EVENT.c.result.type, "instance_id": BigInteger()})
        written = len(conn.execute(
            update(EVENT).where(EVENT.c.id == given.c.eid, pending)
            .values(status=given.c.status, result=given.c.result,
                    instance_id=given.c.instance_id, processed_at=now)
            .returning(EVENT.c.id), {"rows": rows}).all())
    else:
        written = sum(conn.execute(
            update(EVENT).where(and_(EVENT.c.id == bindparam("eid"), pending))
            .values(status=bindparam("status"), result=bindparam("result"),
                    instance_id=bindparam("instance_id"), processed_at=now), row).rowcount
            for row in rows)
    if written != len(rows):
        raise Overtaken(f"{len(rows) - written} of {len(rows)} events were applied by another "
                        "worker first", [event_id for event_id, _ in outcomes])


def _process_batch_safely(partitions: list[int], size: int, claimed: list[int] | None = None,
                          claim_next: bool = False, leases: _Leases | None = None
                          ) -> tuple[int, list[int]]:
    """A batch (see `_batch`); when it fails, retry event by event, marking the failing one.

    One event that breaks processing (a bug, data the database refuses) must not block the
    events behind it in its partition forever: it is recorded as failed, with the error, and
    can be replayed once the cause is fixed.
    """
    try:
        return _batch(partitions, size, claimed, claim_next, leases)
    except Overtaken as exc:
        # Nothing of this batch is written; what is still pending is claimed afresh, its
        # attempt taken back (nothing broke: the batch only lost a race).
        db.session.rollback()
        log.warning("batch of partitions %s rolled back: %s", partitions, exc)
        _uncount(db.session.connection(), exc.ids)
        db.session.commit()
        return 0, []
    except TIMEOUTS:
        # The job ran out of time: the attempt is counted; end this job (the next one takes the
        # events one at a time) instead of starting more work the alarm can no longer stop.
        db.session.rollback()
        raise
    except Exception:
        db.session.rollback()
        log.exception("batch of partitions %s failed; retrying event by event", partitions)
    try:
        return _batch(partitions, 1)[0], []
    except TIMEOUTS:
        db.session.rollback()
        raise
    except Exception as exc:
        db.session.rollback()
        event_id = db.session.scalar(
            select(EVENT.c.id).where(EVENT.c.status == EventStatus.PENDING.value,
                                     EVENT.c.partition.in_(partitions))
            .order_by(EVENT.c.id).limit(1))
        if event_id is None:
            return 0, []
        log.exception("event %s failed", event_id)
        db.session.execute(update(EVENT).where(EVENT.c.id == event_id).values(
            status=EventStatus.FAILED.value, result=f"error: {exc}"[:1000],
            processed_at=utcnow()))
        db.session.commit()
        return 1, []


def process_pending(time_budget: float = 20.0, batch_size: int | None = None) -> int:
    """Work through pending events until none is left or time is up.

    A worker leases a few partitions at once (EVENT_PARTITIONS_PER_BATCH) and applies their
    events in batches of EVENT_BATCH_SIZE: a partition alone often holds fewer events than a
    batch, and each batch pays a dozen round trips to the database however small it is.
    """
    owner = worker_id()
    cfg = current_app.config
    lease_seconds = float(cfg.get("LEASE_SECONDS", 60))
    size = batch_size or int(cfg.get("EVENT_BATCH_SIZE", 200))
    width = max(1, int(cfg.get("EVENT_PARTITIONS_PER_BATCH", 8)))
    deadline = time.monotonic() + time_budget
    done = 0
    # A worker told to stop (SIGTERM) ends after the batch it is in: the batch commits (or rolls
    # back as a whole), the leases are released, and another worker takes the partitions at once.
    while time.monotonic() < deadline and not stopping():
        partitions = pending_partitions()
        if not partitions:
            break
        random.shuffle(partitions)
        worked = False
        for start in range(0, len(partitions), width):
            names = acquire_leases([f"partition:{p}" for p in partitions[start:start + width]],
                                   owner, lease_seconds, commit=False)
            if not names:
                db.session.commit()
                continue
            worked = True
            group = [int(name.split(":", 1)[1]) for name in names]
            leases = _Leases(names, owner)
            # The first batch is claimed in the commit that takes the leases, each next one in
            # its predecessor's commit, and the last one gives the leases back in its own.
            claimed: list[int] | None = _count_attempt(db.session.connection(), group, size)
            db.session.commit()
            leased = time.monotonic()
            try:
                while claimed:
                    ids, claimed = claimed, None  # a batch that fails had its attempt
                    count, claimed = _process_batch_safely(
                        group, size, ids, claim_next=time.monotonic() < deadline, leases=leases)
                    done += count
                    if not claimed or time.monotonic() >= deadline or stopping():
                        break
                    if time.monotonic() - leased > lease_seconds / 3:
                        # Renewed when a third is used, not after every batch: a commit saved.
                        acquire_leases(names, owner, lease_seconds)
                        leased = time.monotonic()
            finally:
                db.session.rollback()
                if claimed:
                    # Claimed with the last batch but not started: their attempt never happened.
                    _uncount(db.session.connection(), claimed)
                    db.session.commit()
                if not leases.released:
                    release_leases(names, owner)
            if time.monotonic() >= deadline or stopping():
                break
        if not worked:
            break  # every partition with work is leased by another worker
    return done
