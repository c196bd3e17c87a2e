"""Integrations: the data flows whose records workflows track."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from ..engine import RuleError, check_code, normalize_code
from ..extensions import db
from ..models import InstanceMode, Integration, Workflow
from .errors import NotFound, ValidationFailed
from .registry import get_registry

BASE_FIELDS = ("code", "description", "workflow_code", "instance_mode", "enabled",
               "record_url_template")
URL_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
URL_NAMES = re.compile(r"record_key|run_id|vars\.[A-Za-z_]\w*|data\.[\w.]+")


def list_integrations() -> list[Integration]:
    """All integrations by code."""
    return list(db.session.scalars(select(Integration).order_by(Integration.code)))


def get_integration(code: str) -> Integration:
    """Return the integration with this code (any case); raise NotFound otherwise."""
    integration = db.session.scalar(
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
    if isinstance(fields.get("description"), str) and len(fields["description"]) > 100:
        errors.append(RuleError("description", "must be at most 100 characters"))
    if "enabled" in fields and not isinstance(fields["enabled"], bool):
        errors.append(RuleError("enabled", "must be true or false"))
    if "instance_mode" in fields and fields["instance_mode"] not in [m.value for m in InstanceMode]:
        errors.append(RuleError("instance_mode", "must be per_record or per_run"))
    template = fields.get("record_url_template")
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
        else:
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
    db.session.commit()
    return integration


def update_integration(code: str, fields: dict[str, Any]) -> Integration:
    """Change some fields of an integration; the code itself cannot change."""
    integration = get_integration(code)
    if "code" in fields and normalize_code(fields["code"]) != integration.code:
        raise ValidationFailed([RuleError("code", "the code of an integration cannot change")])
    fields = {k: v for k, v in fields.items() if k != "code"}
    errors, workflow = _check(fields, creating=False)
    if errors:
        raise ValidationFailed(errors)
    _apply(integration, fields, workflow)
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
