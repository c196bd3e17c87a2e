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
from ..extensions import db
from ..inputs import InputError, parse_json
from ..models import Instance, State, Transition, Workflow, utcnow
from . import audit
from .errors import Conflict, NotFound, ValidationFailed
from .registry import get_registry

FORMAT = "wfapp.workflow/v1"
STATE_KEYS = ("code", "description", "is_initial", "is_final", "timeout_hours",
              "on_timeout_transition")
TRANSITION_KEYS = ("code", "description", "from_state", "to_state", "trigger_type", "enabled",
                   "priority", "trigger_config", "conditions", "capture")


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


def workflow_to_dict(workflow: Workflow) -> dict[str, Any]:
    """The `workflow` part of the export document, every key present, in a stable order."""
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
            {
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
            }
            for t in workflow.transitions
        ],
    }


def to_document(workflow: Workflow) -> dict[str, Any]:
    """The whole export document for a workflow."""
    return {"format": FORMAT, "workflow": workflow_to_dict(workflow)}


def export_document(code: str) -> dict[str, Any]:
    """Export the workflow called `code`; NotFound when there is none."""
    return to_document(get_workflow(code))


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
    errors = validate_workflow(wf, get_registry().trigger_types, limits=definition_limits())
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
                                   get_registry().trigger_types, limits=definition_limits())
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


def _in_use_errors(workflow: Workflow, wf: dict[str, Any]) -> list[RuleError]:
    """States that instances are in must survive a replacement."""
    kept = {s["code"] for s in wf["states"]}
    rows = db.session.execute(
        select(Instance.state, func.count())
        .where(Instance.workflow_id == workflow.id)
        .group_by(Instance.state)
    ).all()
    return [
        RuleError("workflow.states", f"state {state!r} has {count} instance(s) and cannot be "
                  "removed; move or delete them first")
        for state, count in rows if state not in kept
    ]


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
            setattr(row, key, item[key])
        row.position = position
    rows.sort(key=lambda r: r.position)


def save_definition(workflow: Workflow | None, wf: dict[str, Any]) -> Workflow:
    """Validate a definition (rules and instances in use) and write it in one transaction."""
    errors = validate_workflow(wf, get_registry().trigger_types, limits=definition_limits())
    if workflow is not None and workflow.id is not None:
        errors += _in_use_errors(workflow, wf)
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
        if before is None:
            audit.record("create", "workflow", wf["code"],
                         {"changes": [f"created with {len(wf['states'])} states and "
                                      f"{len(wf['transitions'])} transitions"]})
        else:
            changes = definition_changes(before, wf)
            if changes:
                audit.record("update", "workflow", wf["code"], {"changes": changes})
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
    return save_definition(existing, wf), existing is None


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
        return ImportPreview(wf["code"], False, [], normalized)
    changes = definition_changes(workflow_to_dict(existing), wf)
    return ImportPreview(wf["code"], True, changes, normalized)


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
