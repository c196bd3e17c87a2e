"""Alerts delivered through the notification actions: a real local HTTP receiver and a real
SMTP server (aiosmtpd); signed webhooks, e-mails, retries, status on the Alerts page."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from tests.action_flows import FAST_RETRIES
from tests.action_server import ActionServer
from wfapp.extensions import db
from wfapp.models import ActionDelivery, AlertRule, AuditEntry, Event, Instance, utcnow
from wfapp.services import outbox, secrets
from wfapp.services.alerts import evaluate as evaluate_alerts
from wfapp.services.integrations import get_integration
from wfapp.signing import generate_secret, verify_standard

from .lists import INTEGRATION, make_stuck

APP_CONFIG = FAST_RETRIES


def _age(hours: float) -> None:
    db.session.execute(update(Instance).values(
        entered_state_at=utcnow() - timedelta(hours=hours)))
    db.session.commit()


def deliver_until(check: Callable[[], bool], timeout: float = 15) -> None:
    """Deliver due outbox rows, as the workers do, until `check` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outbox.deliver_due()
        if check():
            return
        time.sleep(0.05)
    db.session.expire_all()
    rows = [(d.id, d.status, d.attempts, d.last_error)
            for d in db.session.scalars(select(ActionDelivery))]
    raise AssertionError(f"condition not reached in time; deliveries {rows}")


def _rule(client: Any, receiver: ActionServer, path: str = "/alerts") -> str:
    """A stuck rule notifying ops@example.com and the receiver; the integration's secret."""
    make_stuck(2)
    secret = generate_secret()
    secrets.put(get_integration(INTEGRATION).id, secrets.SETTING, "outbound_webhook_secret",
                secret)
    db.session.commit()
    added = client.post(f"/alerts/rules/{INTEGRATION}", data={
        "kind": "stuck_in_state", "state": "HOLD", "threshold": "1",
        "notify_emails": "ops@example.com", "notify_webhooks": receiver.url + path})
    assert added.status_code == 302
    return secret


def test_an_alert_opening_sends_one_signed_webhook_and_one_email(client, auth, app, receiver,
                                                                   smtp):
    auth.login("author")
    secret = _rule(client, receiver)
    card = client.get(f"/integrations/{INTEGRATION}").get_data(as_text=True)
    assert f"Notifies: ops@example.com, {receiver.url}/alerts" in card
    _age(2)
    assert evaluate_alerts()["opened"] == 1
    # Written with the alert, delivered after: the evaluation waited for no receiver.
    assert receiver.requests("/alerts") == [] and smtp == []
    deliver_until(lambda: len(receiver.requests("/alerts")) == 1 and len(smtp) == 1)
    [request] = receiver.requests("/alerts")
    headers = {k.lower(): v for k, v in request.headers.items()}
    verify_standard([secret], headers["webhook-id"], headers["webhook-timestamp"],
                    headers["webhook-signature"], request.body)
    message = json.loads(request.body)
    assert message["type"] == "alert.opened"
    assert message["data"]["integration"] == INTEGRATION
    assert message["data"]["message"] == "2 instances in HOLD longer than 1 h 0 min"
    assert smtp[0].rcpt_tos == ["ops@example.com"]
    text = smtp[0].content.decode()
    assert f"Subject: [wfapp] Alert opened on {INTEGRATION}" in text
    assert "2 instances in HOLD longer than 1 h 0 min" in text
    # Delivered once: later evaluations of the still-open alert send nothing more.
    assert evaluate_alerts()["opened"] == 0
    outbox.deliver_due()
    assert len(receiver.requests("/alerts")) == 1 and len(smtp) == 1
    page = client.get("/alerts/").get_data(as_text=True)
    assert page.count(">succeeded<") == 2 and "e-mail" in page
    # No instance moves on an alert's delivery: no outcome event is stored.
    assert db.session.scalar(select(Event).where(Event.source == "on_action_result")) is None
    actions = client.get("/actions/").get_data(as_text=True)
    assert "alert #" in actions

    _age(0)
    assert evaluate_alerts()["resolved"] == 1
    deliver_until(lambda: len(receiver.requests("/alerts")) == 2 and len(smtp) == 2)
    assert json.loads(receiver.requests("/alerts")[1].body)["type"] == "alert.resolved"
    assert "Subject: [wfapp] Alert resolved" in smtp[1].content.decode()


def test_a_500_is_retried_with_one_message_id(client, auth, app, receiver, smtp):
    auth.login("author")
    _rule(client, receiver, "/flaky")
    receiver.script("/flaky", [500, 500, 200])
    _age(2)
    assert evaluate_alerts()["opened"] == 1
    deliver_until(lambda: len(receiver.requests("/flaky")) == 3)
    requests = receiver.requests("/flaky")
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    db.session.expire_all()
    webhook = db.session.scalar(select(ActionDelivery).where(
        ActionDelivery.type == "send_webhook"))
    assert (webhook.status, webhook.attempts, webhook.instance_id) == ("succeeded", 3, None)
    page = client.get("/alerts/").get_data(as_text=True)
    assert "attempt 3/5" in page


def test_a_missing_secret_fails_visibly_without_blocking_the_email(client, auth, app,
                                                                    receiver, smtp):
    auth.login("author")
    make_stuck(1)
    client.post(f"/alerts/rules/{INTEGRATION}", data={
        "kind": "stuck_in_state", "threshold": "1", "notify_emails": "ops@example.com",
        "notify_webhooks": receiver.url + "/nosecret"})
    _age(2)
    evaluate_alerts()
    deliver_until(lambda: len(smtp) == 1 and db.session.scalar(select(ActionDelivery).where(
        ActionDelivery.type == "send_webhook", ActionDelivery.status == "failed")) is not None)
    assert receiver.requests("/nosecret") == []
    page = client.get("/alerts/").get_data(as_text=True)
    assert "has no outbound_webhook_secret" in page


def test_recipients_are_checked_and_errors_name_the_field(client, auth, app):
    make_stuck(1)
    auth.login("author")
    for data, message in [
        ({"notify_emails": "not-an-address"}, "notify_emails: &#39;not-an-address&#39; is not"),
        ({"notify_emails": "a@b.example, {vars.x}@b.example"}, "notify_emails: "),
        ({"notify_webhooks": "ftp://example.com/x"}, "notify_webhooks: "),
        ({"notify_webhooks": "https://example.com/{record_key}"}, "notify_webhooks: "),
        ({"notify_webhooks": "\n".join(f"https://e.example/{i}" for i in range(21))},
         "notify_webhooks: at most 20 recipients"),
    ]:
        response = client.post(f"/alerts/rules/{INTEGRATION}", data={
            "kind": "stuck_in_state", "threshold": "1", **data}, follow_redirects=True)
        text = response.get_data(as_text=True)
        assert response.status_code == 200 and "Rule not added: " + message in text, text
    assert db.session.scalar(select(AlertRule)) is None
    client.post(f"/alerts/rules/{INTEGRATION}", data={
        "kind": "stuck_in_state", "threshold": "1",
        "notify_emails": "a@example.com; b@example.com",
        "notify_webhooks": "https://hooks.example/1\n\nhttps://hooks.example/2"})
    rule = db.session.scalar(select(AlertRule))
    assert rule.notify_emails == "a@example.com\nb@example.com"
    assert rule.notify_webhooks == "https://hooks.example/1\nhttps://hooks.example/2"
    details = db.session.scalar(select(AuditEntry.details).where(
        AuditEntry.object_type == "alert_rule"))
    assert details["notify_emails"] == ["a@example.com", "b@example.com"]


def test_giving_up_on_an_alert_delivery_moves_nothing(client, auth, app, receiver, smtp):
    auth.login("author")
    _rule(client, receiver, "/down")
    receiver.script("/down", [500] * 10)
    _age(2)
    evaluate_alerts()
    deliver_until(lambda: len(receiver.requests("/down")) >= 1)
    db.session.expire_all()
    webhook = db.session.scalar(select(ActionDelivery).where(
        ActionDelivery.type == "send_webhook"))
    assert (webhook.status, webhook.attempts) == ("pending", 1)  # a 500: retried later
    assert outbox.give_up(webhook.id, "tester").status == "gave_up"
    assert db.session.scalar(select(Event).where(Event.source == "on_action_result")) is None
    assert "gave up" in client.get("/alerts/").get_data(as_text=True)
