"""Alerts: the page, the header badge's count, adding and removing rules from the card."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.validators import AnyOf, Length, Optional

from ..choices import options
from ..instances.common import local_url
from ..models import Role
from ..security import actor_name, requires_role
from ..services import alerts as service
from ..services.errors import NotFound, ValidationFailed
from ..services.integrations import get_integration
from . import bp


class _RecipientsForm(FlaskForm):
    """Who a rule tells when its alert opens and resolves (shared by adding and editing)."""

    notify_emails = TextAreaField("Notify e-mail", validators=[Optional(), Length(max=6000)],
                                  description="Addresses told when the alert opens and "
                                  "resolves, one a line.")
    notify_webhooks = TextAreaField("Notify webhooks", validators=[Optional(),
                                                                   Length(max=42000)],
                                    description="Subscriber URLs, one a line; signed with the "
                                    "integration's outbound webhook secret.")


class RuleForm(_RecipientsForm):
    """A new alert rule on the integration card."""

    kind = SelectField("Alert when", choices=options(service.KIND_LABELS.items()),
                       validate_choice=False,
                       validators=[AnyOf(list(service.KIND_LABELS), message="choose a kind")])
    state = StringField("State", validators=[Optional(), Length(max=20)],
                        description="Instances in one state: its code (empty: any active "
                        "state).")
    threshold = StringField("Threshold", validators=[Optional(), Length(max=20)],
                            description="Hours in the state, or the number of failed events.")


class EditRuleForm(_RecipientsForm):
    """Change a rule: its state, threshold, recipients and whether it is checked."""

    state = StringField("State", validators=[Optional(), Length(max=20)],
                        description="A state code; empty: any active state.")
    threshold = StringField("Threshold", validators=[Optional(), Length(max=20)])
    enabled = BooleanField("Enabled", description="A disabled rule is not checked; its open "
                           "alert is resolved.")


THRESHOLD_HELP = {"stuck_in_state": "Hours in the state (fractions allowed), above 0.",
                  "failed_events": "Alert when more than this many events failed in the "
                                   "last hour (a whole number)."}


class DeleteRuleForm(FlaskForm):
    """Remove a rule: only the confirmation (and its CSRF token)."""


@bp.app_context_processor
def alert_badge() -> dict[str, Any]:
    """The number of open alerts for the header badge (logged-in pages only)."""
    if not getattr(current_user, "is_authenticated", False):
        return {}
    try:
        return {"open_alerts": service.open_count()}
    except Exception:  # noqa: BLE001 — an error page must still render without the badge
        return {}


@bp.route("/")
def index() -> str:
    """Open alerts first, then recently resolved ones."""
    alerts = service.list_alerts()
    return render_template("alerts/index.html", alerts=alerts, describe=service.describe,
                           deliveries=service.deliveries_of([a.id for a in alerts]))


@bp.post("/rules/<code>")
@requires_role(Role.AUTHOR)
def add_rule(code: str) -> Response:
    """Add an alert rule to an integration (from its card)."""
    try:
        integration = get_integration(code)
    except NotFound as error:
        abort(404, description=error.message)
    form = RuleForm()
    card = url_for("integrations.card", code=integration.code) + "#alert-rules"
    if not form.validate_on_submit():
        for name, messages in form.errors.items():
            flash(f"Rule not added: {form[name].label.text}: {'; '.join(messages)}", "danger")
        return redirect(card)
    try:
        rule = service.add_rule(integration, form.kind.data, form.state.data,
                                form.threshold.data, actor_name(),
                                form.notify_emails.data or "", form.notify_webhooks.data or "")
    except ValidationFailed as error:
        for e in error.errors:
            flash(f"Rule not added: {e.path}: {e.message}", "danger")
    else:
        flash(f"Alert rule added: {service.describe(rule)}. Rules are checked every "
              "minute.", "success")
    return redirect(card)


@bp.route("/rules/<int:rule_id>/edit", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def edit_rule(rule_id: int) -> Response | tuple[str, int]:
    """Change an alert rule; every refused field shows its error at its input."""
    try:
        rule = service.get_rule(rule_id)
    except NotFound as error:
        abort(404, description=error.message)
    form = EditRuleForm(data=None if request.method == "POST" else {
        "state": rule.state or "", "threshold": f"{rule.threshold:g}", "enabled": rule.enabled,
        "notify_emails": rule.notify_emails, "notify_webhooks": rule.notify_webhooks})
    form.threshold.description = THRESHOLD_HELP.get(rule.kind, "")
    card = url_for("integrations.card", code=rule.integration.code) + "#alert-rules"
    if request.method == "POST" and form.validate_on_submit():
        changes: dict[str, Any] = {"enabled": form.enabled.data,
                                   "notify_emails": form.notify_emails.data or "",
                                   "notify_webhooks": form.notify_webhooks.data or ""}
        if rule.kind == "stuck_in_state":
            changes["state"] = form.state.data or ""
        if rule.kind in THRESHOLD_HELP:
            changes["threshold"] = form.threshold.data or ""
        try:
            service.update_rule(rule.id, changes, actor_name())
        except ValidationFailed as error:
            for e in error.errors:
                field = getattr(form, e.path, None)
                if field is None:
                    field = form.threshold
                if not isinstance(field.errors, list):
                    field.errors = list(field.errors)
                field.errors.append(e.message)
        else:
            flash(f"Alert rule saved: {service.describe(rule)}.", "success")
            return redirect(card)
    status = 422 if request.method == "POST" else 200
    return render_template("alerts/rule.html", rule=rule, form=form, card=card,
                           text=service.describe(rule), kind=service.KIND_LABELS[rule.kind],
                           has_threshold=rule.kind in THRESHOLD_HELP), status


@bp.post("/rules/<int:rule_id>/delete")
@requires_role(Role.AUTHOR)
def delete_rule(rule_id: int) -> Response:
    """Remove an alert rule and its alerts."""
    if not DeleteRuleForm().validate_on_submit():
        flash("Not removed: the form expired; reload the page and try again.", "danger")
        return redirect(local_url(request.referrer, url_for("alerts.index")))
    try:
        integration = service.delete_rule(rule_id, actor_name())
    except NotFound as error:
        abort(404, description=error.message)
    flash("Alert rule removed.", "success")
    return redirect(url_for("integrations.card", code=integration.code) + "#alert-rules")
