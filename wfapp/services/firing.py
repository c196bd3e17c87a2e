"""Moving an instance: the one compare-and-set transaction step every trigger path shares.

Event processing, timeouts, manual fires and resets all change an instance through `move()`:
an UPDATE guarded by the instance's version (so two workers can never both move it) plus an
append-only history row. Moves that no stored event caused (a manual fire, a timeout, a reset)
are written to the events ledger by `record_move()` in the same transaction, and wait for the
events of their instance that were received before them (`waiting_events()`), so an instance
sees its changes in the order they happened. Compiled definitions come from
`versions.compiled_workflow`, by the workflow version an instance follows.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import Connection

from ..actions import ActionContext
from ..engine import CompiledWorkflow, timeout_due
from ..models import Event, EventStatus, HistoryEntry, Instance
from . import tally
from .events import partition_of
from .outbox import apply_in_transaction, outbox_rows, write_outbox
from .registry import get_registry

# Re-exported: the callers that move instances take their definitions from here.
from .versions import compiled_workflow  # noqa: F401

INSTANCE = Instance.__table__
HISTORY = HistoryEntry.__table__
EVENT = Event.__table__
NOTES_LIMIT = 500

@dataclass
class InstanceRow:
    """The fields of an instance that deciding and moving need, with its version."""

    id: int
    workflow_id: int
    integration_id: int
    record_key: str | None
    run_id: int | None
    state: str
    version: int
    data: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    workflow_version: int = 1

    def context(self) -> dict[str, Any]:
        """The `instance` part of a condition context."""
        return {"state": self.state, "record_key": self.record_key, "run_id": self.run_id,
                "vars": self.vars}


INSTANCE_COLUMNS = (INSTANCE.c.id, INSTANCE.c.workflow_id, INSTANCE.c.integration_id,
                    INSTANCE.c.record_key, INSTANCE.c.run_id, INSTANCE.c.state,
                    INSTANCE.c.version, INSTANCE.c.data, INSTANCE.c.vars,
                    INSTANCE.c.workflow_version)


def row_to_instance(row: Any) -> InstanceRow:
    """Build an InstanceRow from a row selected with INSTANCE_COLUMNS."""
    return InstanceRow(row.id, row.workflow_id, row.integration_id, row.record_key, row.run_id,
                       row.state, row.version, dict(row.data or {}), dict(row.vars or {}),
                       row.workflow_version)


def load_instance(conn: Connection, instance_id: int, lock: bool = False) -> InstanceRow | None:
    """Read one instance (locking its row on PostgreSQL when `lock`)."""
    query = select(*INSTANCE_COLUMNS).where(INSTANCE.c.id == instance_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    return row_to_instance(row) if row is not None else None


def notes_excerpt(value: Any) -> str:
    """A short text for the history Notes column (a comment or a payload excerpt)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= NOTES_LIMIT else text[: NOTES_LIMIT - 1] + "…"


@dataclass
class Move:
    """One requested state change, before it is applied."""

    to_state: str
    transition: str | None
    trigger_type: str
    actor: str
    event_id: int | None = None
    notes: str = ""
    vars: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


def history_row(instance: InstanceRow, from_state: str | None, move: Move,
                now: datetime) -> dict[str, Any]:
    """The history row of a move."""
    return {"instance_id": instance.id, "at": now, "from_state": from_state,
            "to_state": move.to_state, "transition": move.transition,
            "trigger_type": move.trigger_type, "actor": move.actor, "event_id": move.event_id,
            "notes": move.notes}


@dataclass
class PlannedMove:
    """A move decided but not yet written: the instance columns it sets, its rows to insert."""

    values: dict[str, Any]
    history: dict[str, Any]
    deliveries: list[dict[str, Any]]


def plan_move(workflow: CompiledWorkflow, instance: InstanceRow, change: Move,
              now: datetime) -> PlannedMove:
    """What moving `instance` by `change` writes, without writing it (no I/O).

    Applies the transition's in-transaction actions (set_variable) to `change.vars` and builds
    the outbox rows of its other actions. Re-entering a state restarts its timer.
    """
    target = workflow.states[change.to_state]
    transition = workflow.transitions.get(change.transition) \
        if change.transition and change.trigger_type != "reset" else None
    deliveries: list[dict[str, Any]] = []
    if transition is not None and transition.actions:
        # Actions: set_variable changes the variables this UPDATE writes; the others become
        # outbox rows in this same transaction, delivered once it commits.
        action_types = get_registry().action_types
        context = ActionContext(
            instance.id, workflow.code, "", instance.record_key, instance.run_id,
            transition.code, instance.state, change.to_state,
            dict(change.vars if change.vars is not None else instance.vars),
            dict(change.data if change.data is not None else instance.data))
        change.vars = context.vars = apply_in_transaction(transition, context, action_types)
        deliveries = outbox_rows(transition, context, instance.workflow_id,
                                 instance.integration_id, change.event_id, now, action_types)
    values: dict[str, Any] = {
        "state": change.to_state, "active": not target.is_final, "entered_state_at": now,
        "timeout_due_at": timeout_due(now, target), "last_trigger": change.trigger_type,
        "last_transition": change.transition, "version": instance.version + 1,
        "completed_at": now if target.is_final else None,
    }
    if change.vars is not None:
        values["vars"] = change.vars
    if change.data is not None:
        values["data"] = change.data
    return PlannedMove(values, history_row(instance, instance.state, change, now), deliveries)


def apply_planned(instance: InstanceRow, planned: PlannedMove) -> None:
    """Bring the in-memory instance to where a planned move takes it."""
    values = planned.values
    instance.state = values["state"]
    instance.version = values["version"]
    instance.vars = values.get("vars", instance.vars)
    instance.data = values.get("data", instance.data)


def move(conn: Connection, workflow: CompiledWorkflow, instance: InstanceRow, change: Move,
         now: datetime, history: list[dict[str, Any]] | None = None) -> bool:
    """Compare-and-set the instance into `change.to_state`; False when someone moved it first.

    The one function every single change of an instance goes through (event batches write the
    same `plan_move()` set-based). In the caller's transaction it also applies the
    transition's in-transaction actions (set_variable) and writes the outbox rows of its other
    actions — only when the compare-and-set succeeded. The history row goes to `history` when
    given (written in bulk by the caller) or is inserted at once.
    """
    return write_move(conn, instance, change, plan_move(workflow, instance, change, now), now,
                      history)


def write_move(conn: Connection, instance: InstanceRow, change: Move, planned: PlannedMove,
               now: datetime, history: list[dict[str, Any]] | None = None) -> bool:
    """Write a move `plan_move` decided (see `move`); False when someone moved it first."""
    result = conn.execute(
        update(INSTANCE)
        .where(INSTANCE.c.id == instance.id, INSTANCE.c.version == instance.version)
        .values(**planned.values))
    if result.rowcount != 1:
        return False
    write_outbox(conn, planned.deliveries)
    if change.transition is not None:
        tally.note(instance.workflow_id, change.transition, change.trigger_type, now)
    if history is None:
        conn.execute(insert(HISTORY), [planned.history])
    else:
        history.append(planned.history)
    apply_planned(instance, planned)
    return True


@dataclass
class NewInstance:
    """An instance to create: what it belongs to, its first data, what created it."""

    workflow_id: int
    workflow: CompiledWorkflow
    integration_id: int
    record_key: str | None
    run_id: int | None
    data: dict[str, Any]
    actor: str
    trigger_type: str
    event_id: int | None = None


def initial_instance(item: NewInstance, instance_id: int) -> InstanceRow:
    """The instance `item` starts, in the initial state of its workflow version, as `id`."""
    initial = item.workflow.states[item.workflow.initial_state]
    return InstanceRow(instance_id, item.workflow_id, item.integration_id, item.record_key,
                       item.run_id, initial.code, 1, dict(item.data or {}), {},
                       item.workflow.version or 1)


def create_instances(conn: Connection, new: list[NewInstance], now: datetime,
                     history: list[dict[str, Any]] | None = None) -> list[InstanceRow]:
    """Insert instances in the initial state of their workflow version, in one statement.

    Their "instance created" history rows go to `history` (written in bulk by the caller)
    when given, else are inserted at once. Returns the instances in the order given.
    """
    if not new:
        return []
    initials = [item.workflow.states[item.workflow.initial_state] for item in new]
    rows = [{"workflow_id": item.workflow_id, "integration_id": item.integration_id,
             "record_key": item.record_key, "run_id": item.run_id, "state": initial.code,
             "active": not initial.is_final, "entered_state_at": now,
             "timeout_due_at": timeout_due(now, initial), "data": item.data or {}, "vars": {},
             "last_trigger": item.trigger_type, "last_transition": None, "version": 1,
             "workflow_version": item.workflow.version or 1, "created_at": now,
             "completed_at": None}
            for item, initial in zip(new, initials, strict=True)]
    ids = conn.execute(insert(INSTANCE).returning(INSTANCE.c.id, sort_by_parameter_order=True),
                       rows).scalars().all()
    instances = [initial_instance(item, instance_id) for instance_id, item in zip(ids, new,
                                                                                   strict=True)]
    created = [history_row(instance, None, Move(instance.state, None, item.trigger_type,
                                                item.actor, item.event_id, "instance created"),
                           now)
               for instance, item in zip(instances, new, strict=True)]
    if history is None:
        conn.execute(insert(HISTORY), created)
    else:
        history.extend(created)
    return instances


def create_instance(conn: Connection, workflow_id: int, workflow: CompiledWorkflow,
                    integration_id: int, record_key: str | None, run_id: int | None,
                    data: dict[str, Any], actor: str, trigger_type: str, now: datetime,
                    event_id: int | None = None) -> InstanceRow:
    """Insert a new instance in the initial state of `workflow` (a version), with its history."""
    return create_instances(conn, [NewInstance(workflow_id, workflow, integration_id, record_key,
                                               run_id, data, actor, trigger_type, event_id)],
                            now)[0]


def waiting_events(conn: Connection, instance: InstanceRow, before: datetime | None = None
                   ) -> int:
    """How many events for this instance are still pending (received at or before `before`)."""
    key = (EVENT.c.record_key == instance.record_key if instance.record_key is not None
           else EVENT.c.run_id == instance.run_id)
    query = select(func.count()).select_from(EVENT).where(
        EVENT.c.status == EventStatus.PENDING.value,
        EVENT.c.partition == partition_of(instance.integration_id, instance.record_key,
                                          instance.run_id),
        EVENT.c.integration_id == instance.integration_id, key)
    if before is not None:
        query = query.where(EVENT.c.received_at <= before)
    return int(conn.execute(query).scalar_one())


def ledger_row(instance: InstanceRow, source: str, event_type: str, payload: dict[str, Any],
               result: str, now: datetime) -> dict[str, Any]:
    """The events-ledger row of a change no stored event caused (manual, timeout, reset).

    Stored already processed, in the instance's partition, with a unique dedupe key.
    """
    return {"integration_id": instance.integration_id, "source": source,
            "type": event_type[:100], "record_key": instance.record_key,
            "run_id": instance.run_id, "payload": payload, "record": None,
            "dedupe_key": f"{source}:{uuid.uuid4().hex}",
            "partition": partition_of(instance.integration_id, instance.record_key,
                                      instance.run_id),
            "received_at": now, "status": EventStatus.PROCESSED.value, "result": result[:1000],
            "instance_id": instance.id, "processed_at": now, "attempts": 1}


def write_ledger(conn: Connection, rows: list[dict[str, Any]],
                 history: list[dict[str, Any]]) -> None:
    """Insert ledger rows in one statement; point the history rows (not yet inserted) at them.

    Each history row of an instance without an event id gets the id of that instance's ledger
    row (a change writes one ledger row per instance).
    """
    if not rows:
        return
    ids = conn.execute(insert(EVENT).returning(EVENT.c.id, sort_by_parameter_order=True),
                       rows).scalars().all()
    by_instance = {row["instance_id"]: event_id for row, event_id in zip(rows, ids, strict=True)}
    for row in history:
        if row["event_id"] is None and row["instance_id"] in by_instance:
            row["event_id"] = by_instance[row["instance_id"]]


def record_move(conn: Connection, instance: InstanceRow, source: str, event_type: str,
                payload: dict[str, Any], result: str, now: datetime,
                history: list[dict[str, Any]]) -> None:
    """Write one change no stored event caused to the events ledger (see `ledger_row`)."""
    write_ledger(conn, [ledger_row(instance, source, event_type, payload, result, now)],
                 history)


def pending_before(conn: Connection, instances: list[Any]) -> dict[tuple[int, Any, Any], datetime]:
    """For instances (rows with integration_id, record_key, run_id): their oldest pending event."""
    partitions = {partition_of(i.integration_id, i.record_key, i.run_id) for i in instances}
    if not partitions:
        return {}
    rows = conn.execute(
        select(EVENT.c.integration_id, EVENT.c.record_key, EVENT.c.run_id,
               func.min(EVENT.c.received_at))
        .where(EVENT.c.status == EventStatus.PENDING.value,
               EVENT.c.partition.in_(sorted(partitions)),
               or_(EVENT.c.record_key.is_not(None), EVENT.c.run_id.is_not(None)))
        .group_by(EVENT.c.integration_id, EVENT.c.record_key, EVENT.c.run_id))
    out: dict[tuple[int, Any, Any], datetime] = {}
    for integration_id, record_key, run_id, oldest in rows:
        # Per Record instances are keyed by record key, Per Run ones by run id.
        if record_key is not None:
            out[(integration_id, record_key, None)] = oldest
        if run_id is not None:
            key = (integration_id, None, run_id)
            out[key] = min(oldest, out.get(key, oldest))
    return out
