"""Integrations: the data flows whose records workflows track."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..engine import RuleError, check_code, normalize_code
from ..extensions import db
from ..models import Instance, InstanceMode, Integration, Workflow
from .errors import NotFound, ValidationFailed
from .registry import get_registry

BASE_FIELDS = ("code", "description", "workflow_code", "instance_mode", "enabled",
               "record_url_template")
URL_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
URL_NAMES = re.compile(r"record_key|run_id|vars\.[A-Za-z_]\w*|data\.[\w.]+")


def list_integrations(*, after: str | None = None, limit: int | None = None
                      ) -> list[Integration]:
    """Integrations by code (keyset: those after `after`, at most `limit`)."""
    query = select(Integration).order_by(Integration.code)
    if after is not None:
        query = query.where(Integration.code > after)
    if limit is not None:
        query = query.limit(limit)
    return list(db.session.scalars(query))


def get_integration(code: str) -> Integration:
    """Return the integration with this code (any case); raise NotFound otherwise."""
    integration = None if "\x00" in (code or "") else db.session.scalar(
        select(Integration).where(Integration.code == normalize_code(code)))
    if integration is None:
        raise NotFound(f"integration {normalize_code(code)!r} does not exist")
    return integration


def integration_to_dict(integration: Integration) -> dict[str, Any]:
    """The API shape: base fields plus plugin settings at the top level; secrets never shown."""
    out: dict[str, Any] = {
        "code": integration.code,
        "description": integration.description or "",
        "workflow_code": integration.workflow.code if integration.workflow else None,
        "instance_mode": integration.instance_mode,
        "enabled": integration.enabled,
        "record_url_template": integration.record_url_template or "",
    }
    settings = integration.settings or {}
    secrets_set = []
    for name, setting in get_registry().integration_settings.items():
        if setting.type == "secret":
            if settings.get(name):
                secrets_set.append(name)
        else:
            out[name] = settings.get(name, setting.default)
    out["secrets_set"] = secrets_set
    return out


def _check(fields: dict[str, Any], creating: bool) -> tuple[list[RuleError], Workflow | None]:
    errors: list[RuleError] = []
    settings = get_registry().integration_settings
    for key in fields:
        if key not in BASE_FIELDS and key not in settings:
            errors.append(RuleError(key, "unknown field"))
    if creating or "code" in fields:
        check_code(normalize_code(fields.get("code")), "code", errors)
    for key in ("description", "record_url_template"):
        if key in fields and not isinstance(fields[key], str):
            errors.append(RuleError(key, "must be a string"))
    # No database stores a NUL character (PostgreSQL refuses it): say so instead of failing.
    for key, value in fields.items():
        if isinstance(value, str) and "\x00" in value:
            errors.append(RuleError(key, "must not contain NUL characters"))
    if isinstance(fields.get("description"), str) and len(fields["description"]) > 100:
        errors.append(RuleError("description", "must be at most 100 characters"))
    if "enabled" in fields and not isinstance(fields["enabled"], bool):
        errors.append(RuleError("enabled", "must be true or false"))
    if "instance_mode" in fields and fields["instance_mode"] not in [m.value for m in InstanceMode]:
        errors.append(RuleError("instance_mode", "must be per_record or per_run"))
    template = fields.get("record_url_template")
    if isinstance(template, str) and len(template) > 500:
        errors.append(RuleError("record_url_template", "must be at most 500 characters"))
    if isinstance(template, str) and template:
        if not re.match(r"https?://", template):
            errors.append(RuleError("record_url_template", "must start with http:// or https://"))
        for name in URL_PLACEHOLDER.findall(template):
            if not URL_NAMES.fullmatch(name):
                errors.append(RuleError("record_url_template",
                                        f"unknown placeholder {{{name}}}; use {{record_key}}, "
                                        "{run_id}, {vars.<name>} or {data.<field>}"))
    workflow = None
    code = fields.get("workflow_code")
    if code not in (None, ""):
        if not isinstance(code, str):
            errors.append(RuleError("workflow_code", "must be a string"))
        elif "\x00" not in code:
            workflow = db.session.scalar(
                select(Workflow).where(Workflow.code == normalize_code(code)))
            if workflow is None:
                errors.append(RuleError("workflow_code",
                                        f"workflow {normalize_code(code)!r} does not exist"))
    for name, setting in settings.items():
        if name in fields:
            message = setting.check(fields[name])
            if message:
                errors.append(RuleError(name, message))
    return errors, workflow


def _apply(integration: Integration, fields: dict[str, Any], workflow: Workflow | None) -> None:
    for key in ("description", "instance_mode", "enabled", "record_url_template"):
        if key in fields:
            setattr(integration, key, fields[key])
    if "code" in fields:
        integration.code = normalize_code(fields["code"])
    if "workflow_code" in fields:
        integration.workflow = workflow
    registry = get_registry()
    settings = dict(integration.settings or {})
    for name, setting in registry.integration_settings.items():
        if name not in fields:
            continue
        value = fields[name]
        if setting.type == "secret" and value in (None, ""):
            continue  # write-only: an empty secret field keeps the stored one
        settings[name] = value
    integration.settings = settings


def create_integration(fields: dict[str, Any]) -> Integration:
    """Create an integration after checking every field."""
    errors, workflow = _check(fields, creating=True)
    code = normalize_code(fields.get("code"))
    if not errors and db.session.scalar(select(Integration.id).where(Integration.code == code)):
        errors.append(RuleError("code", f"integration {code!r} already exists"))
    if errors:
        raise ValidationFailed(errors)
    integration = Integration(code=code, description="", instance_mode="per_record",
                              enabled=True, record_url_template="", settings={})
    _apply(integration, fields, workflow)
    db.session.add(integration)
    try:
        db.session.commit()
    except IntegrityError:
        # Someone created the same code between our check and our insert.
        db.session.rollback()
        raise ValidationFailed([RuleError("code", f"integration {code!r} already exists")]
                               ) from None
    return integration


def update_integration(code: str, fields: dict[str, Any], *, clear: Iterable[str] = ()
                       ) -> Integration:
    """Change some fields of an integration and remove the secrets named in `clear`, at once.

    The code itself cannot change. Nothing is written unless every field passes.
    """
    integration = get_integration(code)
    if "code" in fields and normalize_code(fields["code"]) != integration.code:
        raise ValidationFailed([RuleError("code", "the code of an integration cannot change")])
    fields = {k: v for k, v in fields.items() if k != "code"}
    errors, workflow = _check(fields, creating=False)
    settings = get_registry().integration_settings
    clear = list(clear)
    for name in clear:
        if name not in settings or settings[name].type != "secret":
            errors.append(RuleError(name, "only secret settings can be cleared"))
    if errors:
        raise ValidationFailed(errors)
    _apply(integration, fields, workflow)
    if clear:
        integration.settings = {k: v for k, v in (integration.settings or {}).items()
                                if k not in clear}
    db.session.commit()
    return integration


def clear_secret(code: str, name: str) -> Integration:
    """Remove a stored secret setting (the form's 'clear' box)."""
    integration = get_integration(code)
    settings = dict(integration.settings or {})
    settings.pop(name, None)
    integration.settings = settings
    db.session.commit()
    return integration


def workflow_choices() -> list[tuple[str, str]]:
    """(code, label) of every workflow, for the Workflow Code drop-down (no instance counts)."""
    rows = db.session.execute(select(Workflow.code, Workflow.description)
                              .order_by(Workflow.code)).all()
    return [(code, f"{code} · {description}" if description else code)
            for code, description in rows]


@dataclass
class WorkflowSummary:
    """What the integration card shows about its attached workflow."""

    code: str
    description: str
    enabled: bool
    initial_state: str
    states: int
    final_states: int
    transitions: int
    active_instances: int


def attached_workflow(integration: Integration) -> WorkflowSummary | None:
    """A summary of the integration's workflow, with this integration's active instances."""
    workflow = integration.workflow
    if workflow is None:
        return None
    # Count over the non-final states so the (integration, state, ...) index answers it.
    open_states = [s.code for s in workflow.states if not s.is_final]
    active = db.session.scalar(
        select(func.count()).select_from(Instance).where(
            Instance.integration_id == integration.id, Instance.state.in_(open_states),
            Instance.workflow_id == workflow.id)) if open_states else 0
    return WorkflowSummary(
        code=workflow.code, description=workflow.description or "", enabled=workflow.enabled,
        initial_state=workflow.initial_state, states=len(workflow.states),
        final_states=sum(1 for s in workflow.states if s.is_final),
        transitions=len(workflow.transitions), active_instances=active or 0)
