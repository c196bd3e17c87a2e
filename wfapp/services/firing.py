"""Moving an instance: the one compare-and-set transaction step every trigger path shares.

Event processing, timeouts, manual fires and resets all change an instance through `move()`:
an UPDATE guarded by the instance's version (so two workers can never both move it) plus an
append-only history row. Compiled workflow definitions are cached by their last change.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from ..engine import CompiledWorkflow, compile_workflow, timeout_due
from ..extensions import db
from ..models import HistoryEntry, Instance, State, Transition, Workflow

INSTANCE = Instance.__table__
HISTORY = HistoryEntry.__table__
NOTES_LIMIT = 500

_cache: dict[int, tuple[datetime, CompiledWorkflow]] = {}
_cache_lock = threading.Lock()


def compiled_workflow(workflow_id: int) -> CompiledWorkflow | None:
    """The compiled definition of a workflow, recompiled only when it has changed."""
    stamp = db.session.scalar(select(Workflow.updated_at).where(Workflow.id == workflow_id))
    if stamp is None:
        return None
    cached = _cache.get(workflow_id)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    workflow = db.session.get(Workflow, workflow_id, populate_existing=True)
    if workflow is None:  # deleted since the stamp was read
        return None
    states = db.session.scalars(select(State).where(State.workflow_id == workflow_id)
                                .order_by(State.position)).all()
    transitions = db.session.scalars(select(Transition).where(
        Transition.workflow_id == workflow_id).order_by(Transition.position)).all()
    wf = {
        "code": workflow.code, "enabled": workflow.enabled,
        "initial_state": workflow.initial_state,
        "states": [{"code": s.code, "description": s.description, "is_final": s.is_final,
                    "timeout_hours": s.timeout_hours,
                    "on_timeout_transition": s.on_timeout_transition} for s in states],
        "transitions": [{"code": t.code, "description": t.description,
                         "from_state": t.from_state, "to_state": t.to_state,
                         "trigger_type": t.trigger_type, "enabled": t.enabled,
                         "priority": t.priority, "trigger_config": t.trigger_config,
                         "conditions": t.conditions, "capture": t.capture}
                        for t in transitions],
    }
    result = compile_workflow(wf)
    with _cache_lock:
        _cache[workflow_id] = (stamp, result)
    return result


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

    def context(self) -> dict[str, Any]:
        """The `instance` part of a condition context."""
        return {"state": self.state, "record_key": self.record_key, "run_id": self.run_id,
                "vars": self.vars}


INSTANCE_COLUMNS = (INSTANCE.c.id, INSTANCE.c.workflow_id, INSTANCE.c.integration_id,
                    INSTANCE.c.record_key, INSTANCE.c.run_id, INSTANCE.c.state,
                    INSTANCE.c.version, INSTANCE.c.data, INSTANCE.c.vars)


def row_to_instance(row: Any) -> InstanceRow:
    """Build an InstanceRow from a row selected with INSTANCE_COLUMNS."""
    return InstanceRow(row.id, row.workflow_id, row.integration_id, row.record_key, row.run_id,
                       row.state, row.version, dict(row.data or {}), dict(row.vars or {}))


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


def move(conn: Connection, workflow: CompiledWorkflow, instance: InstanceRow, change: Move,
         now: datetime, history: list[dict[str, Any]] | None = None) -> bool:
    """Compare-and-set the instance into `change.to_state`; False when someone moved it first.

    The history row goes to `history` when given (written in bulk by the caller) or is
    inserted at once. Re-entering a state restarts its timer.
    """
    target = workflow.states[change.to_state]
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
    result = conn.execute(
        update(INSTANCE)
        .where(INSTANCE.c.id == instance.id, INSTANCE.c.version == instance.version)
        .values(**values))
    if result.rowcount != 1:
        return False
    row = history_row(instance, instance.state, change, now)
    if history is None:
        conn.execute(insert(HISTORY), [row])
    else:
        history.append(row)
    instance.state = change.to_state
    instance.version += 1
    if change.vars is not None:
        instance.vars = change.vars
    if change.data is not None:
        instance.data = change.data
    return True


def create_instance(conn: Connection, workflow_id: int, workflow: CompiledWorkflow,
                    integration_id: int, record_key: str | None, run_id: int | None,
                    data: dict[str, Any], actor: str, trigger_type: str, now: datetime,
                    event_id: int | None = None) -> InstanceRow:
    """Insert a new instance in the workflow's initial state, with its first history row."""
    initial = workflow.states[workflow.initial_state]
    instance_id = conn.execute(
        insert(INSTANCE).values(
            workflow_id=workflow_id, integration_id=integration_id, record_key=record_key,
            run_id=run_id, state=initial.code, active=not initial.is_final,
            entered_state_at=now, timeout_due_at=timeout_due(now, initial), data=data or {},
            vars={}, last_trigger=trigger_type, last_transition=None, version=1,
            created_at=now, completed_at=None)
        .returning(INSTANCE.c.id)).scalar_one()
    instance = InstanceRow(instance_id, workflow_id, integration_id, record_key, run_id,
                           initial.code, 1, dict(data or {}), {})
    conn.execute(insert(HISTORY), [history_row(
        instance, None, Move(initial.code, None, trigger_type, actor, event_id,
                             "instance created"), now)])
    return instance
