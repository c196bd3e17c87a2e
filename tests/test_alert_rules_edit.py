"""Alert rules are edited after creation (threshold, recipients, enabled), on the card's edit
page and through /api/v1: checked with errors that name the field, audited, 404 when gone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import Alert, AlertRule, AuditEntry
from wfapp.services.alerts import evaluate as evaluate_alerts

from .lists import INTEGRATION, make_stuck
from .pages import find
from .test_alerts import _age

API = "/api/v1"


def _audit(object_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.action, e.details) for e in db.session.scalars(
        select(AuditEntry).where(AuditEntry.object_type == object_type)
        .order_by(AuditEntry.id))]


def test_api_adds_reads_changes_and_removes_a_rule(client, tokens, app):
    make_stuck(2)
    base = f"{API}/integrations/{INTEGRATION}/alert-rules"
    assert client.get(base, headers=tokens["viewer"]).get_json() == {"items": [], "next": None}
    added = client.post(base, headers=tokens["author"], json={
        "kind": "stuck_in_state", "state": "hold", "threshold": 2,
        "notify_emails": ["ops@example.com"]})
    assert added.status_code == 201, added.get_json()
    rule = added.get_json()
    assert (rule["kind"], rule["state"], rule["threshold"], rule["enabled"]) == \
        ("stuck_in_state", "HOLD", 2.0, True)
    assert rule["notify_emails"] == ["ops@example.com"] and rule["notify_webhooks"] == []
    url = f"{API}/alert-rules/{rule['id']}"
    assert client.get(url, headers=tokens["viewer"]).get_json() == rule
    assert client.get(base, headers=tokens["viewer"]).get_json()["items"] == [rule]

    changed = client.patch(url, headers=tokens["author"], json={
        "threshold": 0.5, "notify_emails": ["a@example.com", "b@example.com"],
        "notify_webhooks": ["https://hooks.example/alerts"]})
    assert changed.status_code == 200, changed.get_json()
    body = changed.get_json()
    assert body["threshold"] == 0.5 and body["state"] == "HOLD"
    assert body["notify_emails"] == ["a@example.com", "b@example.com"]
    assert body["notify_webhooks"] == ["https://hooks.example/alerts"]
    stored = db.session.get(AlertRule, rule["id"])
    db.session.refresh(stored)
    assert stored.notify_emails == "a@example.com\nb@example.com"
    action, details = _audit("alert_rule")[-1]
    assert action == "update" and any(line.startswith("threshold: 2.0 → 0.5")
                                      for line in details["changes"])

    assert client.patch(url, headers=tokens["operator"], json={"enabled": False}
                        ).status_code == 403
    assert client.delete(url, headers=tokens["author"]).status_code == 204
    assert client.get(url, headers=tokens["viewer"]).status_code == 404
    assert client.patch(url, headers=tokens["author"], json={"enabled": True}
                        ).status_code == 404
    assert [a for a, _ in _audit("alert_rule")] == ["create", "update", "delete"]


def test_api_errors_name_the_field_and_write_nothing(client, tokens, app):
    make_stuck(1)
    base = f"{API}/integrations/{INTEGRATION}/alert-rules"
    rule = client.post(base, headers=tokens["author"], json={
        "kind": "failed_events", "threshold": 3}).get_json()
    url = f"{API}/alert-rules/{rule['id']}"
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("post", base, {"threshold": 1}, "kind"),
        ("post", base, {"kind": "nope"}, "kind"),
        ("post", base, {"kind": "stuck_in_state", "threshold": -1}, "threshold"),
        ("post", base, {"kind": "stuck_in_state", "threshold": 1, "state": "NOPE"}, "state"),
        ("patch", url, {"threshold": 1.5}, "threshold"),
        ("patch", url, {"threshold": "many"}, "threshold"),
        ("patch", url, {"enabled": "yes"}, "enabled"),
        ("patch", url, {"kind": "stuck_in_state"}, "kind"),
        ("patch", url, {"colour": "red"}, "colour"),
        ("patch", url, {"notify_emails": ["not an address"]}, "notify_emails"),
        ("patch", url, {"notify_emails": [1, 2]}, "notify_emails"),
        ("patch", url, {"notify_webhooks": ["ftp://x.example/"]}, "notify_webhooks"),
        ("patch", url, {"threshold": 2, "notify_webhooks": ["nope"]}, "notify_webhooks"),
    ]
    for method, target, body, field in cases:
        answer = getattr(client, method)(target, headers=tokens["author"], json=body)
        assert answer.status_code == 422, (body, answer.get_json())
        paths = [d["path"] for d in answer.get_json()["error"]["details"]]
        assert field in paths, (body, paths)
    assert len(list(db.session.scalars(select(AlertRule)))) == 1
    stored = db.session.get(AlertRule, rule["id"])
    db.session.refresh(stored)
    # the half-bad PATCH wrote nothing
    assert (stored.threshold, stored.notify_webhooks) == (3.0, "")
    assert [a for a, _ in _audit("alert_rule")] == ["create"]
    for huge in (2**31, 2**63 - 1):  # beyond the id column: not found, never a 500
        assert client.get(f"{API}/alert-rules/{huge}", headers=tokens["viewer"]
                          ).status_code == 404
        assert client.patch(f"{API}/alert-rules/{huge}", headers=tokens["author"],
                            json={"enabled": False}).status_code == 404
    assert client.get(f"{API}/integrations/NOPE/alert-rules",
                      headers=tokens["viewer"]).status_code == 404


def test_disabling_a_rule_resolves_its_alert_and_stops_checking_it(client, tokens, app):
    make_stuck(2)
    rule = client.post(f"{API}/integrations/{INTEGRATION}/alert-rules", headers=tokens["author"],
                       json={"kind": "stuck_in_state", "threshold": 1}).get_json()
    _age(3)
    assert evaluate_alerts()["opened"] == 1
    off = client.patch(f"{API}/alert-rules/{rule['id']}", headers=tokens["author"],
                       json={"enabled": False})
    assert off.status_code == 200 and off.get_json()["enabled"] is False
    alert = db.session.scalar(select(Alert))
    db.session.refresh(alert)
    assert alert.resolved_at is not None
    assert evaluate_alerts() == {"opened": 0, "resolved": 0, "open": 0}
    assert ("alert_resolve", "rule disabled") in [(a, d.get("reason"))
                                                  for a, d in _audit("alert")]
    client.patch(f"{API}/alert-rules/{rule['id']}", headers=tokens["author"],
                 json={"enabled": True})
    assert evaluate_alerts()["opened"] == 1  # checked again: a new alert


def test_the_card_edits_a_rule_with_errors_at_their_inputs(client, auth, app):
    make_stuck(1)
    auth.login("author")
    client.post(f"/alerts/rules/{INTEGRATION}", data={"kind": "stuck_in_state", "threshold": "2",
                                                      "notify_emails": "ops@example.com"})
    rule = db.session.scalar(select(AlertRule))
    card = client.get(f"/integrations/{INTEGRATION}").get_data(as_text=True)
    edit = find(card, "a", href=f"/alerts/rules/{rule.id}/edit")
    assert edit.text == "Edit"
    page = client.get(edit.attrs["href"]).get_data(as_text=True)
    assert find(page, "input", id="threshold").attrs["value"] == "2"
    assert find(page, "textarea", id="notify_emails").text.strip() == "ops@example.com"
    assert "checked" in find(page, "input", id="enabled").attrs

    bad = client.post(edit.attrs["href"], data={
        "threshold": "-3", "enabled": "y", "notify_emails": "ops@example.com",
        "notify_webhooks": "not-a-url", "state": "NOPE"})
    assert bad.status_code == 422
    page = bad.get_data(as_text=True)
    for name in ("threshold", "notify_webhooks", "state"):
        field = find(page, None, id=name)
        assert field.attrs["aria-invalid"] == "true", name
        assert f"{name}-error" in field.attrs["aria-describedby"].split(), name
        assert find(page, "div", id=f"{name}-error").text.strip(), name
    assert "3 fields need a fix" in page
    db.session.refresh(rule)
    assert rule.threshold == 2.0  # nothing written

    good = client.post(edit.attrs["href"], data={
        "threshold": "1.5", "notify_emails": "a@example.com\nb@example.com",
        "notify_webhooks": "https://hooks.example/a", "state": "hold"})  # enabled unticked
    assert good.status_code == 302
    db.session.refresh(rule)
    assert (rule.threshold, rule.state, rule.enabled) == (1.5, "HOLD", False)
    assert rule.notify_emails == "a@example.com\nb@example.com"
    assert rule.notify_webhooks == "https://hooks.example/a"
    card = client.get(f"/integrations/{INTEGRATION}").get_data(as_text=True)
    item = find(card, "li", data_rule=str(rule.id))
    assert "Disabled" in item.text and "https://hooks.example/a" in item.text
    auth.logout()
    auth.login("operator")
    assert client.get(edit.attrs["href"]).status_code == 403
    assert client.get("/alerts/rules/999999/edit").status_code in (403, 404)
