"""JSON API of alert rules: an integration's rules, adding, reading, changing, removing one."""

from __future__ import annotations

from flask import jsonify
from werkzeug.wrappers import Response

from ..models import Role
from ..security import actor_name, requires_role
from ..services import alerts
from ..services.integrations import get_integration
from . import bp
from .common import check_types, json_body, query_args

RECIPIENTS = (list, str)
TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "state": (str, type(None)), "threshold": (int, float),
    "enabled": (bool,), "notify_emails": RECIPIENTS, "notify_webhooks": RECIPIENTS}


@bp.get("/integrations/<code>/alert-rules")
def list_alert_rules(code: str) -> Response:
    """An integration's alert rules, oldest first."""
    query_args(())
    integration = get_integration(code)
    return jsonify({"items": [alerts.rule_to_dict(r) for r in alerts.rules_of(integration.id)],
                    "next": None})


@bp.post("/integrations/<code>/alert-rules")
@requires_role(Role.AUTHOR)
def create_alert_rule(code: str) -> tuple[Response, int]:
    """Add an alert rule to an integration (audited)."""
    query_args(())
    integration = get_integration(code)
    data = json_body(TYPES, required=("kind",))
    check_types(data, TYPES)
    rule = alerts.add_rule(integration, data["kind"], data.get("state"), data.get("threshold"),
                           actor_name(), data.get("notify_emails", ""),
                           data.get("notify_webhooks", ""), data.get("enabled", True))
    return jsonify(alerts.rule_to_dict(rule)), 201


@bp.get("/alert-rules/<int:rule_id>")
def get_alert_rule(rule_id: int) -> Response:
    """One alert rule; 404 when there is none."""
    query_args(())
    return jsonify(alerts.rule_to_dict(alerts.get_rule(rule_id)))


@bp.patch("/alert-rules/<int:rule_id>")
@requires_role(Role.AUTHOR)
def patch_alert_rule(rule_id: int) -> Response:
    """Change a rule's state, threshold, recipients or enabled (audited; kind is fixed)."""
    query_args(())
    alerts.get_rule(rule_id)  # 404 before any complaint about the body
    data = json_body(TYPES)
    check_types(data, TYPES)
    return jsonify(alerts.rule_to_dict(alerts.update_rule(rule_id, data, actor_name())))


@bp.delete("/alert-rules/<int:rule_id>")
@requires_role(Role.AUTHOR)
def delete_alert_rule(rule_id: int) -> tuple[str, int]:
    """Remove an alert rule and its alerts (audited)."""
    query_args(())
    alerts.delete_rule(rule_id, actor_name())
    return "", 204
