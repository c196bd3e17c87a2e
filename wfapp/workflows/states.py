"""The States sub-page of the Workflow Card: add, edit and delete states."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..choices import options
from ..engine import RuleError
from ..models import Role, Workflow
from ..security import requires_role
from ..services import workflows as service
from ..services.errors import NotFound, ValidationFailed
from . import bp
from .forms import DeleteForm, StateForm, route_errors
from .views import load, refusal


def _state_form(workflow: Workflow, state_code: str | None, formdata: Any = None) -> StateForm:
    """The state form; On Timeout Transition offers only the transitions leaving that state."""
    state = workflow.state(state_code) if state_code else None
    form = StateForm(formdata=formdata, obj=state)
    leaving = [t for t in workflow.transitions if state is not None and t.from_state == state.code]
    form.on_timeout_transition.choices = options([("", "(none)")] + [
        (t.code, f"{t.code} → {t.to_state}" + ("" if t.enabled else " (disabled)"))
        for t in leaving])
    if formdata is None and state is not None:
        form.on_timeout_transition.data = state.on_timeout_transition or ""
    return form


def _state_index(workflow: Workflow, state_code: str | None) -> int:
    """Where the edited state sits in the definition (a new one is appended)."""
    if state_code is None:
        return len(workflow.states)
    return next(i for i, s in enumerate(workflow.states) if s.code == state_code)


@bp.route("/<code>/states/new", methods=["GET", "POST"], defaults={"state_code": None})
@bp.route("/<code>/states/<state_code>/edit", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def state(code: str, state_code: str | None) -> Response | tuple[str, int]:
    """Add a state or edit one; rule errors come back on the fields they concern."""
    workflow = load(code)
    state_code = state_code.upper() if state_code else None
    if state_code is not None and workflow.state(state_code) is None:
        flash(f"State {state_code} does not exist in {workflow.code}.", "danger")
        return redirect(url_for("workflows.card", code=workflow.code) + "#states")
    posted = request.method == "POST"
    form = _state_form(workflow, state_code, request.form if posted else None)
    errors: list[RuleError] = []
    if posted and form.validate():
        fields = {
            "code": form.code.data, "description": form.description.data,
            "is_initial": form.is_initial.data, "is_final": form.is_final.data,
            "timeout_hours": form.timeout_hours.data,
            "on_timeout_transition": form.on_timeout_transition.data or None,
        }
        index = _state_index(workflow, state_code)
        try:
            service.save_state(workflow.code, state_code, fields)
        except ValidationFailed as error:
            errors = route_errors(error.errors, f"workflow.states[{index}]", form)
            errors = route_errors(errors, "workflow", form, {"states": "is_initial",
                                                             "initial_state": "is_initial"})
        except NotFound as error:
            flash(error.message, "danger")
            return redirect(url_for("workflows.card", code=workflow.code))
        else:
            flash(f"State {fields['code'].strip().upper()} saved.", "success")
            return redirect(url_for("workflows.card", code=workflow.code) + "#states")
    return render_template("workflows/state.html", workflow=workflow, form=form,
                           state_code=state_code, errors=errors,
                           count=service.state_instance_counts(workflow).get(state_code, 0)
                           if state_code else 0), 422 if posted else 200


@bp.post("/<code>/states/<state_code>/delete")
@requires_role(Role.AUTHOR)
def delete_state(code: str, state_code: str) -> Response:
    """Delete a state unless it is initial, used by transitions or holds instances."""
    workflow = load(code)
    if DeleteForm().validate_on_submit():
        try:
            service.delete_state(workflow.code, state_code)
        except (ValidationFailed, NotFound) as error:
            flash(refusal(f"State {state_code.upper()} not deleted", error), "danger")
        else:
            flash(f"State {state_code.upper()} deleted.", "success")
    return redirect(url_for("workflows.card", code=workflow.code) + "#states")
