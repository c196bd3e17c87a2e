"""The Integrations list (the start page) and the integration card."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from ..engine import RuleError
from ..models import Integration, Role
from ..security import requires_role
from ..services import alerts, secrets
from ..services.errors import NotFound, ValidationFailed
from ..services.integrations import (
    attached_workflow,
    create_integration,
    get_integration,
    list_integrations,
    secret_settings_set,
    update_integration,
    workflow_choices,
)
from ..services.registry import get_registry
from ..services.runs import list_runs
from . import bp
from .forms import (
    NEW_SECRET_ROWS,
    IntegrationForm,
    PostedSettings,
    read_named_secrets,
    read_settings,
    setting_display,
)

Page = tuple[str, int] | Response


@bp.route("/")
def index() -> str:
    """The Integrations list, the start page."""
    return render_template("integrations/index.html", rows=list_integrations())


def load(code: str) -> Integration:
    """The integration with this code; 404 when there is none."""
    try:
        return get_integration(code)
    except NotFound as error:
        abort(404, description=error.message)


def _form(integration: Integration | None, formdata: Any = None) -> IntegrationForm:
    form = IntegrationForm(formdata=formdata, obj=integration)
    form.workflow_code.choices = [SelectChoice("", "(none)"),
                                  *(SelectChoice(c, label) for c, label in workflow_choices())]
    if formdata is None and integration is not None:
        form.workflow_code.data = integration.workflow.code if integration.workflow else ""
    return form


def _fields(form: IntegrationForm, posted: PostedSettings) -> dict[str, Any]:
    """The service's input: the form's fields and the typed plugin settings."""
    return {"description": form.description.data or "",
            "workflow_code": form.workflow_code.data or None,
            "instance_mode": form.instance_mode.data, "enabled": bool(form.enabled.data),
            "record_url_template": (form.record_url_template.data or "").strip(),
            **posted.values}


def _route(form: IntegrationForm, errors: list[RuleError]) -> dict[str, str]:
    """Put each error on its form field; the rest (plugin settings) are returned by name."""
    others: dict[str, str] = {}
    for error in errors:
        field = getattr(form, error.path, None)
        if field is not None and hasattr(field, "errors") and error.path != "meta":
            field.errors = [*field.errors, error.message]
        else:
            others[error.path] = f"{others[error.path]}; {error.message}" \
                if error.path in others else error.message
    return others


def _render(integration: Integration | None, form: IntegrationForm,
            posted: PostedSettings | None = None, setting_errors: dict[str, str] | None = None,
            status: int = 200) -> Page:
    settings = list(get_registry().integration_settings.values())
    stored = (integration.settings or {}) if integration is not None else {}
    shown = setting_display(settings, stored)
    if posted is not None:  # after a failed save, show what was typed, never a secret
        shown.update(posted.shown)
    return render_template(
        "integrations/card.html", integration=integration, form=form, settings=settings,
        shown=shown,
        secrets_set=set(secret_settings_set(integration)) if integration is not None else set(),
        secret_names=secrets.names(integration.id, secrets.NAMED) if integration else [],
        new_secret_rows=NEW_SECRET_ROWS,
        secret_errors=[(k, v) for k, v in (setting_errors or {}).items()
                       if k == "secrets" or k.startswith("secrets.")],
        setting_errors=setting_errors or {}, failed=status == 422,
        workflow=attached_workflow(integration) if integration is not None else None,
        runs=list_runs(integration, limit=10) if integration is not None else [],
        alert_rules=[(r, alerts.describe(r)) for r in alerts.rules_of(integration.id)]
        if integration is not None else [], alert_kinds=alerts.KIND_LABELS,
        panels=_panels(integration) if integration is not None else []), status


def _panels(integration: Integration) -> list[tuple[Any, Markup]]:
    """Each plugin panel rendered for this integration; a failing panel says so, never a 500."""
    from ..plugin_api import _info

    info = _info(integration)
    out = []
    for panel in get_registry().panels:
        try:
            html = Markup(panel.render(info))
        except Exception:  # a plugin's bug must not take the card down
            current_app.logger.exception("panel %s failed", panel.name)
            html = Markup('<p class="text-danger small">This panel could not be shown; '
                          "the error is in the server log.</p>")
        out.append((panel, html))
    return out


@bp.route("/new", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def new() -> Page:
    """Create an integration."""
    if request.method == "GET":
        return _render(None, _form(None))
    form = _form(None, request.form)
    posted = read_settings(request.form, get_registry().integration_settings.values())
    read_named_secrets(request.form, posted)
    if not form.validate() or posted.errors:
        return _render(None, form, posted, posted.errors, 422)
    try:
        integration = create_integration({"code": form.code.data, **_fields(form, posted)})
    except ValidationFailed as error:
        return _render(None, form, posted, _route(form, error.errors), 422)
    flash(f"Integration {integration.code} created.", "success")
    return redirect(url_for("integrations.card", code=integration.code))


@bp.get("/<code>")
def card(code: str) -> Page:
    """The integration card: its fields, plugin settings, attached workflow and recent runs."""
    integration = load(code)
    return _render(integration, _form(integration))


@bp.post("/<code>")
@requires_role(Role.AUTHOR)
def save(code: str) -> Page:
    """Save the integration card; the code itself cannot change."""
    integration = load(code)
    form = _form(integration, request.form)
    form.code.data = integration.code  # read-only: whatever was posted, the code stays
    posted = read_settings(request.form, get_registry().integration_settings.values())
    read_named_secrets(request.form, posted)
    if not form.validate() or posted.errors:
        return _render(integration, form, posted, posted.errors, 422)
    try:
        update_integration(integration.code, _fields(form, posted), clear=posted.clear)
    except ValidationFailed as error:
        return _render(load(code), form, posted, _route(form, error.errors), 422)
    flash(f"Integration {integration.code} saved.", "success")
    return redirect(url_for("integrations.card", code=integration.code))
