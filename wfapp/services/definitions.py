"""Workflow definitions as documents: export, validate, import, copy (format wfapp.workflow/v1)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

from flask import current_app
from jsonschema import Draft202012Validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..engine import DEFAULT_LIMITS, Limits, RuleError, normalize_code, validate_workflow
from ..engine.simulate import check_saved_cases
from ..extensions import db
from ..inputs import InputError, parse_json
from ..models import Instance, State, Transition, Workflow, utcnow
from . import audit, versions
from .errors import Conflict, NotFound, ValidationFailed
from .registry import get_registry

FORMAT = "wfapp.workflow/v1"
STATE_KEYS = ("code", "description", "is_initial", "is_final", "timeout_hours",
              "on_timeout_transition")
TRANSITION_KEYS = ("code", "description", "from_state", "to_state", "trigger_type", "enabled",
                   "priority", "trigger_config", "conditions", "capture", "actions")


@cache
def workflow_schema() -> dict[str, Any]:
    """The JSON Schema of the export format, shipped in the package."""
    text = resources.files("wfapp").joinpath("schemas/workflow-v1.schema.json").read_text()
    return json.loads(text)


# --- export -------------------------------------------------------------------------------------


def _number(value: float | None) -> int | float | None:
    """Hours as written by people: 24 rather than 24.0."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else float(value)


def _with_actions(row: dict[str, Any], actions: Any) -> dict[str, Any]:
    """A transition's export row, with `actions` only when it has some (older files stay alike)."""
    if actions:
        row["actions"] = [_action(a) for a in actions]
    return row


def _action(action: Any) -> dict[str, Any]:
    """One action as exported: {"id"?, "type", "config"}."""
    out: dict[str, Any] = {}
    if action.get("id"):
        out["id"] = action["id"]
    out["type"] = action.get("type")
    out["config"] = dict(action.get("config") or {})
    return out


def workflow_to_dict(workflow: Workflow) -> dict[str, Any]:
    """The `workflow` part of the export document, every key present, in a stable order.

    A transition's `actions` appear only when it has some, so a workflow without actions
    exports exactly as it did before actions existed.
    """
    return {
        "code": workflow.code,
        "description": workflow.description or "",
        "initial_state": workflow.initial_state,
        "enabled": bool(workflow.enabled),
        "states": [
            {
                "code": s.code,
                "description": s.description or "",
                "is_initial": bool(s.is_initial),
                "is_final": bool(s.is_final),
                "timeout_hours": _number(s.timeout_hours),
                "on_timeout_transition": s.on_timeout_transition or None,
            }
            for s in workflow.states
        ],
        "transitions": [
            _with_actions({
                "code": t.code,
                "description": t.description or "",
                "from_state": t.from_state,
                "to_state": t.to_state,
                "trigger_type": t.trigger_type,
                "enabled": bool(t.enabled),
                "priority": t.priority,
                "trigger_config": dict(t.trigger_config or {}),
                "conditions": [dict(c) for c in t.conditions or []],
                "capture": dict(t.capture or {}),
            }, t.actions)
            for t in workflow.transitions
        ],
    }


def to_document(workflow: Workflow) -> dict[str, Any]:
    """The whole export document for a workflow (`scenarios` only when it has saved ones)."""
    document: dict[str, Any] = {"format": FORMAT, "workflow": workflow_to_dict(workflow)}
    if workflow.scenarios:
        document["scenarios"] = [dict(s) for s in workflow.scenarios]
    return document


def export_document(code: str) -> dict[str, Any]:
    """Export the workflow called `code`; NotFound when there is none."""
    return to_document(get_workflow(code))


def export_version(code: str, number: int | None = None) -> dict[str, Any]:
    """Export a version of the workflow (default: the latest), carrying its number."""
    workflow = get_workflow(code)
    if number is None or number == workflow.latest_version:
        document = to_document(workflow)
        document["version"] = workflow.latest_version
        return document
    return versions.version_document(workflow, number)


def dumps(document: dict[str, Any]) -> str:
    """Serialize a document the way files are written (stable, readable)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def get_workflow(code: str) -> Workflow:
    """Return the workflow with this code (any case); raise NotFound otherwise."""
    workflow = db.session.scalar(select(Workflow).where(Workflow.code == normalize_code(code)))
    if workflow is None:
        raise NotFound(f"workflow {normalize_code(code)!r} does not exist")
    return workflow


# --- validation ---------------------------------------------------------------------------------


def _place(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _schema_errors(document: Any) -> list[RuleError]:
    validator = Draft202012Validator(workflow_schema())
    errors = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path))):
        place = _place(list(error.absolute_path))
        if error.validator == "required":
            missing = error.message.split("'")[1]
            errors.append(RuleError(_place([*error.absolute_path, missing]), "is required"))
        elif error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - allowed):
                errors.append(RuleError(_place([*error.absolute_path, extra]), "unknown field"))
        elif error.validator == "type":
            wanted = error.validator_value
            wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
            errors.append(RuleError(place or "document", f"must be of type {wanted}"))
        elif error.validator == "const":
            errors.append(RuleError(place, f"must be {error.validator_value!r}"))
        else:
            errors.append(RuleError(place or "document", error.message))
    return errors


def schema_errors(document: Any) -> list[RuleError]:
    """What the shipped JSON Schema finds wrong in a document, each with its place."""
    return _schema_errors(document)


def normalize(wf: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and upper-case codes, giving the shape export produces."""
    states = []
    for s in wf.get("states") or []:
        states.append({
            "code": normalize_code(s.get("code")),
            "description": s.get("description") or "",
            "is_initial": bool(s.get("is_initial", False)),
            "is_final": bool(s.get("is_final", False)),
            "timeout_hours": s.get("timeout_hours"),
            "on_timeout_transition": normalize_code(s.get("on_timeout_transition")) or None,
        })
    transitions = []
    for t in wf.get("transitions") or []:
        transitions.append({
            "code": normalize_code(t.get("code")),
            "description": t.get("description") or "",
            "from_state": normalize_code(t.get("from_state")),
            "to_state": normalize_code(t.get("to_state")),
            "trigger_type": t.get("trigger_type"),
            "enabled": bool(t.get("enabled", True)),
            "priority": t.get("priority", 0),
            "trigger_config": dict(t.get("trigger_config") or {}),
            "conditions": [dict(c) for c in t.get("conditions") or []],
            "capture": dict(t.get("capture") or {}),
            "actions": [_action(a) if isinstance(a, dict) else a
                        for a in t.get("actions") or []],
        })
    return {
        "code": normalize_code(wf.get("code")),
        "description": wf.get("description") or "",
        "initial_state": normalize_code(wf.get("initial_state")),
        "enabled": bool(wf.get("enabled", True)),
        "states": states,
        "transitions": transitions,
    }


def check_document(document: Any) -> dict[str, Any]:
    """Validate a whole document (schema, then every rule); return its normalized workflow."""
    errors = _schema_errors(document)
    if errors:
        raise ValidationFailed(errors + _rule_errors_elsewhere(document, errors))
    wf = normalize(document["workflow"])
    errors = validate_workflow(wf, get_registry().trigger_types, limits=definition_limits(),
                               action_types=get_registry().action_types)
    if "scenarios" in document:
        errors += check_saved_cases(document["scenarios"], get_registry().trigger_types)[1]
    if errors:
        raise ValidationFailed(errors)
    return wf


def _related(a: str, b: str) -> bool:
    """Whether one place contains the other (`workflow.states` and `workflow.states[1].code`)."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return short in ("document", "workflow") or long.startswith((short + ".", short + "["))


def _rule_errors_elsewhere(document: Any, found: list[RuleError]) -> list[RuleError]:
    """Rule errors in places the schema did not complain about, so one answer lists both."""
    try:
        errors = validate_workflow(normalize(document["workflow"]),
                                   get_registry().trigger_types, limits=definition_limits(),
                                   action_types=get_registry().action_types)
    except (TypeError, AttributeError, KeyError, ValueError):
        return []  # the shape is too broken for the rules; the schema errors say why
    return [e for e in errors if not any(_related(e.path, f.path) for f in found)]


def definition_limits() -> Limits:
    """The definition size limits: the defaults, with DEFINITION_LIMITS from the config."""
    configured = current_app.config.get("DEFINITION_LIMITS") or {}
    known = {k: int(v) for k, v in configured.items() if k in Limits.__dataclass_fields__}
    return replace(DEFAULT_LIMITS, **known)


def parse_file(content: bytes | str) -> Any:
    """Parse an uploaded workflow file through the input boundary; errors name the place."""
    try:
        return parse_json(content)
    except InputError as error:
        place = "file" if error.path == "body" else f"file: {error.path}"
        raise ValidationFailed([RuleError(place, error.message)]) from None


# --- writing ------------------------------------------------------------------------------------


def removed_state_counts(workflow: Workflow, wf: dict[str, Any]) -> dict[str, int]:
    """Active instances per state that `wf` no longer has (they stay on their version)."""
    kept = {s["code"] for s in wf["states"]}
    rows = db.session.execute(
        select(Instance.state, func.count())
        .where(Instance.workflow_id == workflow.id, Instance.active.is_(True))
        .group_by(Instance.state)
    ).all()
    return {state: count for state, count in rows if state not in kept}


def write_definition(workflow: Workflow, wf: dict[str, Any]) -> None:
    """Make `workflow` match a validated definition: update rows in place, add, remove."""
    workflow.code = wf["code"]
    workflow.description = wf["description"]
    workflow.initial_state = wf["initial_state"]
    workflow.enabled = wf["enabled"]
    # Workers recompile a definition when this stamp changes, even if only a child row did.
    workflow.updated_at = utcnow()
    _sync(workflow, workflow.states, wf["states"], State, STATE_KEYS)
    _sync(workflow, workflow.transitions, wf["transitions"], Transition, TRANSITION_KEYS)


def _sync(workflow: Workflow, rows: list[Any], wanted: list[dict[str, Any]], model: type,
          keys: tuple[str, ...]) -> None:
    existing = {row.code: row for row in rows}
    wanted_codes = {item["code"] for item in wanted}
    removed = [row for code, row in existing.items() if code not in wanted_codes]
    for row in removed:
        rows.remove(row)
        db.session.delete(row)
    if removed:
        # Deletes must reach the database before inserts that may reuse a code.
        db.session.flush()
    for position, item in enumerate(wanted):
        row = existing.get(item["code"])
        if row is None:
            row = model(workflow=workflow)
            rows.append(row)
        for key in keys:
            # Definitions built before actions existed (and exports of transitions without
            # any) carry no `actions` key.
            setattr(row, key, list(item.get(key) or []) if key == "actions" else item[key])
        row.position = position
    rows.sort(key=lambda r: r.position)


def save_definition(workflow: Workflow | None, wf: dict[str, Any],
                    scenarios: list[dict[str, Any]] | None = None) -> Workflow:
    """Validate a definition and write it, with a new version when it changed, in one transaction.

    `scenarios` (already checked) replaces the saved scenarios; None keeps them. Instances keep
    following the version they run on, so a definition that drops a state some of them are in
    is accepted: they stay where they are until migrated.
    """
    errors = validate_workflow(wf, get_registry().trigger_types, limits=definition_limits(),
                               action_types=get_registry().action_types)
    if errors:
        db.session.rollback()
        raise ValidationFailed(errors)
    creating = workflow is None
    before = None if workflow is None else workflow_to_dict(workflow)
    if workflow is None:
        workflow = Workflow()
        db.session.add(workflow)
    try:
        write_definition(workflow, wf)
        scenario_change = scenarios is not None and scenarios != (workflow.scenarios or [])
        if scenarios is not None:
            workflow.scenarios = [dict(s) for s in scenarios]
        db.session.flush()
        # The version is made from the rows as stored (the in-memory lists of a new workflow
        # can hold a row twice: the relationship's backref appended it already).
        db.session.expire(workflow, ["states", "transitions"])
        if before is None:
            changes = [f"created with {len(wf['states'])} states and "
                       f"{len(wf['transitions'])} transitions"]
        else:
            changes = definition_changes(before, wf)
            if scenario_change:
                changes.append(f"saved scenarios replaced ({len(scenarios or [])} now)")
        number = versions.record_version(workflow, to_document(workflow), changes,
                                         audit.actor())
        if changes:
            details: dict[str, Any] = {"changes": changes}
            if number is not None:
                details["version"] = number
            audit.record("create" if before is None else "update", "workflow", wf["code"],
                         details)
        db.session.commit()
    except IntegrityError:
        # Another request created this code (or rows of it) between our check and our write.
        db.session.rollback()
        if creating:
            raise Conflict(f"workflow {wf['code']!r} already exists; import with replace to "
                           "overwrite it", {"code": wf["code"]}) from None
        raise Conflict(f"workflow {wf['code']!r} was changed by someone else at the same "
                       "time; load it again and repeat your change") from None
    return workflow


def import_document(document: Any, replace: bool = False) -> Workflow:
    """Import a workflow document; Conflict when its code exists and `replace` is false."""
    return import_and_report(document, replace)[0]


def import_and_report(document: Any, replace: bool = False) -> tuple[Workflow, bool]:
    """Import a workflow document; return it and whether it was created (not replaced)."""
    wf = check_document(document)
    existing = db.session.scalar(select(Workflow).where(Workflow.code == wf["code"]))
    if existing is not None and not replace:
        raise Conflict(f"workflow {wf['code']!r} already exists; import with replace to "
                       "overwrite it", {"code": wf["code"]})
    scenarios = document.get("scenarios") if isinstance(document, dict) else None
    return save_definition(existing, wf, scenarios), existing is None


def copy_workflow(code: str, new_code: str) -> Workflow:
    """Copy a workflow's whole definition under a new code (export + import)."""
    document = export_document(code)
    document["workflow"]["code"] = new_code
    try:
        return import_document(document)
    except Conflict as error:
        raise Conflict(f"workflow {normalize_code(new_code)!r} already exists; choose another "
                       "code for the copy", error.details) from None


# --- import preview -----------------------------------------------------------------------------


@dataclass
class ImportPreview:
    """What importing a document would do, shown before anything is written."""

    code: str
    exists: bool
    changes: list[str] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)
    # Active instances per state the document removes (or renames): they stay on `version`.
    stranded: dict[str, int] = field(default_factory=dict)
    version: int = 0


def _rows_diff(kind: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    old_by = {r["code"]: r for r in old}
    new_by = {r["code"]: r for r in new}
    changes = [f"{kind} {c} added" for c in new_by if c not in old_by]
    changes += [f"{kind} {c} removed" for c in old_by if c not in new_by]
    for c, row in new_by.items():
        before = old_by.get(c)
        if before is None:
            continue
        for key, value in row.items():
            if before.get(key) != value:
                changes.append(f"{kind} {c}: {key} {before.get(key)!r} → {value!r}")
    return changes


def preview_import(document: Any) -> ImportPreview:
    """Validate a document and list how it differs from the stored workflow of the same code."""
    wf = check_document(document)
    existing = db.session.scalar(select(Workflow).where(Workflow.code == wf["code"]))
    normalized = {"format": FORMAT, "workflow": wf}
    if existing is None:
        if "scenarios" in document:
            normalized["scenarios"] = document["scenarios"]
        return ImportPreview(wf["code"], False, [], normalized)
    changes = definition_changes(workflow_to_dict(existing), wf)
    if "scenarios" in document:
        normalized["scenarios"] = document["scenarios"]
        if document["scenarios"] != (existing.scenarios or []):
            changes.append(f"saved scenarios replaced ({len(document['scenarios'])} in the file)")
    return ImportPreview(wf["code"], True, changes, normalized,
                         removed_state_counts(existing, wf), existing.latest_version)


def definition_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How two definitions of one workflow differ, line by line (import preview, audit log)."""
    changes = [f"{key}: {old[key]!r} → {new[key]!r}"
               for key in ("description", "initial_state", "enabled") if old[key] != new[key]]
    changes += _rows_diff("state", old["states"], new["states"])
    changes += _rows_diff("transition", old["transitions"], new["transitions"])
    if [s["code"] for s in old["states"]] != [s["code"] for s in new["states"]] and not any(
            "added" in c or "removed" in c for c in changes if c.startswith("state")):
        changes.append("states reordered")
    return changes
