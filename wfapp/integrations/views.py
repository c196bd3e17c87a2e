"""The Integrations list and the integration card."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..models import Integration, Role
from ..security import requires_role
from ..services.errors import NotFound, ValidationFailed
from ..services.integrations import (
    clear_secret,
    create_integration,
    get_integration,
    list_integrations,
    update_integration,
)
from ..services.registry import get_registry
from ..services.runs import list_runs
from ..services.workflows import list_workflows
from . import bp
from .forms import IntegrationForm


@bp.route("/")
def index() -> str:
    """The Integrations list, the start page."""
    return render_template("integrations/index.html", rows=list_integrations())


def _form(integration: Integration | None, formdata: Any = None) -> IntegrationForm:
    form = IntegrationForm(formdata=formdata, obj=integration)
    form.workflow_code.choices = [("", "(none)")] + [
        (w.code, f"{w.code} · {w.description}" if w.description else w.code)
        for w in list_workflows()]
    if formdata is None and integration is not None:
        form.workflow_code.data = integration.workflow.code if integration.workflow else ""
    return form


def _settings_from(form_data: Any) -> tuple[dict[str, Any], list[str]]:
    """The plugin settings posted as `set-<name>`; secrets left empty keep the stored value."""
    values: dict[str, Any] = {}
    cleared = []
    for name, field in get_registry().integration_settings.items():
        raw = (form_data.get(f"set-{name}") or "").strip()
        if field.type == "secret":
            if form_data.get(f"clear-{name}"):
                cleared.append(name)
            elif raw:
                values[name] = raw
        elif field.type == "bool":
            values[name] = f"set-{name}" in form_data
        else:
            values[name] = raw if raw else field.default
    return values, cleared


def _render(integration: Integration | None, form: IntegrationForm,
            setting_errors: dict[str, str], status: int = 200) -> tuple[str, int]:
    registry = get_registry()
    settings = integration.settings if integration is not None else {}
    return render_template(
        "integrations/card.html", integration=integration, form=form,
        settings=list(registry.integration_settings.values()), values=settings or {},
        setting_errors=setting_errors,
        runs=list_runs(integration, limit=10) if integration is not None else []), status


@bp.route("/new", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def new() -> tuple[str, int] | Response:
    """Create an integration."""
    form = _form(None, request.form if request.method == "POST" else None)
    if request.method == "POST" and form.validate():
        values, _ = _settings_from(request.form)
        fields = {"code": form.code.data, "description": form.description.data or "",
                  "workflow_code": form.workflow_code.data or None,
                  "instance_mode": form.instance_mode.data, "enabled": form.enabled.data,
                  "record_url_template": form.record_url_template.data or "", **values}
        try:
            integration = create_integration(fields)
        except ValidationFailed as error:
            return _render(None, form, _route(form, error), 422)
        flash(f"Integration {integration.code} created.", "success")
        return redirect(url_for("integrations.card", code=integration.code))
    return _render(None, form, {}, 422 if request.method == "POST" else 200)


def _route(form: IntegrationForm, error: ValidationFailed) -> dict[str, str]:
    """Put each error on its form field; plugin settings are returned by name."""
    setting_errors = {}
    for e in error.errors:
        field = getattr(form, e.path, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, e.message]
        else:
            setting_errors[e.path] = e.message
    return setting_errors


@bp.route("/<code>", methods=["GET", "POST"])
def card(code: str) -> tuple[str, int] | Response:
    """The integration card; POST saves it (author role)."""
    try:
        integration = get_integration(code)
    except NotFound as error:
        abort(404, description=error.message)
    if request.method == "GET":
        return _render(integration, _form(integration), {})
    return _save(integration)


@requires_role(Role.AUTHOR)
def _save(integration: Integration) -> tuple[str, int] | Response:
    form = _form(integration, request.form)
    form.code.data = integration.code  # the code cannot change
    if not form.validate():
        return _render(integration, form, {}, 422)
    values, cleared = _settings_from(request.form)
    fields = {"description": form.description.data or "",
              "workflow_code": form.workflow_code.data or None,
              "instance_mode": form.instance_mode.data, "enabled": form.enabled.data,
              "record_url_template": form.record_url_template.data or "", **values}
    try:
        update_integration(integration.code, fields)
    except ValidationFailed as error:
        return _render(get_integration(integration.code), form, _route(form, error), 422)
    for name in cleared:
        clear_secret(integration.code, name)
    flash(f"Integration {integration.code} saved.", "success")
    return redirect(url_for("integrations.card", code=integration.code))
