"""A workflow built for simulator and lint tests (tests own their data)."""

from __future__ import annotations

from typing import Any


def order_workflow() -> dict[str, Any]:
    """NEW -(webhook paid)-> PAID -(2 h timeout)-> LATE -(manual)-> DONE; import ships."""
    return {
        "code": "ORDER", "enabled": False, "initial_state": "NEW",
        "states": [
            {"code": "NEW", "is_initial": True},
            {"code": "PAID", "timeout_hours": 2, "on_timeout_transition": "SLOW"},
            {"code": "LATE", "timeout_hours": 1.5, "on_timeout_transition": "GIVE_UP"},
            {"code": "SHIPPED", "is_final": True}, {"code": "DONE", "is_final": True},
            {"code": "FAILED", "is_final": True},
        ],
        "transitions": [
            {"code": "BIG", "from_state": "NEW", "to_state": "PAID",
             "trigger_type": "on_webhook", "priority": 1,
             "trigger_config": {"event_filter": "order.paid"},
             "conditions": [{"field": "event.total", "operator": "ge", "value": 1000}],
             "capture": {"tier": "event.tier"}},
            {"code": "PAY", "from_state": "NEW", "to_state": "PAID",
             "trigger_type": "on_webhook", "priority": 5,
             "trigger_config": {"event_filter": "order.paid"},
             "capture": {"order_no": "event.number"}},
            {"code": "SLOW", "from_state": "PAID", "to_state": "LATE", "trigger_type": "manual"},
            {"code": "GIVE_UP", "from_state": "LATE", "to_state": "FAILED",
             "trigger_type": "manual"},
            {"code": "CLOSE", "from_state": "LATE", "to_state": "DONE", "trigger_type": "manual",
             "conditions": [{"field": "record.ok", "operator": "eq", "value": True}]},
            {"code": "SHIP", "from_state": "PAID", "to_state": "SHIPPED",
             "trigger_type": "on_import", "trigger_config": {"record_status": "success"}},
        ],
    }


def order_document(**workflow: Any) -> dict[str, Any]:
    """The order workflow as an export document (enabled), with overrides."""
    wf = order_workflow()
    wf.update({"enabled": True, **workflow})
    return {"format": "wfapp.workflow/v1", "workflow": wf}
