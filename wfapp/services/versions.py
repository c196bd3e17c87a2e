"""Workflow versions: every saved definition is an immutable, numbered export document.

Instances record the version they run on and keep following it; new instances start on the
pinned version or else the latest. The engine decides with the version's document, compiled
once per (workflow, version) and held per app. `enabled` is the one live switch: it is read from
the workflow row (disabling a workflow stops every version) and is not part of a version's
identity, so switching it makes no version.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select

from ..engine import CompiledWorkflow, compile_workflow
from ..extensions import db
from ..models import Instance, Workflow, WorkflowVersion, utcnow
from .errors import Conflict, NotFound

_lock = threading.Lock()
SUMMARY_LIMIT = 300


def _identity(document: dict[str, Any]) -> dict[str, Any]:
    """What makes two documents the same version: everything but the live `enabled` switch."""
    wf = dict(document["workflow"])
    wf.pop("enabled", None)
    return wf


def summarize(changes: list[str], created: bool) -> str:
    """A one-line summary of a version's changes for the versions list."""
    if created:
        text = changes[0] if changes else "created"
    elif not changes:
        text = "no visible change"
    else:
        text = "; ".join(changes[:3]) + (f"; … and {len(changes) - 3} more"
                                         if len(changes) > 3 else "")
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def record_version(workflow: Workflow, document: dict[str, Any], changes: list[str],
                   actor: str) -> int | None:
    """Add a version in the caller's transaction when the document changed; its number or None."""
    if workflow.latest_version:
        latest = db.session.scalar(select(WorkflowVersion.document).where(
            WorkflowVersion.workflow_id == workflow.id,
            WorkflowVersion.number == workflow.latest_version))
        if latest is not None and _identity(latest) == _identity(document):
            return None
    number = (workflow.latest_version or 0) + 1
    # The live switch is not part of a version, so it is no part of its summary either.
    changes = [c for c in changes if not c.startswith("enabled:")]
    # A concurrent save picks the same number; the unique constraint refuses the second one.
    db.session.add(WorkflowVersion(
        workflow_id=workflow.id, number=number, document=document, created_at=utcnow(),
        created_by=actor[:64], summary=summarize(changes, number == 1)))
    workflow.latest_version = number
    return number


def start_version(workflow: Workflow) -> int:
    """The version new instances start on: the pinned one, else the latest."""
    return workflow.pinned_version or workflow.latest_version


@dataclass
class VersionRow:
    """One line of the versions list."""

    number: int
    created_at: datetime
    created_by: str
    summary: str
    instances: int = 0
    active: int = 0
    labels: list[str] = field(default_factory=list)


def list_versions(workflow: Workflow) -> list[VersionRow]:
    """The workflow's versions, newest first, with how many instances each has."""
    rows = db.session.execute(
        select(WorkflowVersion.number, WorkflowVersion.created_at, WorkflowVersion.created_by,
               WorkflowVersion.summary)
        .where(WorkflowVersion.workflow_id == workflow.id)
        .order_by(WorkflowVersion.number.desc())).all()
    counts: dict[int, list[int]] = {}
    for number, is_active, count in db.session.execute(
            select(Instance.workflow_version, Instance.active, func.count())
            .where(Instance.workflow_id == workflow.id)
            .group_by(Instance.workflow_version, Instance.active)).all():
        entry = counts.setdefault(number, [0, 0])
        entry[0] += count
        if is_active:
            entry[1] += count
    out = []
    for number, created_at, created_by, summary in rows:
        total, active = counts.get(number, [0, 0])
        labels = []
        if number == workflow.latest_version:
            labels.append("latest")
        if number == workflow.pinned_version:
            labels.append("pinned")
        if number == start_version(workflow):
            labels.append("new instances")
        out.append(VersionRow(number, created_at, created_by, summary, total, active, labels))
    return out


def get_version(workflow: Workflow, number: int) -> WorkflowVersion:
    """One version of a workflow; NotFound when it has no such version."""
    version = db.session.scalar(select(WorkflowVersion).where(
        WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.number == number))
    if version is None:
        raise NotFound(f"workflow {workflow.code} has no version {number}")
    return version


def version_document(workflow: Workflow, number: int) -> dict[str, Any]:
    """A version's export document, carrying its number (`version`)."""
    document = dict(get_version(workflow, number).document)
    document["version"] = number
    return document


def instance_count(workflow: Workflow, number: int) -> int:
    """How many instances (active or finished) follow this version."""
    return db.session.scalar(select(func.count()).where(
        Instance.workflow_id == workflow.id, Instance.workflow_version == number)) or 0


def delete_version(workflow: Workflow, number: int) -> None:
    """Delete an old version; refused while instances follow it or new ones would start on it."""
    get_version(workflow, number)
    if number == workflow.latest_version:
        raise Conflict(f"version {number} is the latest version of {workflow.code}; it cannot "
                       "be deleted")
    if number == workflow.pinned_version:
        raise Conflict(f"new instances are pinned to version {number}; unpin it first")
    count = instance_count(workflow, number)
    if count:
        raise Conflict(f"version {number} still has {count} instance(s); migrate or delete "
                       "them first", {"instances": count})
    db.session.execute(delete(WorkflowVersion).where(
        WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.number == number))


def set_pinned(workflow: Workflow, number: int | None) -> None:
    """Pin new instances to version `number` (None: follow the latest); in the caller's change."""
    if number is not None:
        get_version(workflow, number)
    workflow.pinned_version = number
    # Workers look the start version up per event; this stamp is what tells pages it changed.
    workflow.updated_at = utcnow()


# --- the compiled-definition cache --------------------------------------------------------------


def _cache() -> dict[tuple[int, datetime, int, bool], CompiledWorkflow]:
    """Compiled definitions of this app, by (workflow id, its creation, version, enabled)."""
    store: dict[tuple[int, datetime, int, bool], CompiledWorkflow] = \
        current_app.extensions["wfapp"].setdefault("compiled_versions", {})
    return store


def compiled_workflow(workflow_id: int, version: int | None = None) -> CompiledWorkflow | None:
    """The compiled definition of a workflow version (default: the one new instances start on).

    Versions never change, so a compiled one stays valid; the key carries the workflow's
    creation time (a re-created workflow may get the same id) and the live `enabled` switch.
    None when the workflow or that version does not exist.
    """
    row = db.session.execute(
        select(*WORKFLOW_HEAD).where(Workflow.id == workflow_id)).first()
    if row is None:
        return None
    return compiled_from_head(workflow_id, row, version)


# What `compiled_from_head` needs of a workflow row, e.g. joined to the integrations of a batch.
WORKFLOW_HEAD = (Workflow.created_at, Workflow.enabled, Workflow.latest_version,
                 Workflow.pinned_version)


def compiled_from_head(workflow_id: int, row: Any, version: int | None = None
                       ) -> CompiledWorkflow | None:
    """`compiled_workflow` for a workflow whose WORKFLOW_HEAD columns the caller already read."""
    number = version or row.pinned_version or row.latest_version
    key = (workflow_id, row.created_at, number, bool(row.enabled))
    cache = _cache()
    found = cache.get(key)
    if found is not None:
        return found
    document = db.session.scalar(select(WorkflowVersion.document).where(
        WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.number == number))
    if document is None:
        return None
    wf = dict(document["workflow"], enabled=bool(row.enabled))
    compiled = replace(compile_workflow(wf), version=number)
    with _lock:
        cache[key] = compiled
    return compiled


# --- differences between two versions ----------------------------------------------------------


@dataclass
class RowDiff:
    """How one state or transition differs between two versions."""

    kind: str
    code: str
    change: str  # added | removed | changed
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)


@dataclass
class VersionDiff:
    """A readable diff of two versions: general fields, then per state and per transition."""

    old: int
    new: int
    general: list[tuple[str, Any, Any]] = field(default_factory=list)
    rows: list[RowDiff] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when the two versions define the same workflow."""
        return not self.general and not self.rows


def _rows(kind: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[RowDiff]:
    old_by = {r["code"]: r for r in old}
    new_by = {r["code"]: r for r in new}
    out = []
    for code, row in old_by.items():
        if code not in new_by:
            out.append(RowDiff(kind, code, "removed",
                               [(k, v, None) for k, v in row.items() if k != "code"]))
    for code, row in new_by.items():
        before = old_by.get(code)
        if before is None:
            out.append(RowDiff(kind, code, "added",
                               [(k, None, v) for k, v in row.items() if k != "code"]))
            continue
        changed = [(k, before.get(k), v) for k, v in row.items() if before.get(k) != v]
        changed += [(k, v, None) for k, v in before.items() if k not in row]
        if changed:
            out.append(RowDiff(kind, code, "changed", changed))
    return out


def diff_documents(old: dict[str, Any], new: dict[str, Any], old_number: int = 0,
                   new_number: int = 0) -> VersionDiff:
    """The readable diff of two export documents."""
    a, b = old["workflow"], new["workflow"]
    general = [(k, a.get(k), b.get(k)) for k in ("description", "initial_state")
               if a.get(k) != b.get(k)]
    rows = _rows("state", a.get("states") or [], b.get("states") or [])
    rows += _rows("transition", a.get("transitions") or [], b.get("transitions") or [])
    return VersionDiff(old_number, new_number, general, rows)


def diff_versions(workflow: Workflow, old: int, new: int) -> VersionDiff:
    """The readable diff between two versions of a workflow; NotFound for a missing one."""
    return diff_documents(get_version(workflow, old).document,
                          get_version(workflow, new).document, old, new)
