"""JSON API of the running engine: runs, instances and events."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..models import Event, HistoryEntry, Instance, Role, Run
from ..security import actor_name, requires_role
from ..services import audit as audit_service
from ..services import events as event_service
from ..services import instance_list
from ..services import instances as instance_service
from ..services.errors import ValidationFailed
from ..services.instance_list import check_vars
from ..services.integrations import get_integration
from ..services.runs import get_run, run_progress, start_run
from . import bp
from .common import bool_arg, id_arg, iso, json_body, limit_arg, query_args


def run_to_dict(run: Run) -> dict[str, Any]:
    """A run as the API shows it."""
    return {"run_id": run.id, "integration": run.integration.code, "direction": run.direction,
            "status": run.status, "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at), "total": run.total,
            "succeeded": run.succeeded, "failed": run.failed, "actor": run.actor,
            "events": run_progress(run)}


def instance_to_dict(instance: Instance, history: list[HistoryEntry] | None = None
                     ) -> dict[str, Any]:
    """An instance as the API shows it (with its history when given)."""
    out = {"id": instance.id, "workflow": instance.workflow.code,
           "integration": instance.integration.code, "record_key": instance.record_key,
           "run_id": instance.run_id, "state": instance.state, "active": instance.active,
           "entered_state_at": iso(instance.entered_state_at),
           "timeout_due_at": iso(instance.timeout_due_at), "data": instance.data or {},
           "vars": instance.vars or {}, "last_trigger": instance.last_trigger,
           "last_transition": instance.last_transition, "version": instance.version,
           "workflow_version": instance.workflow_version,
           "created_at": iso(instance.created_at),
           "completed_at": iso(instance.completed_at)}
    if history is not None:
        out["history"] = [{"transition": h.transition, "from_state": h.from_state,
                           "to_state": h.to_state, "trigger_type": h.trigger_type,
                           "event_id": h.event_id, "actor": h.actor, "notes": h.notes,
                           "at": iso(h.at)} for h in history]
    return out


def event_to_dict(event: Event) -> dict[str, Any]:
    """An event as the API shows it."""
    return {"id": event.id, "integration": event.integration.code, "source": event.source,
            "type": event.type, "record_key": event.record_key, "run_id": event.run_id,
            "payload": event.payload, "dedupe_key": event.dedupe_key,
            "received_at": iso(event.received_at), "status": event.status,
            "result": event.result, "instance_id": event.instance_id,
            "processed_at": iso(event.processed_at)}


@bp.post("/integrations/<code>/runs")
@requires_role(Role.OPERATOR)
def create_run(code: str) -> tuple[Response, int]:
    """Run an import or export of records; answers the run id."""
    data = json_body({"direction", "records"}, {"direction", "records"})
    run = start_run(get_integration(code), data["direction"], data["records"], actor_name())
    return jsonify({"run_id": run.id, **run_to_dict(run)}), 201


@bp.get("/runs/<int:run_id>")
def show_run(run_id: int) -> Response:
    """One run with the progress of its events."""
    return jsonify(run_to_dict(get_run(run_id)))


def instance_filters_from_args() -> instance_service.InstanceFilters:
    """The instances filters from the query string, `var.<name>=<value>` included."""
    variables = {key[4:]: value for key, value in request.args.items() if key.startswith("var.")}
    return instance_service.InstanceFilters(
        workflow=request.args.get("workflow") or None,
        integration=request.args.get("integration") or None,
        state=request.args.get("state") or None, active=bool_arg("active"),
        record_key=request.args.get("record_key") or None, run_id=id_arg("run_id"),
        record_key_prefix=request.args.get("record_key_prefix") or None,
        vars=check_vars(variables))


@bp.get("/instances")
def list_instances() -> Response:
    """Instances by the page's filters and sort; keyset pages both ways and a bounded total."""
    query_args(("workflow", "integration", "state", "active", "record_key", "run_id", "limit",
                "cursor", "sort", "record_key_prefix",
                *(k for k in request.args if k.startswith("var."))))
    filters = instance_filters_from_args()
    page = instance_list.list_page(filters, limit_arg(), request.args.get("cursor") or None,
                                   request.args.get("sort") or None)
    total, more = instance_list.count(filters)
    return jsonify({"items": [instance_to_dict(r.instance) for r in page.rows],
                    "next": page.next, "previous": page.previous,
                    "total": total, "total_is_lower_bound": more})


@bp.get("/instances/<int:instance_id>")
def show_instance(instance_id: int) -> Response:
    """One instance with its full history."""
    instance = instance_service.get_instance(instance_id)
    return jsonify(instance_to_dict(instance, instance_service.history(instance_id)))


@bp.post("/instances/<int:instance_id>/fire")
@requires_role(Role.OPERATOR)
def fire(instance_id: int) -> Response:
    """Fire a Manual transition."""
    data = json_body({"transition", "comment"}, {"transition"})
    if not isinstance(data["transition"], str):
        raise ValidationFailed([RuleError("transition", "must be a string")])
    if not isinstance(data.get("comment", ""), str):
        raise ValidationFailed([RuleError("comment", "must be a string")])
    instance = instance_service.fire_manual(instance_id, data["transition"],
                                            data.get("comment", ""), actor_name())
    return jsonify(instance_to_dict(instance, instance_service.history(instance_id)))


@bp.post("/instances/<int:instance_id>/reset")
@requires_role(Role.OPERATOR)
def reset(instance_id: int) -> Response:
    """Reset to State, with a note."""
    data = json_body({"state", "note"}, {"state", "note"})
    for key in ("state", "note"):
        if not isinstance(data[key], str):
            raise ValidationFailed([RuleError(key, "must be a string")])
    instance = instance_service.reset_instance(instance_id, data["state"], data["note"],
                                               actor_name())
    return jsonify(instance_to_dict(instance, instance_service.history(instance_id)))


@bp.delete("/instances/<int:instance_id>")
@requires_role(Role.OPERATOR)
def delete(instance_id: int) -> tuple[str, int]:
    """Delete Instance (audited; nothing fires)."""
    instance_service.delete_instance(instance_id, actor_name())
    return "", 204


@bp.get("/events")
def list_events() -> Response:
    """Stored events, newest first; filters integration, status, source, run_id, instance_id.

    `cursor` continues below an id (the next page), `before` above one (the previous page).
    """
    query_args(("integration", "status", "source", "run_id", "instance_id", "limit", "cursor",
                "before"))
    filters = event_service.EventFilters(
        integration=request.args.get("integration") or None,
        status=request.args.get("status") or None,
        source=request.args.get("source") or None, run_id=id_arg("run_id"),
        instance_id=id_arg("instance_id"))
    rows, cursor, previous = event_service.list_events_page(
        filters, limit_arg(), id_arg("cursor"), id_arg("before"))
    total, more = event_service.count_events(filters)
    return jsonify({"items": [event_to_dict(e) for e in rows],
                    "next": str(cursor) if cursor is not None else None,
                    "previous": str(previous) if previous is not None else None,
                    "total": total, "total_is_lower_bound": more})


@bp.post("/events/<int:event_id>/replay")
@requires_role(Role.OPERATOR)
def replay(event_id: int) -> Response:
    """Queue a skipped or failed event again."""
    return jsonify(event_to_dict(event_service.replay(event_id)))


@bp.get("/audit")
@requires_role(Role.ADMIN)
def audit_log() -> Response:
    """The audit log, newest first; filters `actor`, `action`, `object_type`, `object_key`."""
    query_args(("actor", "action", "object_type", "object_key", "limit", "cursor"))
    filters = audit_service.AuditFilters(
        actor=request.args.get("actor") or None, action=request.args.get("action") or None,
        object_type=request.args.get("object_type") or None,
        object_key=request.args.get("object_key") or None)
    rows, cursor = audit_service.list_entries(filters, limit_arg(), id_arg("cursor"))
    return jsonify({"items": [{"id": r.id, "at": iso(r.at), "actor": r.actor,
                               "action": r.action, "object_type": r.object_type,
                               "object_key": r.object_key, "details": r.details}
                              for r in rows],
                    "next": str(cursor) if cursor is not None else None})
