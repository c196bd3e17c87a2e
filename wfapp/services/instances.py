"""Workflow instances: the list with its filters, one instance, and what people do to them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from ..engine import (
    CompiledWorkflow,
    RuleError,
    StateInfo,
    Verdict,
    build_context,
    capture_vars,
    event_view,
    explain,
    manual_refusal,
)
from ..extensions import db
from ..formatting import record_url
from ..models import (
    Event,
    HistoryEntry,
    Instance,
    Integration,
    Workflow,
    utcnow,
)
from . import audit
from .errors import Conflict, NotFound, ValidationFailed
from .firing import (
    INSTANCE,
    Move,
    compiled_workflow,
    ledger_row,
    load_instance,
    move,
    waiting_events,
    write_ledger,
)
from .firing import InstanceRow as LoadedInstance

# The list lives in instance_list; its names stay importable from here.
from .instance_list import (  # noqa: E402,F401
    MAX_PAGE,
    InstanceFilters,
    InstanceRow,
    list_instances,
)
from .registry import get_registry
from .versions import get_version


def get_instance(instance_id: int) -> Instance:
    """Return the instance with this id; raise NotFound otherwise."""
    instance = db.session.get(Instance, instance_id)
    if instance is None:
        raise NotFound(f"instance {instance_id} does not exist")
    return instance


def history(instance_id: int) -> list[HistoryEntry]:
    """The instance's history, oldest first."""
    return list(db.session.scalars(select(HistoryEntry)
                                   .where(HistoryEntry.instance_id == instance_id)
                                   .order_by(HistoryEntry.at, HistoryEntry.id)))


def events_of(instance_id: int, limit: int = 100) -> list[Event]:
    """The latest events that reached this instance, newest first."""
    return list(db.session.scalars(select(Event).where(Event.instance_id == instance_id)
                                   .order_by(Event.id.desc()).limit(limit)))


@dataclass
class ManualAction:
    """A Manual transition a person can fire now."""

    code: str
    label: str
    to_state: str
    confirm: bool


def _manual(workflow: CompiledWorkflow | None, state_code: str) -> list[ManualAction]:
    if workflow is None or not workflow.enabled:
        return []
    state = workflow.states.get(state_code)
    if state is None or state.is_final:
        return []
    return [ManualAction(t.code, t.config.get("button_label") or t.description or t.code,
                         t.to_state, bool(t.config.get("confirm")))
            for t in workflow.candidates.get((state_code, "manual"), ())]


def manual_from(workflow_id: int, version: int, state_code: str) -> list[ManualAction]:
    """The Manual transitions an instance of this workflow version in this state can fire now."""
    return _manual(compiled_workflow(workflow_id, version), state_code)


def manual_actions(instance: Instance) -> list[ManualAction]:
    """The enabled Manual transitions leaving the instance's state (none in a final state)."""
    return _manual(compiled_workflow(instance.workflow_id, instance.workflow_version),
                   instance.state)


def manual_actions_by_instance(instances: Sequence[Instance]) -> dict[int, list[ManualAction]]:
    """The Manual transitions each instance can fire now, one workflow lookup per workflow."""
    workflows: dict[tuple[int, int], CompiledWorkflow | None] = {}
    out = {}
    for instance in instances:
        key = (instance.workflow_id, instance.workflow_version)
        if key not in workflows:
            workflows[key] = compiled_workflow(*key)
        out[instance.id] = _manual(workflows[key], instance.state)
    return out


def common_manual_actions(instances: Sequence[Instance]) -> list[ManualAction]:
    """The Manual transitions every one of the instances can fire now (same code and target)."""
    per_instance = list(manual_actions_by_instance(instances).values())
    if not per_instance:
        return []
    keys = set.intersection(*({(a.code, a.to_state) for a in actions}
                              for actions in per_instance))
    return [a for a in per_instance[0] if (a.code, a.to_state) in keys]


def current_state(instance: Instance) -> StateInfo | None:
    """The compiled definition of the instance's state (None when the state was removed)."""
    workflow = compiled_workflow(instance.workflow_id, instance.workflow_version)
    return workflow.states.get(instance.state) if workflow is not None else None


def version_definition(instance: Instance) -> dict[str, Any]:
    """The definition (the export document's `workflow`) of the version the instance follows."""
    return dict(get_version(instance.workflow, instance.workflow_version).document["workflow"])


def reset_choices(instances: Sequence[Instance]) -> list[tuple[str, str]]:
    """(code, "code · description") of the states every instance's version has, in the order
    the first instance's version lists them: what Reset to State can offer them all."""
    versions: dict[tuple[int, int], CompiledWorkflow | None] = {}
    for instance in instances:
        key = (instance.workflow_id, instance.workflow_version)
        if key not in versions:
            versions[key] = compiled_workflow(*key)
    compiled = [w for w in versions.values() if w is not None]
    if not compiled or len(compiled) < len(versions):
        return []
    return [(code, f"{code} · {info.description}") for code, info in compiled[0].states.items()
            if all(code in w.states for w in compiled[1:])]


def record_link(instance: Instance) -> str | None:
    """Open Record: the integration's record URL template filled for this instance, if any."""
    return record_url(instance.integration.record_url_template or "", instance.record_key,
                      instance.run_id, instance.vars or {}, instance.data or {})


def _locked(instance_id: int) -> tuple[Connection, LoadedInstance, CompiledWorkflow]:
    """Read an instance for a change by a person (its row locked on PostgreSQL)."""
    conn = db.session.connection()
    row = load_instance(conn, instance_id, lock=True)
    workflow = None if row is None else compiled_workflow(row.workflow_id, row.workflow_version)
    if row is None or workflow is None:  # the workflow too: it may be deleted meanwhile
        raise NotFound(f"instance {instance_id} does not exist")
    return conn, row, workflow


def ledger_of(row: LoadedInstance, change: Move, before: str, now: datetime) -> dict[str, Any]:
    """The events-ledger row of a person's Manual fire or reset (`before`: the state it left)."""
    if change.transition:
        event_type, what = change.transition, f"fired {change.transition}"
        payload = {"transition": change.transition, "comment": change.notes,
                   "actor": change.actor}
    else:
        event_type, what = change.to_state, "reset"
        payload = {"state": change.to_state, "note": change.notes, "actor": change.actor}
    return ledger_row(row, change.trigger_type, event_type, payload,
                      f"{what}: {before} → {change.to_state}", now)


def _apply(conn: Connection, workflow: CompiledWorkflow, row: LoadedInstance, change: Move
           ) -> Instance:
    """Move the instance, write the move to the events ledger and commit.

    A lost race is a Conflict the person can retry; so are events for this instance that are
    still waiting in the inbox: they were received first and are applied first.
    """
    now = utcnow()
    waiting = waiting_events(conn, row)
    if waiting:
        db.session.rollback()
        raise Conflict(f"{waiting} event(s) received earlier are still waiting to be applied "
                       "to this instance; retry in a moment")
    before = row.state
    history: list[dict[str, Any]] = []
    if not move(conn, workflow, row, change, now, history):
        db.session.rollback()
        raise Conflict("the instance changed meanwhile; look again and retry")
    write_ledger(conn, [ledger_of(row, change, before, now)], history)
    conn.execute(insert(HistoryEntry.__table__), history)
    db.session.commit()
    return get_instance(row.id)


def manual_move(workflow: CompiledWorkflow, row: LoadedInstance, code: str, comment: str,
                actor: str) -> tuple[Move | None, str]:
    """The move firing Manual transition `code` makes on `row`, or None and why it cannot:
    the one decision that firing by hand, a bulk Advance and its dry run share."""
    context = build_context({"comment": comment}, row.data, row.context())
    transition, problem = manual_refusal(workflow, row.state, code, context)
    if transition is None:
        return None, problem
    return Move(transition.to_state, transition.code, "manual", actor, notes=comment or "",
                vars=capture_vars(transition, context, row.vars)), ""


def fire_manual(instance_id: int, transition_code: str, comment: str, actor: str) -> Instance:
    """Fire a Manual transition now, as `actor`; refused with a reason when it cannot fire."""
    conn, row, workflow = _locked(instance_id)
    code = (transition_code or "").strip().upper()
    change, problem = manual_move(workflow, row, code, comment, actor)
    if change is None:
        db.session.rollback()
        raise Conflict(problem)
    return _apply(conn, workflow, row, change)


def reset_instance(instance_id: int, state_code: str, note: str, actor: str) -> Instance:
    """Move an instance to any state of its workflow without firing a transition."""
    if not (note or "").strip():
        raise ValidationFailed([RuleError("note", "a note saying why is required")])
    conn, row, workflow = _locked(instance_id)
    code = (state_code or "").strip().upper()
    if workflow is None or code not in workflow.states:
        db.session.rollback()
        raise ValidationFailed([RuleError("state", f"state {code!r} is not a state of "
                                          "this workflow")])
    audit.record("reset", "instance", str(instance_id),
                 {"from": row.state, "to": code, "note": note.strip()}, who=actor)
    return _apply(conn, workflow, row, Move(code, None, "reset", actor, notes=note.strip()))


def delete_instance(instance_id: int, actor: str) -> None:
    """Remove an instance without firing anything; the deletion goes to the audit log."""
    if not delete_many([instance_id], actor):
        db.session.rollback()
        raise NotFound(f"instance {instance_id} does not exist")
    db.session.commit()


def delete_many(ids: Sequence[int], actor: str) -> list[int]:
    """Remove these instances in the caller's transaction, each audited; the ids removed.

    The DELETE's returned ids say which this transaction removed: of several deletes at once,
    one succeeds (and is audited), the others find nothing.
    """
    if not ids:
        return []
    details = {row.id: {"integration": row.integration, "workflow": row.workflow,
                        "record_key": row.record_key, "run_id": row.run_id,
                        "state": row.state, "vars": row.vars}
               for row in db.session.execute(
                   select(INSTANCE.c.id, Integration.code.label("integration"),
                          Workflow.code.label("workflow"), INSTANCE.c.record_key,
                          INSTANCE.c.run_id, INSTANCE.c.state, INSTANCE.c.vars)
                   .join(Integration, Integration.id == INSTANCE.c.integration_id)
                   .join(Workflow, Workflow.id == INSTANCE.c.workflow_id)
                   .where(INSTANCE.c.id.in_(list(ids))))}
    deleted = list(db.session.scalars(delete(INSTANCE).where(INSTANCE.c.id.in_(list(ids)))
                                      .returning(INSTANCE.c.id)))
    if deleted:
        db.session.execute(update(Event.__table__).where(Event.instance_id.in_(deleted))
                           .values(instance_id=None))
    for instance_id in deleted:
        audit.record("delete", "instance", str(instance_id), details.get(instance_id, {}),
                     who=actor)
    return deleted


def _label(trigger_type: str | None) -> str:
    """A trigger type's label (its identifier when no plugin registers it)."""
    found = get_registry().trigger_types.get(trigger_type or "")
    return found.label if found is not None else str(trigger_type)


def why_not(instance: Instance, payload: dict[str, Any] | None = None,
            source: str | None = None, event_type: str = "") -> tuple[str, list[Verdict]]:
    """Explain each outgoing transition for the latest event, or for a pasted payload."""
    workflow = compiled_workflow(instance.workflow_id, instance.workflow_version)
    if workflow is None:
        return "the workflow no longer exists", []
    record = instance.data
    if payload is None:
        latest = db.session.scalar(select(Event).where(Event.instance_id == instance.id)
                                   .order_by(Event.id.desc()).limit(1))
        if latest is None:
            about = "no event has reached this instance yet"
            source, payload = None, {}
        else:
            about = f"the latest event #{latest.id} ({_label(latest.source)}, received " \
                    f"{latest.received_at:%Y-%m-%d %H:%M:%S})"
            fired = db.session.execute(
                select(HistoryEntry.transition, HistoryEntry.from_state, HistoryEntry.to_state)
                .where(HistoryEntry.instance_id == instance.id,
                       HistoryEntry.event_id == latest.id,
                       HistoryEntry.transition.is_not(None)).limit(1)).first()
            if fired is not None:
                about += f", which already fired {fired[0]} ({fired[1]} → {fired[2]}); " \
                         f"evaluated again in {instance.state}"
            source, payload, event_type = latest.source, latest.payload or {}, latest.type
            record = latest.record if latest.record is not None else instance.data
    else:
        about = f"the pasted payload as an event from {_label(source)}"
    context = build_context(payload, record, {"state": instance.state,
                                              "record_key": instance.record_key,
                                              "run_id": instance.run_id,
                                              "vars": instance.vars or {}})
    view = event_view(source, event_type, payload, instance.record_key, record,
                      (payload or {}).get("status"))
    return about, explain(workflow, instance.state, source, view, context,
                          get_registry().trigger_types)
