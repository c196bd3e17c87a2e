"""Authoring workflows: the list, the card's general fields, states and transitions.

Every edit works on the definition as a document (the export shape), applies the change, checks
every rule of the design with the engine, and only then writes — so a workflow in the database
always satisfies the rules, whichever page or API changed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update

from ..engine import RuleError, check_code, normalize_code
from ..extensions import affected, db
from ..models import Instance, Integration, Workflow
from . import audit, versions
from .definitions import get_workflow, save_definition, workflow_to_dict
from .errors import Conflict, NotFound, ValidationFailed


@dataclass
class WorkflowRow:
    """One line of the Workflows list."""

    code: str
    description: str
    initial_state: str
    enabled: bool
    active_instances: int
    latest_version: int = 0
    pinned_version: int | None = None


def list_workflows(*, after: str | None = None, limit: int | None = None
                   ) -> list[WorkflowRow]:
    """Workflows by code (keyset: those after `after`, at most `limit`), in two queries."""
    query = select(Workflow).order_by(Workflow.code)
    if after is not None:
        query = query.where(Workflow.code > after)
    if limit is not None:
        query = query.limit(limit)
    workflows = db.session.scalars(query).all()
    count_query = (select(Instance.workflow_id, func.count())
                   .where(Instance.active.is_(True)).group_by(Instance.workflow_id))
    if after is not None or limit is not None:
        count_query = count_query.where(Instance.workflow_id.in_([w.id for w in workflows]))
    counts = dict(db.session.execute(count_query).all()) if workflows else {}
    return [WorkflowRow(w.code, w.description, w.initial_state, w.enabled, counts.get(w.id, 0),
                        w.latest_version, w.pinned_version) for w in workflows]


def active_instance_count(workflow: Workflow) -> int:
    """Number of instances of this workflow in a non-final state."""
    return db.session.scalar(
        select(func.count()).where(Instance.workflow_id == workflow.id,
                                   Instance.active.is_(True))) or 0


def state_instance_counts(workflow: Workflow) -> dict[str, int]:
    """How many instances are in each state of this workflow."""
    return dict(db.session.execute(
        select(Instance.state, func.count())
        .where(Instance.workflow_id == workflow.id)
        .group_by(Instance.state)).all())


def edited_version_counts(workflow: Workflow, state_code: str) -> dict[int, int]:
    """Instances in `state_code` per version, on the versions an edit of the latest affects:
    the latest and the one new instances start on (instances on older versions keep theirs)."""
    numbers = {workflow.latest_version, versions.start_version(workflow)}
    return dict(db.session.execute(
        select(Instance.workflow_version, func.count())
        .where(Instance.workflow_id == workflow.id, Instance.state == state_code,
               Instance.workflow_version.in_(numbers))
        .group_by(Instance.workflow_version)).all())


class StateInUse(ValidationFailed):
    """A state to rename or delete holds instances on the latest (or start) version.

    `counts` is {version: instances}; the view offers to go ahead anyway and then opens the
    migration planner for them, pre-filled.
    """

    def __init__(self, path: str, state: str, counts: dict[int, int], verb: str) -> None:
        self.state, self.counts = state, dict(sorted(counts.items()))
        total = sum(self.counts.values())
        where = ", ".join(f"{n} on version {v}" for v, n in self.counts.items())
        super().__init__([RuleError(path, f"state {state!r} has {total} instance(s) ({where}, "
                                          f"which edits of the latest version affect); "
                                          f"{verb} it anyway and migrate them, or move "
                                          "them out of it first")])

    @property
    def total(self) -> int:
        """How many instances are in the state."""
        return sum(self.counts.values())


def active_counts_by_state(workflow: Workflow) -> dict[str, int]:
    """Active instances per state (an index-only count on ix_instance_workflow_active)."""
    return dict(db.session.execute(
        select(Instance.state, func.count())
        .where(Instance.workflow_id == workflow.id, Instance.active.is_(True))
        .group_by(Instance.state)).all())


def sample_record_fields(workflow: Workflow, limit: int = 50) -> list[str]:
    """Field names of one instance's record data, for the conditions editor (one indexed row)."""
    data = db.session.scalar(
        select(Instance.data).where(Instance.workflow_id == workflow.id).limit(1))
    if not isinstance(data, dict):
        return []
    return sorted(str(name) for name in data)[:limit]


def create_workflow(code: str, description: str, initial_state: str,
                    initial_description: str = "") -> Workflow:
    """Create a workflow with its initial state (a workflow always has one)."""
    code = normalize_code(code)
    errors: list[RuleError] = []
    check_code(code, "workflow.code", errors)
    if not errors and db.session.scalar(select(Workflow.id).where(Workflow.code == code)):
        raise ValidationFailed([RuleError("workflow.code", f"workflow {code!r} already exists")])
    wf = {
        "code": code, "description": description or "", "enabled": True,
        "initial_state": normalize_code(initial_state),
        "states": [{"code": normalize_code(initial_state),
                    "description": initial_description or "", "is_initial": True,
                    "is_final": False, "timeout_hours": None, "on_timeout_transition": None}],
        "transitions": [],
    }
    if errors:
        raise ValidationFailed(errors)
    return save_definition(None, wf)


def _edit(code: str, change: Callable[[dict[str, Any]], None]) -> Workflow:
    """Apply `change` to the workflow's definition document, validate it, write it."""
    workflow = get_workflow(code)
    wf = workflow_to_dict(workflow)
    change(wf)
    return save_definition(workflow, wf)


def update_general(code: str, description: str, initial_state: str, enabled: bool) -> Workflow:
    """Change the General fields; choosing another initial state moves the Is Initial mark."""
    initial = normalize_code(initial_state)

    def change(wf: dict[str, Any]) -> None:
        wf["description"] = description or ""
        wf["enabled"] = bool(enabled)
        if initial != wf["initial_state"] and any(s["code"] == initial for s in wf["states"]):
            for state in wf["states"]:
                state["is_initial"] = state["code"] == initial
        wf["initial_state"] = initial

    return _edit(code, change)


def set_enabled(code: str, enabled: bool | None = None, description: str | None = None
                ) -> Workflow:
    """Patch `enabled` and/or `description` (the API's PATCH)."""
    def change(wf: dict[str, Any]) -> None:
        if enabled is not None:
            wf["enabled"] = enabled
        if description is not None:
            wf["description"] = description

    return _edit(code, change)


def pin_version(code: str, number: int | None, enabled: bool | None = None,
                description: str | None = None) -> Workflow:
    """Pin new instances to version `number` (None: the latest), with the PATCH's other fields.

    One transaction: the pin, its audit row and any change of enabled/description.
    """
    workflow = get_workflow(code)
    if number is not None:
        try:
            versions.get_version(workflow, number)
        except NotFound as error:
            raise ValidationFailed([RuleError("pinned_version", error.message)]) from None
    old = workflow.pinned_version
    if old != number:
        versions.set_pinned(workflow, number)
        audit.record("update", "workflow", workflow.code, {"changes": [
            f"new instances start on version {number}" if number is not None
            else "new instances start on the latest version"], "pinned_version": number})
    return set_enabled(code, enabled, description)


def _index(rows: list[dict[str, Any]], code: str, kind: str) -> int:
    for i, row in enumerate(rows):
        if row["code"] == code:
            return i
    raise NotFound(f"{kind} {code!r} does not exist")


def save_state(code: str, state_code: str | None, fields: dict[str, Any],
               keep_instances: bool = False) -> Workflow:
    """Add a state (`state_code` None) or edit one; renames follow through to transitions.

    A rename is refused (StateInUse) while instances on the latest or start version are in the
    state, unless `keep_instances`: they then stay on their version until migrated.
    """
    new = {
        "code": normalize_code(fields.get("code")),
        "description": fields.get("description") or "",
        "is_initial": bool(fields.get("is_initial")),
        "is_final": bool(fields.get("is_final")),
        "timeout_hours": fields.get("timeout_hours"),
        "on_timeout_transition": normalize_code(fields.get("on_timeout_transition")) or None,
    }

    def change(wf: dict[str, Any]) -> None:
        states = wf["states"]
        if state_code is None:
            states.append(new)
        else:
            i = _index(states, normalize_code(state_code), "state")
            old = states[i]["code"]
            states[i] = new
            if new["code"] != old:
                counts = edited_version_counts(get_workflow(code), old)
                if counts and not keep_instances:
                    raise StateInUse(f"workflow.states[{i}].code", old, counts, "rename")
                _rename_state(wf, old, new["code"])
        if new["is_initial"]:
            # Marking a state initial moves the mark; exactly one state is initial.
            for state in states:
                state["is_initial"] = state["code"] == new["code"]
            wf["initial_state"] = new["code"]

    return _edit(code, change)


def _rename_state(wf: dict[str, Any], old: str, new: str) -> None:
    if wf["initial_state"] == old:
        wf["initial_state"] = new
    for t in wf["transitions"]:
        if t["from_state"] == old:
            t["from_state"] = new
        if t["to_state"] == old:
            t["to_state"] = new


def delete_state(code: str, state_code: str, keep_instances: bool = False) -> Workflow:
    """Delete a state unless it is initial or used by transitions.

    Refused (StateInUse) while instances on the latest or start version are in it, unless
    `keep_instances`: they then stay on their version until migrated.
    """
    workflow = get_workflow(code)
    state_code = normalize_code(state_code)
    wf = workflow_to_dict(workflow)
    i = _index(wf["states"], state_code, "state")
    place = f"workflow.states[{i}]"
    errors = []
    if wf["states"][i]["is_initial"]:
        errors.append(RuleError(place, f"state {state_code!r} is the initial state; make "
                                "another state initial first"))
    users = [t["code"] for t in wf["transitions"] if state_code in (t["from_state"], t["to_state"])]
    if users:
        errors.append(RuleError(place, f"state {state_code!r} is used by transitions "
                                f"{', '.join(users)}"))
    if errors:
        raise ValidationFailed(errors)
    counts = edited_version_counts(workflow, state_code)
    if counts and not keep_instances:
        raise StateInUse(place, state_code, counts, "delete")
    del wf["states"][i]
    return save_definition(workflow, wf)


def save_transition(code: str, transition_code: str | None, fields: dict[str, Any]) -> Workflow:
    """Add a transition (`transition_code` None) or edit one; `fields` may be partial on edit."""
    def change(wf: dict[str, Any]) -> None:
        transitions = wf["transitions"]
        if transition_code is None:
            current: dict[str, Any] = {"description": "", "enabled": True, "priority": 0,
                                       "trigger_config": {}, "conditions": [], "capture": {}}
            transitions.append(current)
        else:
            current = transitions[_index(transitions, normalize_code(transition_code),
                                         "transition")]
        old = current.get("code")
        for key, value in fields.items():
            if key in ("code", "from_state", "to_state"):
                value = normalize_code(value)
            elif key == "description":
                value = value or ""  # a missing description is an empty one, not NULL
            current[key] = value
        if old and current["code"] != old:
            for state in wf["states"]:
                if state["on_timeout_transition"] == old:
                    state["on_timeout_transition"] = current["code"]

    return _edit(code, change)


def delete_transition(code: str, transition_code: str) -> Workflow:
    """Delete a transition unless a state names it as its On Timeout Transition."""
    workflow = get_workflow(code)
    transition_code = normalize_code(transition_code)
    wf = workflow_to_dict(workflow)
    i = _index(wf["transitions"], transition_code, "transition")
    users = [s["code"] for s in wf["states"] if s["on_timeout_transition"] == transition_code]
    if users:
        raise ValidationFailed([RuleError(
            f"workflow.transitions[{i}]",
            f"transition {transition_code!r} is the On Timeout Transition of state(s) "
            f"{', '.join(users)}")])
    del wf["transitions"][i]
    return save_definition(workflow, wf)


def delete_workflow(code: str, actor: str) -> list[str]:
    """Delete a workflow with no active instances; return the integrations it was detached from."""
    workflow = get_workflow(code)
    active = active_instance_count(workflow)
    if active:
        raise Conflict(f"workflow {workflow.code!r} has {active} active instance(s); it can be "
                       "deleted once none are active", {"active_instances": active})
    code, workflow_id, definition = workflow.code, workflow.id, workflow_to_dict(workflow)
    detached = list(db.session.scalars(
        select(Integration.code).where(Integration.workflow_id == workflow_id)))
    db.session.execute(update(Integration).where(Integration.workflow_id == workflow_id)
                       .values(workflow_id=None))
    # A plain DELETE whose row count says whether this request is the one that deleted it:
    # of several deletes at once, one succeeds (and is audited) and the others find nothing.
    # States, transitions and finished instances go with it (ON DELETE CASCADE).
    deleted = affected(db.session.execute(delete(Workflow).where(Workflow.id == workflow_id)))
    if deleted != 1:
        db.session.rollback()
        raise NotFound(f"workflow {code!r} does not exist")
    audit.record("delete", "workflow", code,
                 {"detached_integrations": detached, "definition": definition}, who=actor)
    db.session.commit()
    return detached


def delete_version(code: str, number: int) -> None:
    """Delete an old version of a workflow (audited); Conflict while it is in use."""
    workflow = get_workflow(code)
    versions.delete_version(workflow, number)
    audit.record("delete", "workflow_version", f"{workflow.code} v{number}", {})
    db.session.commit()
