"""The Simulate page of the Workflow Card, and saving its scenarios as test cases."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..models import Role, Workflow
from ..security import requires_role
from ..services import checks
from ..services.errors import NotFound, ValidationFailed
from ..services.registry import get_registry
from . import bp
from .forms import DeleteForm, SaveScenarioForm, SimulateForm
from .views import load

EXAMPLE_STEPS = [
    '{"event": {"trigger_type": "on_webhook", "type": "order.paid", "payload": {"total": 5}}}',
    '{"fire": "APPROVE"}',
    '{"advance_hours": 24}',
    '{"action_result": {"action": "submit", "outcome": "failed", "status_code": 500}}',
]


def _render(workflow: Workflow, form: SimulateForm, result: dict[str, Any] | None = None,
            errors: list[RuleError] | None = None, save_form: SaveScenarioForm | None = None,
            status: int = 200) -> tuple[str, int]:
    """The page: the scenario form, then the step-by-step result when there is one."""
    if save_form is None:
        save_form = SaveScenarioForm(formdata=None, record_key=form.record_key.data,
                                     record_data=form.record_data.data, steps=form.steps.data)
    return render_template(
        "workflows/simulate.html", workflow=workflow, form=form, result=result,
        errors=errors or [], save_form=save_form, examples=EXAMPLE_STEPS,
        trigger_types=get_registry().trigger_types), status


@bp.route("/<code>/simulate", methods=["GET", "POST"])
def simulate(code: str) -> tuple[str, int]:
    """Run a scenario through the workflow step by step; nothing is written."""
    workflow = load(code)
    if request.method == "GET":
        prefill: dict[str, Any] = {}
        name = request.args.get("scenario")
        if name:
            try:
                prefill = checks.scenario_as_text(checks.saved_scenario(workflow.code, name))
            except NotFound as error:
                abort(404, description=error.message)
        form = SimulateForm(formdata=None, **prefill)
        return _render(workflow, form)
    form = SimulateForm()
    if not form.validate_on_submit():
        return _render(workflow, form, status=422)
    try:
        body = checks.scenario_from_text(form.record_key.data, form.record_data.data,
                                         form.steps.data)
        result = checks.simulate_code(workflow.code, body)
    except ValidationFailed as error:
        return _render(workflow, form, errors=error.errors, status=422)
    return _render(workflow, form, result)


@bp.post("/<code>/scenarios")
@requires_role(Role.AUTHOR)
def save_scenario(code: str) -> Response | tuple[str, int]:
    """Save the scenario as a test case expecting the state and variables it ends in now."""
    workflow = load(code)
    form = SaveScenarioForm()
    if form.validate_on_submit():
        try:
            body = checks.scenario_from_text(form.record_key.data, form.record_data.data,
                                             form.steps.data)
            checks.save_scenario(workflow.code, form.name.data, body)
        except ValidationFailed as error:
            simulate_form = SimulateForm(formdata=None, record_key=form.record_key.data,
                                         record_data=form.record_data.data,
                                         steps=form.steps.data)
            return _render(workflow, simulate_form, errors=error.errors, save_form=form,
                           status=422)
        flash(f"Scenario {form.name.data.strip()} saved; it runs on every save of "
              f"{workflow.code}.", "success")
        return redirect(url_for("workflows.card", code=workflow.code) + "#scenarios")
    simulate_form = SimulateForm(formdata=None, record_key=form.record_key.data,
                                 record_data=form.record_data.data, steps=form.steps.data)
    return _render(workflow, simulate_form, save_form=form, status=422)


@bp.post("/<code>/scenarios/delete")
@requires_role(Role.AUTHOR)
def delete_scenario(code: str) -> Response:
    """Delete a saved scenario (named by the form's `name`)."""
    workflow = load(code)
    if DeleteForm().validate_on_submit():
        name = request.form.get("name", "")
        try:
            checks.delete_scenario(workflow.code, name)
        except NotFound as error:
            flash(error.message, "danger")
        else:
            flash(f"Scenario {name} deleted.", "success")
    else:
        flash("The form expired; try again.", "warning")
    return redirect(url_for("workflows.card", code=workflow.code) + "#scenarios")
