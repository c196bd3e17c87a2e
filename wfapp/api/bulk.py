"""JSON API of bulk operations: `POST instances/bulk`, `POST events/bulk`, `operations/<id>`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..inputs import MAX_ID
from ..models import Role
from ..security import actor_name, api_error, current_actor, requires_role
from ..services import bulk
from ..services.errors import ValidationFailed
from ..services.events import EventFilters
from ..services.instance_list import InstanceFilters, check_vars
from . import bp
from .common import check_types, json_body

INSTANCE_FILTER_KEYS = ("workflow", "integration", "state", "active", "record_key",
                        "record_key_prefix", "run_id", "since", "vars")
EVENT_FILTER_KEYS = ("integration", "status", "source", "run_id", "instance_id")


def _strings(data: dict[str, Any], keys: tuple[str, ...], limits: dict[str, int]) -> list[
        RuleError]:
    errors = []
    for key in keys:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(RuleError(f"filter.{key}", "must be a string"))
        elif len(value) > limits.get(key, 20) or "\x00" in value:
            errors.append(RuleError(f"filter.{key}", f"must be up to {limits.get(key, 20)} "
                                                     "characters, no NUL"))
    return errors


def _ids(data: dict[str, Any], keys: tuple[str, ...]) -> list[RuleError]:
    return [RuleError(f"filter.{key}", "must be an id: a whole number from 1 up")
            for key in keys if data.get(key) is not None and (
                not isinstance(data[key], int) or isinstance(data[key], bool)
                or not 1 <= data[key] <= MAX_ID)]


def _filter_object(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    data = body.get("filter", {})
    if not isinstance(data, dict):
        raise ValidationFailed([RuleError("filter", "must be an object")])
    # `var.<name>` keys, as in the list's query string, are accepted next to `vars`.
    unknown = [RuleError(f"filter.{k}", "unknown filter") for k in data
               if k not in keys and not (k.startswith("var.") and "vars" in keys)]
    if unknown:
        raise ValidationFailed(unknown)
    return data


def instance_filters(body: dict[str, Any]) -> InstanceFilters:
    """The `filter` object of a bulk request, checked field by field."""
    data = _filter_object(body, INSTANCE_FILTER_KEYS)
    errors = _strings(data, ("workflow", "integration", "state", "record_key",
                             "record_key_prefix", "since"),
                      {"record_key": 200, "record_key_prefix": 200, "since": 40})
    errors += _ids(data, ("run_id",))
    if data.get("active") is not None and not isinstance(data["active"], bool):
        errors.append(RuleError("filter.active", "must be true or false"))
    since = None
    if isinstance(data.get("since"), str) and not errors:
        try:
            since = datetime.fromisoformat(data["since"])
        except ValueError:
            errors.append(RuleError("filter.since", "must be an ISO 8601 time"))
    variables = data.get("vars") or {}
    if not isinstance(variables, dict) or not all(isinstance(v, str)
                                                  for v in variables.values()):
        errors.append(RuleError("filter.vars", "must be an object of strings"))
        variables = {}
    for key, value in data.items():
        if key.startswith("var."):
            if not isinstance(value, str):
                errors.append(RuleError(f"filter.{key}", "must be a string"))
            else:
                variables[key[4:]] = value
    if errors:
        raise ValidationFailed(errors)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # read as UTC, as the page's field is
    return InstanceFilters(
        workflow=data.get("workflow") or None, integration=data.get("integration") or None,
        state=data.get("state") or None, active=data.get("active"),
        record_key=data.get("record_key") or None,
        record_key_prefix=data.get("record_key_prefix") or None, run_id=data.get("run_id"),
        since=since, vars=check_vars(variables))


def event_filters(body: dict[str, Any]) -> EventFilters:
    """The `filter` object of an events bulk request, checked field by field."""
    data = _filter_object(body, EVENT_FILTER_KEYS)
    errors = _strings(data, ("integration", "status", "source"), {"source": 40})
    errors += _ids(data, ("run_id", "instance_id"))
    if errors:
        raise ValidationFailed(errors)
    return EventFilters(**{k: data.get(k) or None for k in EVENT_FILTER_KEYS})


def _plan_answer(plan: bulk.Plan) -> dict[str, Any]:
    return {"operation_id": plan.operation_id, "matched": plan.matched,
            "refused": [r.as_dict() for r in plan.refused]}


@bp.post("/instances/bulk")
@requires_role(Role.OPERATOR)
def bulk_instances() -> tuple[Response, int]:
    """One action on every instance a filter matches: a dry run, or a queued operation."""
    body = json_body({"filter", "action", "transition", "comment", "state", "note",
                      "to_version", "state_map", "dry_run"}, {"action"})
    check_types(body, {"action": (str,), "dry_run": (bool,)})
    role = bulk.role_needed("instances", body["action"])
    user = current_actor()
    if user is None or not user.has_role(role):
        return api_error(403, "forbidden", f"action {body['action']} needs the {role} role"), 403
    filters = instance_filters(body)
    params: dict[str, Any] = {k: body[k] for k in ("transition", "comment", "state", "note",
                                                    "to_version", "state_map") if k in body}
    plan = bulk.plan("instances", body["action"], filters, params,
                     bool(body.get("dry_run", False)), actor_name())
    return jsonify(_plan_answer(plan)), 200 if plan.operation_id is None else 202


@bp.post("/events/bulk")
@requires_role(Role.OPERATOR)
def bulk_events() -> tuple[Response, int]:
    """Replay every event a filter matches (skipped and failed ones; others are refused)."""
    body = json_body({"filter", "action", "dry_run"}, {"action"})
    check_types(body, {"action": (str,), "dry_run": (bool,)})
    plan = bulk.plan("events", body["action"], event_filters(body), {},
                     bool(body.get("dry_run", False)), actor_name())
    return jsonify(_plan_answer(plan)), 200 if plan.operation_id is None else 202


@bp.get("/operations/<int:operation_id>")
def show_operation(operation_id: int) -> Response:
    """A bulk operation's progress: status, total, done, failed (and the last errors)."""
    return jsonify(bulk.progress(bulk.get_operation(operation_id)))


@bp.post("/operations/<int:operation_id>/cancel")
@requires_role(Role.OPERATOR)
def cancel_operation(operation_id: int) -> Response:
    """Stop a queued or running operation; what it did so far stays done."""
    return jsonify(bulk.progress(bulk.cancel(operation_id, actor_name())))
