"""JSON API of the authoring side: workflows, integrations and trigger types."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from ..engine import RuleError, check_code, normalize_code
from ..models import Role
from ..security import actor_name, requires_role
from ..services import checks, definitions, integrations, workflows
from ..services.errors import ValidationFailed
from ..services.registry import get_registry
from . import bp
from .common import (
    bool_arg,
    check_types,
    cursor_arg,
    json_body,
    json_document,
    keyset_page,
    limit_arg,
    query_args,
)

PAGE_ARGS = ("limit", "cursor")


def _row(row: workflows.WorkflowRow) -> dict[str, Any]:
    return {"code": row.code, "description": row.description,
            "initial_state": row.initial_state, "enabled": row.enabled,
            "active_instances": row.active_instances}


@bp.get("/workflows")
def list_workflows() -> Response:
    """Workflows by code with their active instance counts; keyset pages by `cursor`."""
    query_args(PAGE_ARGS)
    limit = limit_arg()
    rows = workflows.list_workflows(after=cursor_arg(), limit=limit + 1)
    page, cursor = keyset_page(rows, limit, lambda r: r.code)
    return jsonify({"items": [_row(r) for r in page], "next": cursor})


@bp.post("/workflows/import")
@requires_role(Role.AUTHOR)
def import_workflow() -> tuple[Response, int]:
    """Import an export document; 409 when the code exists unless `?replace=true`."""
    query_args(("replace",))
    replace = bool_arg("replace") or False
    document = json_document()
    workflow, created = definitions.import_and_report(document, replace)
    return jsonify(definitions.to_document(workflow)), 201 if created else 200


@bp.get("/workflows/<code>/export")
def export_workflow(code: str) -> Response:
    """The workflow's export document; 404 when there is none."""
    query_args(())
    return jsonify(definitions.export_document(code))


@bp.post("/workflows/<code>/copy")
@requires_role(Role.AUTHOR)
def copy_workflow(code: str) -> tuple[Response, int]:
    """Copy a workflow under `new_code` (export + import); 409 when that code exists."""
    query_args(())
    data = json_body({"new_code"}, {"new_code"})
    check_types(data, {"new_code": (str,)})
    errors: list[RuleError] = []
    check_code(normalize_code(data["new_code"]), "new_code", errors)
    if errors:
        raise ValidationFailed(errors)
    workflow = definitions.copy_workflow(code, data["new_code"])
    return jsonify(definitions.to_document(workflow)), 201


@bp.patch("/workflows/<code>")
@requires_role(Role.AUTHOR)
def patch_workflow(code: str) -> Response:
    """Change `enabled` and/or `description`; answers the workflow's export."""
    query_args(())
    data = json_body({"enabled", "description"})
    check_types(data, {"enabled": (bool,), "description": (str,)})
    workflow = workflows.set_enabled(code, data.get("enabled"), data.get("description"))
    return jsonify(definitions.to_document(workflow))


@bp.delete("/workflows/<code>")
@requires_role(Role.AUTHOR)
def delete_workflow(code: str) -> Response:
    """Delete a workflow and its finished instances; 409 while it has active instances."""
    query_args(())
    detached = workflows.delete_workflow(code, actor_name())
    return jsonify({"deleted": normalize_code(code), "detached_integrations": detached})


@bp.get("/workflows/<code>/lint")
def lint_workflow(code: str) -> Response:
    """Lint the workflow: `errors` (the definition rules) and `warnings`, each with a path."""
    query_args(())
    return jsonify(checks.lint_code(code).as_dict())


@bp.post("/workflows/<code>/simulate")
def simulate_workflow(code: str) -> Response:
    """Run a scenario (record, steps) through the workflow with the workers' decisions.

    Writes nothing; each step answers state, fired, why_not and vars.
    """
    query_args(())
    return jsonify(checks.simulate_code(code, json_document()))


@bp.get("/integrations")
def list_integrations() -> Response:
    """Integrations by code; keyset pages by `cursor`."""
    query_args(PAGE_ARGS)
    limit = limit_arg()
    rows = integrations.list_integrations(after=cursor_arg(), limit=limit + 1)
    page, cursor = keyset_page(rows, limit, lambda i: i.code)
    return jsonify({"items": [integrations.integration_to_dict(i) for i in page],
                    "next": cursor})


def _integration_fields() -> dict[str, Any]:
    """The body of an integration write: base fields and plugin settings, nothing else."""
    allowed = {*integrations.BASE_FIELDS, "secrets", *get_registry().integration_settings}
    return json_body(allowed)


@bp.post("/integrations")
@requires_role(Role.AUTHOR)
def create_integration() -> tuple[Response, int]:
    """Create an integration (plugin settings as top-level fields; secrets write-only)."""
    query_args(())
    integration = integrations.create_integration(_integration_fields())
    return jsonify(integrations.integration_to_dict(integration)), 201


@bp.get("/integrations/<code>")
def get_integration(code: str) -> Response:
    """One integration; 404 when there is none."""
    query_args(())
    return jsonify(integrations.integration_to_dict(integrations.get_integration(code)))


@bp.patch("/integrations/<code>")
@requires_role(Role.AUTHOR)
def patch_integration(code: str) -> Response:
    """Change some fields of an integration (its code cannot change)."""
    query_args(())
    integration = integrations.update_integration(code, _integration_fields())
    return jsonify(integrations.integration_to_dict(integration))


@bp.get("/trigger-types")
def trigger_types() -> Response:
    """The registered trigger types and the config fields each declares."""
    query_args(())
    return jsonify({"items": [
        {"name": t.name, "label": t.label, "description": t.description, "manual": t.manual,
         "fields": [{"name": f.name, "label": f.label, "type": f.type, "required": f.required,
                     "default": f.default, "help": f.help,
                     "choices": [c for c, _ in f.choices]} for f in t.fields]}
        for t in get_registry().trigger_types.values()], "next": None})
