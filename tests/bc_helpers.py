"""What the Business Central tests share: their workflow, their integration, waiting helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

CLIENT_STATE = "client-state-" + "x" * 20


def _bc(code: str, src: str, dst: str, changes: list[str], priority: int = 10,
        resource: str = "salesOrders") -> dict[str, Any]:
    return {"code": code, "from_state": src, "to_state": dst, "trigger_type": "on_bc_event",
            "priority": priority,
            "trigger_config": {"resource": resource, "change_types": changes}}


def bc_workflow(code: str = "BC_ORDERS") -> dict[str, Any]:
    """Sales orders as Business Central reports them: created, changed, deleted, in bulk."""
    return {"format": "wfapp.workflow/v1", "workflow": {
        "code": code, "description": "Business Central sales orders", "initial_state": "NEW",
        "states": [{"code": "NEW", "is_initial": True}, {"code": "OPEN"},
                   {"code": "CHANGED"}, {"code": "DELETED", "is_final": True},
                   {"code": "BULK", "is_final": True}],
        "transitions": [
            _bc("CREATED", "NEW", "OPEN", ["created"]),
            _bc("TOUCHED", "NEW", "CHANGED", ["updated"]),
            _bc("UPDATED", "OPEN", "CHANGED", ["updated"]),
            _bc("REMOVED", "OPEN", "DELETED", ["deleted"]),
            _bc("REMOVED_CHANGED", "CHANGED", "DELETED", ["deleted"]),
            _bc("BULK", "NEW", "BULK", ["collection"]),
            # A transition for another entity set must never fire on sales orders.
            _bc("CUSTOMER", "NEW", "DELETED", [], priority=1, resource="customers"),
        ]}}


def bc_integration(code: str = "BC_SALES", workflow: str = "BC_ORDERS",
                   **settings: Any) -> dict[str, Any]:
    """The API body that creates the integration the tests use."""
    return {"code": code, "description": "Sales orders from Business Central",
            "workflow_code": workflow, "instance_mode": "per_record",
            "bc_client_state": CLIENT_STATE, **settings}


def setup_in_app(**settings: Any) -> None:
    """Create the workflow and the integration through the services (inside an app context)."""
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration

    import_document(bc_workflow())
    create_integration(bc_integration(**settings))


def item(record: str | None, change: str = "created", *, sub: str = "sub-1",
         state: str | None = CLIENT_STATE, modified: str = "2026-01-05T10:00:00.123Z",
         entity: str = "salesOrders") -> dict[str, Any]:
    """One notification item as Business Central writes it."""
    company = "api/v2.0/companies(f64eba74-dacd-4854-a584-1834f68cfc3a)"
    resource = (f"{company}/{entity}?$filter=lastModifiedDateTime%20gt%202026-01-05T09:00:00Z"
                if change == "collection" else f"{company}/{entity}({record})")
    out = {"subscriptionId": sub, "expirationDateTime": "2026-01-08T10:00:00Z",
           "resource": resource, "changeType": change, "lastModifiedDateTime": modified}
    if state is not None:
        out["clientState"] = state
    return out


def wait_for(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2,
             what: str = "the condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
