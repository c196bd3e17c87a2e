"""Test helpers for webhooks: a small workflow and integration, and requests signed three ways."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from wfapp import signing

WORKFLOW_CODE = "HOOKFLOW"
# NEW --(order.paid)--> PAID, NEW --(data.status = cancelled)--> CANCELLED.
WORKFLOW: dict[str, Any] = {
    "format": "wfapp.workflow/v1",
    "workflow": {
        "code": WORKFLOW_CODE, "description": "Webhook test flow", "initial_state": "NEW",
        "enabled": True,
        "states": [
            {"code": "NEW", "description": "New", "is_initial": True, "is_final": False},
            {"code": "PAID", "description": "Paid", "is_initial": False, "is_final": True},
            {"code": "CANCELLED", "description": "Cancelled", "is_initial": False,
             "is_final": True},
        ],
        "transitions": [
            {"code": "PAY", "description": "Paid", "from_state": "NEW", "to_state": "PAID",
             "trigger_type": "on_webhook", "enabled": True, "priority": 10,
             "trigger_config": {"event_filter": "order.paid"},
             "conditions": [{"field": "event.total", "operator": "gt", "value": 0}],
             "capture": {"paid": "event.total"}},
            {"code": "CANCEL", "description": "Cancelled", "from_state": "NEW",
             "to_state": "CANCELLED", "trigger_type": "on_webhook", "enabled": True,
             "priority": 20, "trigger_config": {"event_filter": "order.*",
                                                "json_path": "data.status",
                                                "expected_value": "cancelled"},
             "conditions": [], "capture": {}},
        ],
    },
}

GITHUB = {"webhook_signature_scheme": "hmac", "webhook_hmac_header": "X-Hub-Signature-256",
          "webhook_hmac_prefix": "sha256=", "webhook_hmac_encoding": "hex",
          "webhook_dedupe_header": "X-GitHub-Delivery", "event_type_path": "action",
          "record_key_path": "pull_request.number"}
SHOPIFY = {"webhook_signature_scheme": "hmac", "webhook_hmac_header": "X-Shopify-Hmac-Sha256",
           "webhook_hmac_encoding": "base64", "webhook_dedupe_header": "X-Shopify-Webhook-Id",
           "event_type_path": "topic", "record_key_path": "id"}


def make_integration(code: str = "HOOKS", secret: str | None = None, **settings: Any) -> str:
    """The test workflow (once) and an integration with webhooks on; returns its secret."""
    from sqlalchemy import select

    from wfapp.extensions import db
    from wfapp.models import Workflow
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration

    if db.session.scalar(select(Workflow.id).where(Workflow.code == WORKFLOW_CODE)) is None:
        import_document(json.loads(json.dumps(WORKFLOW)))
    secret = secret or signing.generate_secret()
    fields = {"code": code, "workflow_code": WORKFLOW_CODE, "webhook_enabled": True,
              "webhook_secret": secret, **settings}
    create_integration(fields)
    return secret


def encode(body: Any) -> bytes:
    """A body as bytes: JSON for objects and lists, as is for bytes and text."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def standard(secret: str, body: Any, msg_id: str | None = None, timestamp: int | None = None
             ) -> tuple[bytes, dict[str, str]]:
    """A body and Standard Webhooks headers (signed by wfapp.signing)."""
    raw = encode(body)
    headers = signing.standard_headers(secret, msg_id or f"msg_{uuid.uuid4().hex}", raw,
                                       int(time.time()) if timestamp is None else timestamp)
    return raw, {"Content-Type": "application/json", **headers}


def github(secret: str, body: Any, delivery: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A body and headers as GitHub sends them (signed independently of wfapp.signing)."""
    raw = encode(body)
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"Content-Type": "application/json", "X-GitHub-Event": "pull_request",
                 "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                 "X-Hub-Signature-256": f"sha256={digest}"}


def shopify(secret: str, body: Any, webhook_id: str | None = None
            ) -> tuple[bytes, dict[str, str]]:
    """A body and headers as Shopify sends them (signed independently of wfapp.signing)."""
    raw = encode(body)
    digest = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()
    return raw, {"Content-Type": "application/json", "X-Shopify-Topic": "orders/paid",
                 "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
                 "X-Shopify-Hmac-Sha256": digest}
