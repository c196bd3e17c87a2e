"""The demo: an ORDER_SYNC workflow, a SHOP_ORDERS integration and an admin to log in with."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import signing
from .extensions import db
from .models import Integration, User, Workflow
from .services.definitions import FORMAT, import_document
from .services.integrations import create_integration
from .services.users import create_user

DEMO_ADMIN = "admin"

ORDER_SYNC: dict[str, Any] = {
    "format": FORMAT,
    "workflow": {
        "code": "ORDER_SYNC",
        "description": "Sales order to fulfilment",
        "initial_state": "NEW",
        "enabled": True,
        "states": [
            {"code": "NEW", "description": "New order imported", "is_initial": True,
             "is_final": False, "timeout_hours": 24, "on_timeout_transition": "EXPIRE"},
            {"code": "PENDING", "description": "Sent to fulfilment, awaiting confirmation",
             "is_initial": False, "is_final": False, "timeout_hours": 48,
             "on_timeout_transition": "GIVE_UP"},
            {"code": "CONFIRMED", "description": "Confirmed by fulfilment", "is_initial": False,
             "is_final": True, "timeout_hours": None, "on_timeout_transition": None},
            {"code": "FAILED", "description": "Failed; needs attention", "is_initial": False,
             "is_final": True, "timeout_hours": None, "on_timeout_transition": None},
            {"code": "EXPIRED", "description": "Never submitted in time", "is_initial": False,
             "is_final": True, "timeout_hours": None, "on_timeout_transition": None},
        ],
        "transitions": [
            {"code": "SUBMIT", "description": "Submit to Fulfillment API", "from_state": "NEW",
             "to_state": "PENDING", "trigger_type": "on_import", "enabled": True,
             "priority": 10, "trigger_config": {"record_status": "success"},
             "conditions": [{"field": "record.total", "operator": "gt", "value": 0}],
             "capture": {"order_no": "record.number"}},
            {"code": "REJECT", "description": "Import failed", "from_state": "NEW",
             "to_state": "FAILED", "trigger_type": "on_import", "enabled": True,
             "priority": 20, "trigger_config": {"record_status": "error"}, "conditions": [],
             "capture": {}},
            {"code": "EXPIRE", "description": "Expire unsubmitted order", "from_state": "NEW",
             "to_state": "EXPIRED", "trigger_type": "manual", "enabled": True, "priority": 90,
             "trigger_config": {"button_label": "Expire now", "confirm": True},
             "conditions": [], "capture": {}},
            {"code": "CONFIRM", "description": "Fulfilment confirmed the order",
             "from_state": "PENDING", "to_state": "CONFIRMED", "trigger_type": "on_webhook",
             "enabled": True, "priority": 10,
             "trigger_config": {"event_filter": "order.confirmed"},
             "conditions": [{"field": "event.data.status", "operator": "in",
                             "value": ["confirmed", "shipped"]}],
             "capture": {"tracking_no": "event.data.tracking"}},
            {"code": "POLL_STATUS", "description": "Ask fulfilment for the order status",
             "from_state": "PENDING", "to_state": "CONFIRMED",
             "trigger_type": "on_scheduled_poll", "enabled": False, "priority": 20,
             "trigger_config": {"url": "https://fulfilment.example/api/orders/{record_key}",
                                "method": "GET", "interval_minutes": 15,
                                "response_path": "status", "expected_value": "shipped"},
             "conditions": [], "capture": {}},
            {"code": "EXPORT_FAILED", "description": "Export to fulfilment failed",
             "from_state": "PENDING", "to_state": "FAILED", "trigger_type": "on_export",
             "enabled": True, "priority": 30, "trigger_config": {"record_status": "error"},
             "conditions": [], "capture": {}},
            {"code": "BC_DELETED", "description": "Order deleted in Business Central",
             "from_state": "PENDING", "to_state": "FAILED", "trigger_type": "on_bc_event",
             "enabled": True, "priority": 40,
             "trigger_config": {"resource": "salesOrders", "change_types": ["deleted"]},
             "conditions": [], "capture": {}},
            {"code": "GIVE_UP", "description": "No confirmation in time", "from_state": "PENDING",
             "to_state": "FAILED", "trigger_type": "manual", "enabled": True, "priority": 90,
             "trigger_config": {"button_label": "Mark failed", "confirm": True},
             "conditions": [], "capture": {}},
        ],
    },
}

#: With the demo's own fulfilment API on (DEMO_RECEIVER): SUBMIT calls it, and its answer
#: comes back as an On Action Result event.
SUBMIT_ACTIONS = [
    {"type": "set_variable", "config": {"values": {"submitted_by": "wfapp demo"}}},
    {"id": "submit", "type": "http_request", "config": {
        "method": "POST", "url": "{base}/demo/fulfilment/orders/{{record_key}}",
        "body": {"order": "{{record_key}}", "number": "{{vars.order_no}}",
                 "total": "{{data.total}}"},
        "timeout_seconds": 10, "max_attempts": 5, "capture": {"fulfilment_id": "id"}}},
]
FULFIL_FAILED = {
    "code": "FULFIL_FAILED", "description": "Fulfilment API refused the order",
    "from_state": "PENDING", "to_state": "FAILED", "trigger_type": "on_action_result",
    "enabled": True, "priority": 50,
    "trigger_config": {"action": "submit", "outcome": "failed"}, "conditions": [],
    "capture": {"refusal": "event.error"}}


def demo_document(base_url: str | None) -> dict[str, Any]:
    """The demo workflow; with `base_url`, SUBMIT calls the demo's fulfilment API there."""
    import copy

    document = copy.deepcopy(ORDER_SYNC)
    if base_url:
        transitions = document["workflow"]["transitions"]
        submit = next(t for t in transitions if t["code"] == "SUBMIT")
        submit["actions"] = _with_base(SUBMIT_ACTIONS, base_url.rstrip("/"))
        transitions.append(copy.deepcopy(FULFIL_FAILED))
    return document


def _with_base(value: Any, base: str) -> Any:
    """SUBMIT_ACTIONS with `{base}` filled in and `{{…}}` made the placeholders they stand for."""
    if isinstance(value, str):
        return value.replace("{base}", base).replace("{{", "{").replace("}}", "}")
    if isinstance(value, list):
        return [_with_base(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _with_base(v, base) for k, v in value.items()}
    return value


SHOP_ORDERS = {
    "code": "SHOP_ORDERS",
    "description": "Web shop orders to fulfilment",
    "workflow_code": "ORDER_SYNC",
    "instance_mode": "per_record",
    "enabled": True,
    "record_url_template": "https://erp.example/orders/{record_key}",
    "record_key_path": "id",
    "event_type_path": "type",
    # The CONFIRM transition is driven by signed webhooks (the demo feed sends them).
    "webhook_enabled": True,
}
SECRET_LINE = "webhook_secret: "


def load_demo(instance_path: str) -> list[str]:
    """Create what the demo needs and is missing; return lines telling the user how to log in."""
    lines = []
    if db.session.scalar(select(Workflow.id).where(Workflow.code == "ORDER_SYNC")) is None:
        from flask import current_app

        base = None
        if current_app.config.get("DEMO_RECEIVER"):
            base = current_app.config.get("EXTERNAL_URL") or "http://127.0.0.1:5000"
        import_document(demo_document(base))
        lines.append("Loaded the demo workflow ORDER_SYNC.")
        if base:
            lines.append(f"SUBMIT calls the demo's fulfilment API at {base}/demo/fulfilment/ "
                         "(see the Actions page).")
    webhook_secret = None
    if db.session.scalar(select(Integration.id).where(Integration.code == "SHOP_ORDERS")) is None:
        webhook_secret = signing.generate_secret()
        create_integration({**SHOP_ORDERS, "webhook_secret": webhook_secret})
        lines.append("Loaded the demo integration SHOP_ORDERS.")
    password_file = Path(instance_path) / "demo-admin.txt"
    if db.session.scalar(select(User.id).where(User.username == DEMO_ADMIN)) is None:
        password = secrets.token_urlsafe(12)
        create_user(DEMO_ADMIN, password, "admin")
        password_file.write_text(f"user: {DEMO_ADMIN}\npassword: {password}\n")
        password_file.chmod(0o600)
        lines.append(f"Created the demo admin. Log in as {DEMO_ADMIN} / {password}")
        lines.append(f"(the password is kept in {password_file})")
    elif password_file.exists():
        lines.append(f"Log in as {DEMO_ADMIN}; the password is in {password_file}")
    if webhook_secret is not None:
        # Beside the password, for the curl example of docs/webhooks.md; the file is 0600.
        kept = [line for line in (password_file.read_text().splitlines()
                                  if password_file.exists() else [])
                if not line.startswith(SECRET_LINE)]
        password_file.write_text("\n".join([*kept, SECRET_LINE + webhook_secret]) + "\n")
        password_file.chmod(0o600)
        lines.append(f"SHOP_ORDERS accepts signed webhooks; its secret is kept in {password_file} "
                     "(docs/webhooks.md has a curl example)")
    return lines


def _send_webhooks(code: str, secret: str | None, bodies: list[dict[str, Any]]) -> None:
    """POST each body, signed, to the running app's /hooks/<code>: the real path.

    The base URL is EXTERNAL_URL (`make run` sets it); without it the demo sends nothing.
    """
    import json
    import logging
    import uuid

    import requests
    from flask import current_app

    base = (current_app.config.get("EXTERNAL_URL") or "").rstrip("/")
    if not bodies or not base or not secret:
        return
    url = f"{base}/hooks/{code}"
    with requests.Session() as session:
        for body in bodies:
            raw = json.dumps(body).encode()
            headers = signing.standard_headers(secret, f"msg_demo_{uuid.uuid4().hex}", raw)
            try:
                session.post(url, data=raw, timeout=5,
                             headers={"Content-Type": "application/json", **headers})
            except requests.RequestException as error:
                logging.getLogger(__name__).warning("demo webhook to %s failed: %s", url, error)
                return


def feed() -> None:
    """One tick of the demo's simulated traffic: new orders arrive, fulfilment confirms some.

    An import run brings a few orders into SHOP_ORDERS (now and then one fails), and signed
    webhooks sent over HTTP to the running app confirm some of the orders that are waiting, so
    `make run` shows instances moving along the real paths.
    """
    import random

    from .models import Instance
    from .services import secrets as secret_store
    from .services.runs import start_run

    try:
        integration = db.session.scalar(
            select(Integration).where(Integration.code == "SHOP_ORDERS"))
        if integration is None or not integration.enabled:
            return
        rng = random.Random()
        records = []
        for _ in range(rng.randint(1, 3)):
            number = f"SO-{rng.randint(10000, 99999)}"
            failed = rng.random() < 0.15
            records.append({"key": number, "status": "error" if failed else "success",
                            "data": {"number": number, "customer": rng.choice(
                                ["Contoso", "Fabrikam", "Adatum", "Litware"]),
                                "total": round(rng.uniform(20, 900), 2)}})
        start_run(integration, "import", records, "demo-feed")
        waiting = db.session.scalars(
            select(Instance).where(Instance.integration_id == integration.id,
                                   Instance.state == "PENDING").limit(3)).all()
        bodies = [{"type": "order.confirmed", "id": inst.record_key,
                   "data": {"status": rng.choice(["confirmed", "shipped"]),
                            "tracking": f"TRK{rng.randint(100000, 999999)}"}}
                  for inst in waiting if rng.random() < 0.6]
        found = secret_store.read(integration.id, secret_store.SETTING, "webhook_secret")
        code = integration.code
        db.session.rollback()  # hold no transaction (SQLite: no lock) while the app stores them
        _send_webhooks(code, found.value if found else None, bodies)
    finally:
        db.session.remove()
