"""Factories for action tests: an order workflow whose SUBMIT calls a receiver; its integration."""

from __future__ import annotations

from typing import Any

from wfapp.extensions import db
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.integrations import create_integration

#: The app config of action tests (a module's `APP_CONFIG`, see conftest.app_config): fast
#: retries, since the backoff itself is tested on its own.
FAST_RETRIES = {"ACTION_BACKOFF_BASE": 0.05, "ACTION_BACKOFF_CAP": 0.2}


def order_workflow(url: str, *, extra_actions: list[dict[str, Any]] = (),
                   **http: Any) -> dict[str, Any]:
    """NEW --SUBMIT (webhook go; set_variable + http_request "submit")--> SUBMITTED,
    then CONFIRMED on the request's success, FAILED after its last failure."""
    wf = {
        "code": "ORDERS", "initial_state": "NEW",
        "states": [{"code": "NEW", "is_initial": True}, {"code": "SUBMITTED"},
                   {"code": "CONFIRMED", "is_final": True}, {"code": "FAILED"}],
        "transitions": [
            {"code": "SUBMIT", "from_state": "NEW", "to_state": "SUBMITTED",
             "trigger_type": "on_webhook", "trigger_config": {"event_filter": "go"},
             "actions": [
                 {"type": "set_variable",
                  "config": {"values": {"origin": "wfapp", "key_copy": "{record_key}"}}},
                 {"id": "submit", "type": "http_request", "config": {
                     "method": "POST", "url": url + "/submit/{record_key}",
                     "headers": {"X-Api-Key": "{secret.api_key}"},
                     "body": {"order": "{record_key}", "origin": "{vars.origin}",
                              "total": "{data.total}"},
                     "max_attempts": 3, "timeout_seconds": 2,
                     "capture": {"confirmation": "id"}, **http}},
                 *extra_actions]},
            {"code": "CONFIRM", "from_state": "SUBMITTED", "to_state": "CONFIRMED",
             "trigger_type": "on_action_result",
             "trigger_config": {"action": "submit", "outcome": "succeeded"},
             "conditions": [{"field": "instance.vars.confirmation", "operator": "exists"}]},
            {"code": "FAIL", "from_state": "SUBMITTED", "to_state": "FAILED",
             "trigger_type": "on_action_result",
             "trigger_config": {"action": "submit", "outcome": "failed"}},
            {"code": "REOPEN", "from_state": "FAILED", "to_state": "SUBMITTED",
             "trigger_type": "manual"},
        ],
    }
    import_document({"format": FORMAT, "workflow": wf}, replace=True)
    return wf


def shop_integration(**settings: Any) -> Any:
    """The SHOP integration on ORDERS, with the named secret `api_key`."""
    integration = create_integration({"code": "SHOP", "workflow_code": "ORDERS", **settings})
    from wfapp.services import secrets

    secrets.put(integration.id, secrets.NAMED, "api_key", "k-123")
    db.session.commit()
    return integration
