"""Integrations: the data flows whose records workflows track."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from ..engine import RuleError, check_code, normalize_code
from ..extensions import db
from ..models import Instance, InstanceMode, Integration, Workflow
from . import audit, config_cache, secrets
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


@dataclass(frozen=True)
class IntegrationRow:
    """An integration's fields as one query reads them (no ORM objects: for hot paths)."""

    id: int
    code: str
    description: str
    enabled: bool
    instance_mode: str
    settings: dict[str, Any]
    workflow_code: str | None
    config_version: int = 1


# Built once, on the tables (not the ORM classes): the cheapest statement SQLAlchemy runs.
_I, _W = Integration.__table__, Workflow.__table__
_ROW_BY_CODE = select(_I.c.id, _I.c.code, _I.c.description, _I.c.enabled, _I.c.instance_mode,
                      _I.c.settings, _W.c.code, _I.c.config_version).select_from(
    _I.outerjoin(_W, _W.c.id == _I.c.workflow_id)).where(_I.c.code == bindparam("code"))


def find_integration_row(code: str) -> IntegrationRow | None:
    """The integration with this code (any case) with its workflow's code, in one query; None
    when there is none. For webhook endpoints, which look one up per request."""
    if not isinstance(code, str) or "\x00" in code:
        return None
    # On the session's connection, at the Core level: the ORM's execute machinery costs more
    # CPU than the query itself (there is nothing to flush before a lookup by code).
    row = db.session.connection().execute(_ROW_BY_CODE, {"code": normalize_code(code)}).first()
    if row is None:
        return None
    return IntegrationRow(row[0], row[1], row[2] or "", bool(row[3]), row[4], row[5] or {},
                          row[6], row[7])


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
    for name, setting in get_registry().integration_settings.items():
        if setting.type != "secret":
            out[name] = settings.get(name, setting.default)
    out["secrets_set"] = secret_settings_set(integration)
    out["secret_names"] = secrets.names(integration.id, secrets.NAMED)
    return out


def secret_settings_set(integration: Integration) -> list[str]:
    """The names of the plugin secret settings that have a stored value."""
    stored = set(secrets.names(integration.id, secrets.SETTING))
    return [name for name, setting in get_registry().integration_settings.items()
            if setting.type == "secret" and name in stored]


def _check_named_secrets(value: Any, errors: list[RuleError]) -> None:
    """`secrets`: an object of secret names to values (a string sets, null removes)."""
    if not isinstance(value, dict):
        errors.append(RuleError("secrets", "must be an object of secret names to values"))
        return
    for name, secret in value.items():
        place = f"secrets.{name}"
        if not isinstance(name, str) or not secrets.SECRET_NAME_RE.fullmatch(name):
            errors.append(RuleError(place, "a secret name is 1-64 letters, digits and _, "
                                           "not starting with a digit"))
        elif secret is not None and not isinstance(secret, str):
            errors.append(RuleError(place, "must be a string (or null to remove it)"))
        elif isinstance(secret, str) and not secret:
            errors.append(RuleError(place, "must not be empty (null removes it)"))
        elif isinstance(secret, str) and len(secret) > secrets.MAX_SECRET_LENGTH:
            errors.append(RuleError(place, f"must be at most {secrets.MAX_SECRET_LENGTH} "
                                           "characters"))
        elif isinstance(secret, str) and "\x00" in secret:
            errors.append(RuleError(place, "must not contain NUL characters"))


def _check(fields: dict[str, Any], creating: bool, stored: dict[str, Any] | None = None
           ) -> tuple[list[RuleError], Workflow | None]:
    errors: list[RuleError] = []
    settings = get_registry().integration_settings
    for key in fields:
        if key not in BASE_FIELDS and key not in settings and key != "secrets":
            errors.append(RuleError(key, "unknown field"))
    if "secrets" in fields:
        _check_named_secrets(fields["secrets"], errors)
    if creating or "code" in fields:
        check_code(normalize_code(fields.get("code")), "code", errors)
    for key in ("description", "record_url_template"):
        if key in fields and not isinstance(fields[key], str):
            errors.append(RuleError(key, "must be a string"))
    # No database stores a NUL character (PostgreSQL refuses it): say so instead of failing.
    for key, value in fields.items():
        if isinstance(value, str) and "\x00" in value and key != "secrets":
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
        if URL_PLACEHOLDER.sub("", template).count("{") or \
                URL_PLACEHOLDER.sub("", template).count("}"):
            errors.append(RuleError("record_url_template",
                                    "has a { or } that does not belong to a {placeholder}"))
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
    typed_ok = True
    for name, setting in settings.items():
        if name in fields:
            message = setting.check(fields[name])
            if message:
                errors.append(RuleError(name, message))
                typed_ok = False
    if typed_ok:
        errors.extend(_plugin_setting_errors(fields, stored or {}))
    return errors, workflow


def _plugin_setting_errors(fields: dict[str, Any], stored: dict[str, Any]) -> list[RuleError]:
    """Each trigger type's own checks of the settings as they would be after this save."""
    settings = get_registry().integration_settings
    merged = {name: setting.default for name, setting in settings.items()
              if setting.type != "secret"}
    merged.update({k: v for k, v in stored.items() if k in settings})
    merged.update({k: v for k, v in fields.items() if k in settings})
    errors: list[RuleError] = []
    for trigger in get_registry().trigger_types.values():
        errors.extend(RuleError(name, message) for name, message in trigger.check_settings(
            merged, changed=frozenset(k for k in fields if k in settings)))
    return errors


def _apply(integration: Integration, fields: dict[str, Any], workflow: Workflow | None) -> None:
    config_cache.changed(integration.id)
    for key in ("description", "instance_mode", "enabled", "record_url_template"):
        if key in fields:
            setattr(integration, key, fields[key])
    if "code" in fields:
        integration.code = normalize_code(fields["code"])
    if "workflow_code" in fields:
        integration.workflow = workflow
    registry = get_registry()
    settings = dict(integration.settings or {})
    if integration.id is None:
        db.session.flush()  # the secrets below need the integration's id
    for name, setting in registry.integration_settings.items():
        if name not in fields:
            continue
        value = fields[name]
        if setting.type == "secret":
            if value not in (None, ""):  # write-only: an empty secret keeps the stored one
                secrets.put(integration.id, secrets.SETTING, name, value)
            continue
        settings[name] = value
    integration.settings = settings
    named = fields.get("secrets") or {}
    for name, value in named.items():
        if value is None:
            secrets.remove(integration.id, secrets.NAMED, [name])
        else:
            secrets.put(integration.id, secrets.NAMED, name, value)


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
    try:
        db.session.add(integration)
        _apply(integration, fields, workflow)
        audit.record("create", "integration", code,
                     {"changes": audit.field_changes({}, _audited(fields), _secret_names())})
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
    errors, workflow = _check(fields, creating=False, stored=integration.settings or {})
    settings = get_registry().integration_settings
    clear = list(clear)
    for name in clear:
        if name not in settings or settings[name].type != "secret":
            errors.append(RuleError(name, "only secret settings can be cleared"))
    if errors:
        raise ValidationFailed(errors)
    before = _audited(integration_to_dict(integration))
    _apply(integration, fields, workflow)
    secrets.remove(integration.id, secrets.SETTING, clear)
    after = {**before, **_audited(fields), **{name: None for name in clear}}
    changes = audit.field_changes(before, after, _secret_names())
    if changes:
        audit.record("update", "integration", integration.code, {"changes": changes})
    db.session.commit()
    return integration


def _secret_names() -> frozenset[str]:
    return frozenset(n for n, f in get_registry().integration_settings.items()
                     if f.type == "secret") | {"secrets"}


def _audited(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields as the audit log compares them: secrets as set/not set, named ones by name."""
    out = {k: v for k, v in fields.items() if k not in ("secrets", "secrets_set", "secret_names")}
    for name in fields.get("secrets_set") or []:
        out[name] = "set"
    for name in _secret_names():
        if out.get(name):
            out[name] = "set"  # a new value: the log says only that it changed
    for name, value in (fields.get("secrets") or {}).items():
        out[f"secret.{name}"] = None if value is None else "set"
    for name in fields.get("secret_names") or []:
        out[f"secret.{name}"] = "set"
    return out


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
