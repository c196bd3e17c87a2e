"""Alert rules on an integration, evaluated by a scheduled job; the alerts they raise.

A rule holds or not at each evaluation. While it holds, one alert is open for it (its value and
message kept current); when it stops holding, that alert is resolved. Opening and resolving are
audited. Kinds:
- `stuck_in_state`: active instances in `state` (any state when empty) longer than
  `threshold` hours;
- `failed_events`: more than `threshold` failed events received in the last hour;
- `bc_subscription_expiring`: the Business Central subscription expires within a day (or is
  wanted but missing).

A rule may name who is told (`notify_emails`, `notify_webhooks`): when its alert opens and when
it resolves, the evaluation writes outbox rows in the same transaction, delivered after commit
by the transition actions' own `send_email` and `send_webhook` (signing, retries with backoff,
status on the Alerts page) — the evaluation never waits for a receiver.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..engine import RuleError
from ..extensions import db
from ..formatting import span
from ..models import (
    ActionDelivery,
    ActionStatus,
    Alert,
    AlertKind,
    AlertRule,
    Event,
    EventStatus,
    Instance,
    Integration,
    utcnow,
)
from . import audit, outbox, plugin_state
from .errors import NotFound, ValidationFailed
from .registry import get_registry

KIND_LABELS = {AlertKind.STUCK.value: "Instances in one state longer than",
               AlertKind.FAILED_EVENTS.value: "Failed events in the last hour above",
               AlertKind.BC_EXPIRING.value: "Business Central subscription expiring within "
                                            "a day"}
MAX_RULES = 50
MAX_RECIPIENTS = 20
EMAIL_TYPE, WEBHOOK_TYPE = "send_email", "send_webhook"
# Where the Business Central plugin keeps its subscription (plugins/_bc_subscriptions.py).
BC_STATE = ("bc", "subscription")


def rules_of(integration_id: int) -> list[AlertRule]:
    """An integration's alert rules, oldest first."""
    return list(db.session.scalars(select(AlertRule).where(
        AlertRule.integration_id == integration_id).order_by(AlertRule.id)))


def describe(rule: AlertRule) -> str:
    """A rule in words, as the card lists it."""
    if rule.kind == AlertKind.STUCK.value:
        where = f"state {rule.state}" if rule.state else "any active state"
        return f"Instances in {where} longer than {span(rule.threshold * 3600)}"
    if rule.kind == AlertKind.FAILED_EVENTS.value:
        return f"More than {int(rule.threshold)} failed events in the last hour"
    return KIND_LABELS.get(rule.kind, rule.kind)


def _lines(value: Any) -> list[str]:
    """Recipients typed one a line, or separated by commas or semicolons (or a JSON list)."""
    if isinstance(value, list):
        value = "\n".join(str(v) for v in value)
    text = str(value or "").replace(";", "\n").replace(",", "\n")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _list_errors(value: Any, field: str) -> list[RuleError]:
    """A recipients value must be text or a list of strings (API bodies send lists)."""
    if value is None or isinstance(value, str):
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return []
    return [RuleError(field, "must be a list of strings")]


def check_recipients(emails: Any, webhooks: Any) -> tuple[list[str], list[str],
                                                          list[RuleError]]:
    """The rule's e-mail recipients and subscriber URLs, checked by the action types
    themselves (so a rule accepts what a transition's action accepts)."""
    errors = _list_errors(emails, "notify_emails") + _list_errors(webhooks, "notify_webhooks")
    if errors:
        return [], [], errors
    addresses, urls = _lines(emails), _lines(webhooks)
    types = get_registry().action_types
    for name, field, values in ((EMAIL_TYPE, "notify_emails", addresses),
                                (WEBHOOK_TYPE, "notify_webhooks", urls)):
        if not values:
            continue
        if len(values) > MAX_RECIPIENTS:
            errors.append(RuleError(field, f"at most {MAX_RECIPIENTS} recipients"))
            continue
        kind = types.get(name)
        if kind is None:
            errors.append(RuleError(field, f"the {name} action type is not installed"))
            continue
        if name == EMAIL_TYPE:
            bad = [a for a in addresses if "{" in a or "}" in a or " " in a or len(a) > 254]
            errors.extend(RuleError(field, f"{a!r} is not an e-mail address") for a in bad)
            found = kind.validate({"to": ", ".join(addresses), "subject": "alert"})
        else:
            found = kind.validate({"urls": urls})
        errors.extend(RuleError(field, message) for _, message in found)
    return addresses, urls, errors


def _check_state(integration: Integration, kind: str, state: Any,
                 errors: list[RuleError]) -> str | None:
    """The rule's state code (upper-case; None for any state), or an error on `state`."""
    if state is not None and not isinstance(state, str):
        errors.append(RuleError("state", "must be a string"))
        return None
    state = (state or "").strip().upper() or None
    if state is not None and (len(state) > 20 or "\x00" in state):
        errors.append(RuleError("state", "must be a state code of up to 20 characters"))
    elif kind == AlertKind.STUCK.value and state and integration.workflow is not None and \
            integration.workflow.state(state) is None:
        errors.append(RuleError("state", f"is not a state of workflow "
                                         f"{integration.workflow.code}"))
    return state if kind == AlertKind.STUCK.value else None


def _check_threshold(kind: str, threshold: Any, errors: list[RuleError]) -> float:
    """The rule's threshold as a number (0 for a kind without one), or an error on it."""
    if isinstance(threshold, bool):
        value = -1.0
    else:
        try:
            value = float(threshold if threshold not in (None, "") else 0)
        except (TypeError, ValueError):
            value = -1.0
    if value != value:  # NaN from "nan" typed in a form
        value = -1.0
    if kind == AlertKind.STUCK.value and not 0 < value <= 24 * 365:
        errors.append(RuleError("threshold", "must be a number of hours above 0 (up to a "
                                             "year)"))
    if kind == AlertKind.FAILED_EVENTS.value and not (0 <= value <= 1_000_000
                                                      and value == int(value)):
        errors.append(RuleError("threshold", "must be a whole number from 0"))
    return value if kind != AlertKind.BC_EXPIRING.value else 0


def add_rule(integration: Integration, kind: str, state: str | None, threshold: Any,
             actor: str, notify_emails: Any = "", notify_webhooks: Any = "",
             enabled: Any = True) -> AlertRule:
    """Add a rule (validated: every error names its field); audited."""
    addresses, urls, errors = check_recipients(notify_emails, notify_webhooks)
    if kind not in KIND_LABELS:
        errors.append(RuleError("kind", "must be one of " + ", ".join(KIND_LABELS)))
    state = _check_state(integration, kind, state, errors)
    value = _check_threshold(kind, threshold, errors)
    if not isinstance(enabled, bool):
        errors.append(RuleError("enabled", "must be true or false"))
    if len(rules_of(integration.id)) >= MAX_RULES:
        errors.append(RuleError("kind", f"an integration has at most {MAX_RULES} rules"))
    if errors:
        raise ValidationFailed(errors)
    rule = AlertRule(integration_id=integration.id, kind=kind, state=state, threshold=value,
                     enabled=enabled, created_at=utcnow(), notify_emails="\n".join(addresses),
                     notify_webhooks="\n".join(urls))
    db.session.add(rule)
    db.session.flush()
    audit.record("create", "alert_rule", str(rule.id),
                 {"integration": integration.code, "rule": describe(rule),
                  "notify_emails": addresses, "notify_webhooks": urls,
                  "enabled": enabled}, who=actor)
    db.session.commit()
    return rule


def get_rule(rule_id: int) -> AlertRule:
    """One alert rule; NotFound when there is none."""
    # Rule ids are 32-bit integers: a larger number names no rule (PostgreSQL would refuse it).
    rule = db.session.get(AlertRule, rule_id) if 1 <= rule_id <= 2**31 - 1 else None
    if rule is None:
        raise NotFound(f"alert rule {rule_id} does not exist")
    return rule


EDITABLE = ("state", "threshold", "notify_emails", "notify_webhooks", "enabled")


def _snapshot(rule: AlertRule) -> dict[str, Any]:
    return {"state": rule.state, "threshold": rule.threshold, "enabled": rule.enabled,
            "notify_emails": _lines(rule.notify_emails),
            "notify_webhooks": _lines(rule.notify_webhooks)}


def update_rule(rule_id: int, changes: dict[str, Any], actor: str) -> AlertRule:
    """Change a rule's state, threshold, recipients and/or enabled (its kind is fixed: a rule
    of another kind is another rule). Validated first, then one transaction; audited.

    Disabling a rule resolves its open alert (nothing evaluates it any more); the recipients
    are not told, since the condition did not end.
    """
    rule = get_rule(rule_id)
    errors = [RuleError(k, "cannot be changed; remove the rule and add one of the other kind"
                        if k == "kind" else "unknown field") for k in changes if k not in EDITABLE]
    before = _snapshot(rule)
    emails = changes.get("notify_emails", rule.notify_emails)
    webhooks = changes.get("notify_webhooks", rule.notify_webhooks)
    addresses, urls, found = check_recipients(emails, webhooks)
    errors.extend(found)
    state = _check_state(rule.integration, rule.kind, changes.get("state", rule.state), errors)
    value = _check_threshold(rule.kind, changes.get("threshold", rule.threshold), errors)
    enabled = changes.get("enabled", rule.enabled)
    if not isinstance(enabled, bool):
        errors.append(RuleError("enabled", "must be true or false"))
    if errors:
        raise ValidationFailed(errors)
    rule.state, rule.threshold, rule.enabled = state, value, enabled
    rule.notify_emails, rule.notify_webhooks = "\n".join(addresses), "\n".join(urls)
    after = _snapshot(rule)
    lines = audit.field_changes(before, after)
    if not lines:
        return rule
    if before["enabled"] and not enabled:
        now = utcnow()
        for alert in db.session.scalars(select(Alert).where(Alert.rule_id == rule.id,
                                                            Alert.resolved_at.is_(None))):
            alert.resolved_at = now
            audit.record("alert_resolve", "alert", str(alert.id),
                         {"integration": rule.integration.code, "message": alert.message,
                          "reason": "rule disabled"}, who=actor)
    audit.record("update", "alert_rule", str(rule.id),
                 {"integration": rule.integration.code, "rule": describe(rule),
                  "changes": lines}, who=actor)
    db.session.commit()
    return rule


def rule_to_dict(rule: AlertRule) -> dict[str, Any]:
    """A rule as the API shows it."""
    return {"id": rule.id, "integration": rule.integration.code, "kind": rule.kind,
            "description": describe(rule), "state": rule.state, "threshold": rule.threshold,
            "enabled": rule.enabled, "notify_emails": _lines(rule.notify_emails),
            "notify_webhooks": _lines(rule.notify_webhooks),
            "created_at": rule.created_at.isoformat() if rule.created_at else None}


def delete_rule(rule_id: int, actor: str) -> Integration:
    """Remove a rule and its alerts; audited. Answers the rule's integration."""
    rule = get_rule(rule_id)
    integration = rule.integration
    audit.record("delete", "alert_rule", str(rule_id),
                 {"integration": integration.code, "rule": describe(rule)}, who=actor)
    db.session.delete(rule)
    db.session.commit()
    return integration


def _plain(text: str) -> str:
    # send_email fills {placeholders} in its subject and body; an alert's text is literal.
    return text.replace("{", "(").replace("}", ")")


def notification_rows(rule: AlertRule, alert: Alert, event: str,
                      now: datetime) -> list[dict[str, Any]]:
    """The outbox rows telling the rule's recipients that `alert` opened or resolved."""
    types = get_registry().action_types
    integration = rule.integration
    data = {"event": event, "id": alert.id, "rule_id": rule.id, "kind": rule.kind,
            "rule": describe(rule), "message": alert.message, "value": alert.value,
            "opened_at": alert.opened_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None}
    context = {"instance_id": None, "workflow": "", "integration": integration.code,
               "record_key": None, "run_id": None, "transition": "", "from_state": None,
               "to_state": "", "vars": {}, "data": {}, "alert": data}
    configs: list[tuple[str, dict[str, Any]]] = []
    addresses, urls = _lines(rule.notify_emails), _lines(rule.notify_webhooks)
    if addresses and EMAIL_TYPE in types:
        subject = f"[wfapp] Alert {event} on {integration.code}: {describe(rule)}"
        body = (f"Alert #{alert.id} on integration {integration.code} {event}.\n\n"
                f"Rule: {describe(rule)}\n{alert.message}\nOpened: {data['opened_at']}\n"
                + (f"Resolved: {data['resolved_at']}\n" if data["resolved_at"] else ""))
        configs.append((EMAIL_TYPE, {"to": ", ".join(addresses), "subject": _plain(subject),
                                     "body": _plain(body)}))
    if urls and WEBHOOK_TYPE in types:
        configs.extend((WEBHOOK_TYPE, c) for c in types[WEBHOOK_TYPE].split({"urls": urls}))
    return [{"instance_id": None, "workflow_id": None, "integration_id": rule.integration_id,
             "alert_id": alert.id, "transition": "", "position": position,
             "action_id": f"alert.{event}", "type": name, "config": config,
             "context": context, "status": ActionStatus.PENDING.value, "attempts": 0,
             "max_attempts": types[name].max_attempts(config), "next_attempt_at": now,
             "lease_until": None, "leased_by": "", "idempotency_key": uuid.uuid4().hex,
             "last_status_code": None, "last_error": "", "request": {}, "response": None,
             "event_id": None, "created_at": now, "updated_at": now, "finished_at": None}
            for position, (name, config) in enumerate(configs)]


def _notify(rule: AlertRule, alert: Alert, event: str, now: datetime) -> None:
    rows = notification_rows(rule, alert, event, now)
    if rows:
        # Same transaction as the alert's change; delivered once it commits, never here.
        outbox.write_outbox(db.session.connection(), rows)


def deliveries_of(alert_ids: list[int]) -> dict[int, list[ActionDelivery]]:
    """The notifications of these alerts, oldest first, by alert (for the Alerts page)."""
    found: dict[int, list[ActionDelivery]] = {}
    if not alert_ids:
        return found
    for row in db.session.scalars(select(ActionDelivery).where(
            ActionDelivery.alert_id.in_(alert_ids)).order_by(ActionDelivery.id)):
        found.setdefault(row.alert_id or 0, []).append(row)
    return found


@dataclass
class Finding:
    """What a rule found at one evaluation."""

    holds: bool
    value: float
    message: str


def _stuck(rule: AlertRule, now: datetime) -> Finding:
    cutoff = now - timedelta(hours=rule.threshold)
    query = select(func.count()).select_from(Instance).where(
        Instance.integration_id == rule.integration_id, Instance.active.is_(True),
        Instance.entered_state_at < cutoff)
    if rule.state:
        query = query.where(Instance.state == rule.state)
    count = db.session.scalar(query) or 0
    where = f"in {rule.state}" if rule.state else "in their state"
    return Finding(count > 0, count, f"{count} instances {where} longer than "
                                     f"{span(rule.threshold * 3600)}")


def _failed(rule: AlertRule, now: datetime) -> Finding:
    count = db.session.scalar(select(func.count()).select_from(Event).where(
        Event.integration_id == rule.integration_id,
        Event.status == EventStatus.FAILED.value,
        Event.received_at >= now - timedelta(hours=1))) or 0
    return Finding(count > rule.threshold, count,
                   f"{count} failed events in the last hour (more than {int(rule.threshold)})")


def _bc(rule: AlertRule, now: datetime) -> Finding:
    state = plugin_state.get(rule.integration_id, *BC_STATE) or {}
    if not state.get("wanted"):
        return Finding(False, 0, "no subscription is wanted")
    if not state.get("id") or not state.get("expires_at"):
        return Finding(True, 0, "the Business Central subscription is missing")
    try:
        expires = datetime.fromisoformat(str(state["expires_at"]).replace("Z", "+00:00"))
    except ValueError:
        return Finding(True, 0, "the Business Central subscription's expiry is unreadable")
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=now.tzinfo)
    left = (expires - now).total_seconds()
    if left <= 0:
        return Finding(True, left / 3600, "the Business Central subscription has expired")
    return Finding(left < 24 * 3600, left / 3600,
                   f"the Business Central subscription expires in {span(left)}")


CHECKS = {AlertKind.STUCK.value: _stuck, AlertKind.FAILED_EVENTS.value: _failed,
          AlertKind.BC_EXPIRING.value: _bc}


def evaluate(now: datetime | None = None) -> dict[str, int]:
    """Check every enabled rule once: open, refresh or resolve its alert. One transaction per
    rule, so one broken rule does not hold back the others."""
    now = now or utcnow()
    counts = {"opened": 0, "resolved": 0, "open": 0}
    rule_ids = list(db.session.scalars(select(AlertRule.id).where(AlertRule.enabled.is_(True))
                                       .order_by(AlertRule.id)))
    for rule_id in rule_ids:
        rule = db.session.get(AlertRule, rule_id)
        if rule is None:
            continue
        finding = CHECKS[rule.kind](rule, now)
        alert = db.session.scalar(select(Alert).where(Alert.rule_id == rule.id,
                                                      Alert.resolved_at.is_(None)))
        if finding.holds and alert is None:
            alert = Alert(rule_id=rule.id, integration_id=rule.integration_id, kind=rule.kind,
                          message=finding.message, value=finding.value, opened_at=now,
                          last_seen_at=now)
            db.session.add(alert)
            db.session.flush()
            audit.record("alert_open", "alert", str(alert.id),
                         {"integration": rule.integration.code, "message": finding.message},
                         who="scheduler")
            _notify(rule, alert, "opened", now)
            counts["opened"] += 1
        elif finding.holds and alert is not None:
            alert.message, alert.value, alert.last_seen_at = finding.message, finding.value, now
        elif alert is not None:
            alert.resolved_at = now
            audit.record("alert_resolve", "alert", str(alert.id),
                         {"integration": rule.integration.code, "message": alert.message},
                         who="scheduler")
            _notify(rule, alert, "resolved", now)
            counts["resolved"] += 1
        counts["open"] += int(finding.holds)
        try:
            db.session.commit()
        except IntegrityError:  # an overlapping evaluation opened this rule's alert first
            db.session.rollback()
    return counts


def open_count() -> int:
    """How many alerts are open (the header badge)."""
    return db.session.scalar(select(func.count()).select_from(Alert)
                             .where(Alert.resolved_at.is_(None))) or 0


def list_alerts(open_only: bool = False, limit: int = 200) -> list[Alert]:
    """Alerts, open ones first, newest first."""
    query = select(Alert)
    if open_only:
        query = query.where(Alert.resolved_at.is_(None))
    return list(db.session.scalars(query.order_by(Alert.resolved_at.is_not(None),
                                                  Alert.id.desc()).limit(limit)))
