"""Alert rules: added on the integration card, evaluated by the scheduled job, shown in the
header badge and on the Alerts page, resolved by themselves, audited."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from wfapp.extensions import db
from wfapp.models import Alert, AlertRule, AuditEntry, Event, Instance, utcnow
from wfapp.services import plugin_state
from wfapp.services.alerts import evaluate as evaluate_alerts

from .lists import INTEGRATION, make_stuck


def _age(hours: float) -> None:
    db.session.execute(update(Instance).values(
        entered_state_at=utcnow() - timedelta(hours=hours)))
    db.session.commit()


def test_stuck_rule_opens_and_resolves(client, auth, app):
    make_stuck(3)
    auth.login("author")
    card = client.get(f"/integrations/{INTEGRATION}").get_data(as_text=True)
    assert 'id="alert-rule-form"' in card and "No alert rules." in card
    added = client.post(f"/alerts/rules/{INTEGRATION}", data={
        "kind": "stuck_in_state", "state": "hold", "threshold": "2"})
    assert added.status_code == 302
    rule = db.session.scalar(select(AlertRule))
    assert (rule.state, rule.threshold) == ("HOLD", 2.0)
    card = client.get(f"/integrations/{INTEGRATION}").get_data(as_text=True)
    assert "Instances in state HOLD longer than 2 h 0 min" in card
    assert evaluate_alerts()["opened"] == 0  # not stuck yet
    _age(3)
    assert evaluate_alerts() == {"opened": 1, "resolved": 0, "open": 1}
    assert evaluate_alerts() == {"opened": 0, "resolved": 0, "open": 1}  # one alert, kept
    page = client.get("/alerts/").get_data(as_text=True)
    assert "3 instances in HOLD longer than 2 h 0 min" in page
    assert 'id="alert-badge">Alerts' in page and 'title="1 open">1<' in page
    _age(1)
    assert evaluate_alerts()["resolved"] == 1
    assert 'title="1 open"' not in client.get("/alerts/").get_data(as_text=True)
    actions = list(db.session.scalars(select(AuditEntry.action)
                                      .where(AuditEntry.object_type.in_(["alert",
                                                                         "alert_rule"]))))
    assert sorted(actions) == ["alert_open", "alert_resolve", "create"]


def test_alerts_are_a_core_schedule(app):
    schedules = {name: path for name, _, path in app.extensions["wfapp"]["schedules"]}
    assert schedules["alerts"] == "wfapp.jobs.evaluate_alerts"


def test_failed_events_and_bc_rules(client, auth, app):
    make_stuck(5)
    auth.login("author")
    client.post(f"/alerts/rules/{INTEGRATION}", data={"kind": "failed_events",
                                                      "threshold": "3"})
    client.post(f"/alerts/rules/{INTEGRATION}", data={"kind": "bc_subscription_expiring"})
    assert evaluate_alerts()["open"] == 0
    db.session.execute(update(Event).values(status="failed"))
    db.session.commit()
    integration_id = db.session.scalar(select(AlertRule.integration_id))
    plugin_state.put(integration_id, "bc", "subscription", {
        "wanted": True, "id": "sub-1",
        "expires_at": (utcnow() + timedelta(hours=5)).isoformat()})
    assert evaluate_alerts()["opened"] == 2
    messages = sorted(db.session.scalars(select(Alert.message)))
    assert messages[0] == "5 failed events in the last hour (more than 3)"
    assert messages[1].startswith("the Business Central subscription expires in 4 h")


def test_rule_input_is_checked(client, auth, app):
    make_stuck(1)
    auth.login("author")
    for data, message in [
        ({"kind": "stuck_in_state", "threshold": "-1"}, "threshold: must be a number of hours"),
        ({"kind": "stuck_in_state", "threshold": "x"}, "threshold: must be a number of hours"),
        ({"kind": "stuck_in_state", "threshold": "1", "state": "NOPE"},
         "state: is not a state of workflow STUCKFLOW"),
        ({"kind": "failed_events", "threshold": "1.5"}, "threshold: must be a whole number"),
        ({"kind": "nope"}, "Alert when: choose a kind"),
    ]:
        response = client.post(f"/alerts/rules/{INTEGRATION}", data=data,
                               follow_redirects=True)
        assert response.status_code == 200 and message in response.get_data(as_text=True)
    assert db.session.scalar(select(AlertRule)) is None
    auth.logout()
    auth.login("operator")
    assert client.post(f"/alerts/rules/{INTEGRATION}", data={
        "kind": "failed_events", "threshold": "1"}).status_code == 403
