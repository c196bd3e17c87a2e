"""JSON API of the authoring side: workflows and integrations."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..models import Role
from ..security import actor_name, requires_role
from ..services import definitions, integrations, workflows
from ..services.errors import ValidationFailed
from ..services.registry import get_registry
from . import bp
from .common import json_body, json_document, limit_arg, page_of


def _row(row: workflows.WorkflowRow) -> dict[str, Any]:
    return {"code": row.code, "description": row.description,
            "initial_state": row.initial_state, "enabled": row.enabled,
            "active_instances": row.active_instances}


@bp.get("/workflows")
def list_workflows() -> Response:
    """Workflows by code, with their active instance counts."""
    items, cursor = page_of(workflows.list_workflows(), lambda r: r.code, limit_arg(),
                            request.args.get("cursor") or None)
    return jsonify({"items": [_row(r) for r in items], "next": cursor})


@bp.post("/workflows/import")
@requires_role(Role.AUTHOR)
def import_workflow() -> tuple[Response, int]:
    """Import an export document; 409 when the code exists unless `?replace=true`."""
    replace = request.args.get("replace", "false").lower()
    if replace not in ("true", "false", "1", "0"):
        raise ValidationFailed([RuleError("replace", "must be true or false")])
    document = json_document()
    before = {r.code for r in workflows.list_workflows()}
    workflow = definitions.import_document(document, replace=replace in ("true", "1"))
    return jsonify(definitions.to_document(workflow)), 200 if workflow.code in before else 201


@bp.get("/workflows/<code>/export")
def export_workflow(code: str) -> Response:
    """The workflow's export document."""
    return jsonify(definitions.export_document(code))


@bp.post("/workflows/<code>/copy")
@requires_role(Role.AUTHOR)
def copy_workflow(code: str) -> tuple[Response, int]:
    """Copy a workflow under `new_code`."""
    data = json_body({"new_code"}, {"new_code"})
    if not isinstance(data["new_code"], str):
        raise ValidationFailed([RuleError("new_code", "must be a string")])
    workflow = definitions.copy_workflow(code, data["new_code"])
    return jsonify(definitions.to_document(workflow)), 201


@bp.patch("/workflows/<code>")
@requires_role(Role.AUTHOR)
def patch_workflow(code: str) -> Response:
    """Change `enabled` and/or `description`."""
    data = json_body({"enabled", "description"})
    errors = []
    if "enabled" in data and not isinstance(data["enabled"], bool):
        errors.append(RuleError("enabled", "must be true or false"))
    if "description" in data and not isinstance(data["description"], str):
        errors.append(RuleError("description", "must be a string"))
    if errors:
        raise ValidationFailed(errors)
    workflow = workflows.set_enabled(code, data.get("enabled"), data.get("description"))
    return jsonify(definitions.to_document(workflow))


@bp.delete("/workflows/<code>")
@requires_role(Role.AUTHOR)
def delete_workflow(code: str) -> Response:
    """Delete a workflow; 409 while it has active instances."""
    detached = workflows.delete_workflow(code, actor_name())
    return jsonify({"deleted": code.strip().upper(), "detached_integrations": detached})


@bp.get("/integrations")
def list_integrations() -> Response:
    """Integrations by code."""
    items, cursor = page_of(integrations.list_integrations(), lambda i: i.code, limit_arg(),
                            request.args.get("cursor") or None)
    return jsonify({"items": [integrations.integration_to_dict(i) for i in items],
                    "next": cursor})


def _integration_fields() -> dict[str, Any]:
    allowed = set(integrations.BASE_FIELDS) | set(get_registry().integration_settings)
    return json_body(allowed)


@bp.post("/integrations")
@requires_role(Role.AUTHOR)
def create_integration() -> tuple[Response, int]:
    """Create an integration (plugin settings as top-level fields)."""
    integration = integrations.create_integration(_integration_fields())
    return jsonify(integrations.integration_to_dict(integration)), 201


@bp.get("/integrations/<code>")
def get_integration(code: str) -> Response:
    """One integration."""
    return jsonify(integrations.integration_to_dict(integrations.get_integration(code)))


@bp.patch("/integrations/<code>")
@requires_role(Role.AUTHOR)
def patch_integration(code: str) -> Response:
    """Change some fields of an integration."""
    integration = integrations.update_integration(code, _integration_fields())
    return jsonify(integrations.integration_to_dict(integration))


@bp.get("/trigger-types")
def trigger_types() -> Response:
    """The registered trigger types and the config fields each declares."""
    return jsonify({"items": [
        {"name": t.name, "label": t.label, "description": t.description, "manual": t.manual,
         "fields": [{"name": f.name, "label": f.label, "type": f.type, "required": f.required,
                     "default": f.default, "help": f.help,
                     "choices": [c for c, _ in f.choices]} for f in t.fields]}
        for t in get_registry().trigger_types.values()], "next": None})
