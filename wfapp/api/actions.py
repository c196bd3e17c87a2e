"""JSON API of transition actions: their deliveries (the outbox), and retrying one."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from sqlalchemy import select
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..extensions import db
from ..models import ActionDelivery, ActionStatus, Integration, Role, Workflow
from ..security import actor_name, requires_role
from ..services import outbox
from ..services.errors import ValidationFailed
from . import bp
from .common import id_arg, iso, limit_arg, query_args

STATUSES = [s.value for s in ActionStatus]


def delivery_to_dict(row: ActionDelivery, codes: dict[tuple[str, int | None], str] | None = None
                     ) -> dict[str, Any]:
    """One delivery as the API shows it."""
    codes = codes or {}
    return {"id": row.id, "instance_id": row.instance_id, "alert_id": row.alert_id,
            "workflow": codes.get(("w", row.workflow_id)),
            "integration": codes.get(("i", row.integration_id)),
            "transition": row.transition, "action_id": row.action_id or None,
            "type": row.type, "status": row.status, "attempts": row.attempts,
            "max_attempts": row.max_attempts, "next_attempt_at": iso(row.next_attempt_at),
            "last_status_code": row.last_status_code, "last_error": row.last_error or None,
            "request": row.request or {}, "response": row.response,
            "created_at": iso(row.created_at), "finished_at": iso(row.finished_at)}


def _codes(rows: list[ActionDelivery]) -> dict[tuple[str, int | None], str]:
    codes: dict[tuple[str, int | None], str] = {}
    workflows = {r.workflow_id for r in rows if r.workflow_id is not None}
    integrations = {r.integration_id for r in rows}
    if workflows:
        codes.update({("w", i): c for i, c in db.session.execute(
            select(Workflow.id, Workflow.code).where(Workflow.id.in_(workflows)))})
    if integrations:
        codes.update({("i", i): c for i, c in db.session.execute(
            select(Integration.id, Integration.code).where(Integration.id.in_(integrations)))})
    return codes


def _id_of(model: Any, name: str) -> int | None:
    value = request.args.get(name)
    if not value:
        return None
    found = db.session.scalar(select(model.id).where(model.code == value.strip().upper()))
    return found if found is not None else -1


@bp.get("/actions")
def list_actions() -> Response:
    """Action deliveries, newest first; filters status, workflow, integration, instance_id, type."""
    query_args(("status", "workflow", "integration", "instance_id", "type", "limit", "cursor"))
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationFailed([RuleError("status", f"must be one of {', '.join(STATUSES)}")])
    rows, cursor = outbox.list_deliveries(
        status=status, workflow_id=_id_of(Workflow, "workflow"),
        integration_id=_id_of(Integration, "integration"), instance_id=id_arg("instance_id"),
        type=request.args.get("type") or None, limit=limit_arg(), cursor=id_arg("cursor"))
    codes = _codes(rows)
    return jsonify({"items": [delivery_to_dict(r, codes) for r in rows],
                    "next": str(cursor) if cursor is not None else None})


@bp.post("/actions/<int:delivery_id>/retry")
@requires_role(Role.OPERATOR)
def retry_action(delivery_id: int) -> Response:
    """Make a pending, failed or given-up delivery due now (one more attempt)."""
    row = outbox.retry_now(delivery_id, actor_name())
    return jsonify(delivery_to_dict(row, _codes([row])))
