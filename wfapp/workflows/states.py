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
from ..services.workflows import StateInUse
from . import bp
from .forms import DeleteForm, StateForm, route_errors
from .views import flash_checks, load, refusal


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


def _plan_url(workflow: Workflow, error: StateInUse, renamed: str | None = None) -> str:
    """The migration planner for the instances a rename or delete left on their version:
    from that version (the one holding most of them) to the version just saved."""
    source = max(error.counts, key=lambda v: (error.counts[v], v))
    target = load(workflow.code).latest_version
    extra: dict[str, Any] = {f"map_{error.state}": renamed} if renamed else {}
    return url_for("workflows.plan", code=workflow.code, from_version=source,
                   to_version=target, state=error.state, **extra)


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
    in_use: StateInUse | None = None
    keep = posted and request.form.get("keep_instances") == "1"
    if posted and form.validate():
        fields = {
            "code": form.code.data, "description": form.description.data,
            "is_initial": form.is_initial.data, "is_final": form.is_final.data,
            "timeout_hours": form.timeout_hours.data,
            "on_timeout_transition": form.on_timeout_transition.data or None,
        }
        index = _state_index(workflow, state_code)
        try:
            if keep and state_code is not None:
                # Asked for after a refusal: say where the instances are now, then plan.
                try:
                    service.save_state(workflow.code, state_code, fields)
                except StateInUse as error:
                    in_use = error
                    service.save_state(workflow.code, state_code, fields, keep_instances=True)
            else:
                service.save_state(workflow.code, state_code, fields)
        except StateInUse as error:
            in_use = error
            errors = route_errors(error.errors, f"workflow.states[{index}]", form)
        except ValidationFailed as error:
            in_use = None
            errors = route_errors(error.errors, f"workflow.states[{index}]", form)
            errors = route_errors(errors, "workflow", form, {"states": "is_initial",
                                                             "initial_state": "is_initial"})
        except NotFound as error:
            flash(error.message, "danger")
            return redirect(url_for("workflows.card", code=workflow.code))
        else:
            saved = fields["code"].strip().upper()
            flash(f"State {saved} saved.", "success")
            flash_checks(workflow.code)
            if in_use is not None:
                flash(f"{in_use.total} instance(s) stay in {in_use.state} on their version: "
                      "plan their migration below.", "info")
                return redirect(_plan_url(workflow, in_use, saved))
            return redirect(url_for("workflows.card", code=workflow.code) + "#states")
    counts = service.edited_version_counts(workflow, state_code) if state_code else {}
    return render_template("workflows/state.html", workflow=workflow, form=form,
                           state_code=state_code, errors=errors, in_use=in_use,
                           counts=counts), (409 if in_use else 422) if posted else 200


@bp.post("/<code>/states/<state_code>/delete")
@requires_role(Role.AUTHOR)
def delete_state(code: str, state_code: str) -> Response | tuple[str, int]:
    """Delete a state unless it is initial or used by transitions. While instances on the
    latest (or start) version are in it, say how many and offer to delete it anyway and plan
    their migration."""
    workflow = load(code)
    form = DeleteForm()
    if form.validate_on_submit():
        keep = request.form.get("keep_instances") == "1"
        in_use: StateInUse | None = None
        try:
            try:
                service.delete_state(workflow.code, state_code)
            except StateInUse as error:
                if not keep:
                    return render_template("workflows/state_in_use.html", workflow=workflow,
                                           error=error, form=form), 409
                in_use = error
                service.delete_state(workflow.code, state_code, keep_instances=True)
        except (ValidationFailed, NotFound) as error:
            flash(refusal(f"State {state_code.upper()} not deleted", error), "danger")
        else:
            flash(f"State {state_code.upper()} deleted.", "success")
            flash_checks(workflow.code)
            if in_use is not None:
                flash(f"{in_use.total} instance(s) stay in {in_use.state} on their version: "
                      "plan their migration below.", "info")
                return redirect(_plan_url(workflow, in_use))
    return redirect(url_for("workflows.card", code=workflow.code) + "#states")
