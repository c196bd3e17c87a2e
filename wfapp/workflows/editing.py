"""The States and Transitions sub-pages: add, edit, delete rows; the transition detail page."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..engine import OPERATOR_LABELS, OPERATORS, RuleError, field_suggestions
from ..models import Role, Workflow
from ..security import requires_role
from ..services import workflows as service
from ..services.errors import NotFound, ValidationFailed
from ..services.registry import get_registry
from . import bp
from .forms import DeleteForm, StateForm, TransitionForm, route_errors
from .trigger_fields import (
    config_value_text,
    parse_captures,
    parse_conditions,
    parse_config,
    value_text,
)
from .views import load


def _state_form(workflow: Workflow, state_code: str | None, formdata: Any = None) -> StateForm:
    state = workflow.state(state_code) if state_code else None
    form = StateForm(formdata=formdata, obj=state)
    leaving = [t for t in workflow.transitions if state is None or t.from_state == state.code]
    form.on_timeout_transition.choices = [("", "(none)")] + [
        (t.code, f"{t.code} → {t.to_state}") for t in leaving]
    if formdata is None and state is not None:
        form.on_timeout_transition.data = state.on_timeout_transition or ""
    return form


def _state_index(workflow: Workflow, state_code: str | None) -> int:
    if state_code is None:
        return len(workflow.states)
    return next(i for i, s in enumerate(workflow.states) if s.code == state_code.upper())


@bp.route("/<code>/states/new", methods=["GET", "POST"], defaults={"state_code": None})
@bp.route("/<code>/states/<state_code>/edit", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def state(code: str, state_code: str | None) -> str | Response | tuple[str, int]:
    """Add a state or edit one."""
    workflow = load(code)
    if state_code is not None and workflow.state(state_code.upper()) is None:
        flash(f"State {state_code} does not exist.", "danger")
        return redirect(url_for("workflows.card", code=workflow.code))
    form = _state_form(workflow, state_code, request.form if request.method == "POST" else None)
    errors: list[RuleError] = []
    if request.method == "POST" and form.validate():
        fields = {
            "code": form.code.data, "description": form.description.data,
            "is_initial": form.is_initial.data, "is_final": form.is_final.data,
            "timeout_hours": float(form.timeout_hours.data)
            if form.timeout_hours.data is not None else None,
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
            flash(f"State {fields['code'].upper()} saved.", "success")
            return redirect(url_for("workflows.card", code=workflow.code) + "#states")
    status = 422 if request.method == "POST" else 200
    return render_template("workflows/state.html", workflow=workflow, form=form,
                           state_code=state_code, errors=errors), status


@bp.post("/<code>/states/<state_code>/delete")
@requires_role(Role.AUTHOR)
def delete_state(code: str, state_code: str) -> Response:
    """Delete a state unless it is initial, used by transitions or holds instances."""
    workflow = load(code)
    if DeleteForm().validate_on_submit():
        try:
            service.delete_state(workflow.code, state_code)
        except (ValidationFailed, NotFound) as error:
            flash(f"State not deleted: {error.message}", "danger")
        else:
            flash(f"State {state_code.upper()} deleted.", "success")
    return redirect(url_for("workflows.card", code=workflow.code) + "#states")


def _transition_form(workflow: Workflow, formdata: Any = None, obj: Any = None
                     ) -> TransitionForm:
    form = TransitionForm(formdata=formdata, obj=obj)
    states = [(s.code, f"{s.code} · {s.description}" if s.description else s.code)
              for s in workflow.states]
    form.from_state.choices = [s for s in states if not workflow.state(s[0]).is_final]
    form.to_state.choices = states
    form.trigger_type.choices = get_registry().choices()
    return form


@bp.route("/<code>/transitions/new", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def new_transition(code: str) -> str | Response | tuple[str, int]:
    """Add a transition; its trigger fields and conditions are set on its detail page."""
    workflow = load(code)
    form = _transition_form(workflow, request.form if request.method == "POST" else None)
    errors: list[RuleError] = []
    if request.method == "POST" and form.validate():
        fields = {k: getattr(form, k).data for k in (
            "code", "description", "from_state", "to_state", "trigger_type", "enabled")}
        fields["priority"] = form.priority.data or 0
        try:
            service.save_transition(workflow.code, None, fields)
        except ValidationFailed as error:
            place = f"workflow.transitions[{len(workflow.transitions)}]"
            errors = route_errors(error.errors, place, form, {"trigger_config": "trigger_type"})
        else:
            flash(f"Transition {fields['code'].upper()} added. Set its trigger fields and "
                  "conditions here.", "success")
            return redirect(url_for("workflows.transition", code=workflow.code,
                                    tcode=fields["code"].upper()))
    status = 422 if request.method == "POST" else 200
    return render_template("workflows/transition_new.html", workflow=workflow, form=form,
                           errors=errors), status


def _suggestions(workflow: Workflow) -> list[str]:
    variables = {name for t in workflow.transitions for name in (t.capture or {})}
    record_fields: set[str] = set()
    event_fields: set[str] = set()
    for t in workflow.transitions:
        for c in t.conditions or []:
            root, _, rest = str(c.get("field", "")).partition(".")
            if root == "record" and rest:
                record_fields.add(rest)
            elif root == "event" and rest:
                event_fields.add(rest)
    return field_suggestions(variables, record_fields, event_fields)


@bp.route("/<code>/transitions/<tcode>", methods=["GET", "POST"])
def transition(code: str, tcode: str) -> str | Response | tuple[str, int]:
    """The transition detail page: general fields, trigger fields, conditions, captures."""
    workflow = load(code)
    current = workflow.transition(tcode.upper())
    if current is None:
        flash(f"Transition {tcode} does not exist in {workflow.code}.", "danger")
        return redirect(url_for("workflows.card", code=workflow.code) + "#transitions")
    if request.method == "POST":
        return _save_transition(workflow, current)
    form = _transition_form(workflow, obj=current)
    return _render_transition(workflow, current, form, dict(current.trigger_config or {}),
                              list(current.conditions or []), dict(current.capture or {}), {},
                              [])


@requires_role(Role.AUTHOR)
def _save_transition(workflow: Workflow, current: Any) -> str | Response | tuple[str, int]:
    form = _transition_form(workflow, request.form)
    registry = get_registry()
    trigger = registry.trigger_types.get(form.trigger_type.data or "")
    config, config_errors = parse_config(trigger.fields if trigger else (), request.form)
    conditions = parse_conditions(request.form)
    capture = parse_captures(request.form)
    changed_type = request.form.get("action") == "change-type" or (
        form.trigger_type.data != current.trigger_type and not request.form.get("keep-type"))
    if changed_type:
        # Show the new trigger type's fields before saving anything.
        flash("Trigger type changed: fill in its fields, then Save.", "info")
        return _render_transition(workflow, current, form, {}, conditions, capture, {}, [], 200)
    errors: list[RuleError] = []
    if form.validate() and not config_errors:
        fields = {k: getattr(form, k).data for k in (
            "code", "description", "from_state", "to_state", "trigger_type", "enabled")}
        fields.update({"priority": form.priority.data or 0, "trigger_config": config,
                       "conditions": conditions, "capture": capture})
        index = next(i for i, t in enumerate(workflow.transitions) if t.code == current.code)
        try:
            service.save_transition(workflow.code, current.code, fields)
        except ValidationFailed as error:
            prefix = f"workflow.transitions[{index}]"
            for e in error.errors:
                if e.path.startswith(prefix + ".trigger_config."):
                    config_errors[e.path.rsplit(".", 1)[1]] = e.message
            rest = [e for e in error.errors if not e.path.startswith(prefix + ".trigger_config.")]
            errors = route_errors(rest, prefix, form)
        else:
            flash(f"Transition {fields['code'].upper()} saved.", "success")
            return redirect(url_for("workflows.transition", code=workflow.code,
                                    tcode=fields["code"].upper()))
    return _render_transition(workflow, current, form, config, conditions, capture,
                              config_errors, errors, 422)


def _render_transition(workflow: Workflow, current: Any, form: TransitionForm,
                       config: dict[str, Any], conditions: list[dict[str, Any]],
                       capture: dict[str, str], config_errors: dict[str, str],
                       errors: list[RuleError], status: int = 200) -> tuple[str, int]:
    registry = get_registry()
    trigger = registry.trigger_types.get(form.trigger_type.data or current.trigger_type)
    fields = [(f, config.get(f.name, f.default if f.type == "bool" else None))
              for f in (trigger.fields if trigger else ())]
    used_by = [s.code for s in workflow.states if s.on_timeout_transition == current.code]
    return render_template(
        "workflows/transition.html", workflow=workflow, transition=current, form=form,
        trigger=trigger, fields=fields, config_text=config_value_text,
        conditions=[{**c, "value_text": value_text(c.get("value"))} for c in conditions],
        capture=capture, config_errors=config_errors, errors=errors, operators=OPERATORS,
        operator_labels=OPERATOR_LABELS, suggestions=_suggestions(workflow), used_by=used_by,
        delete_form=DeleteForm()), status


@bp.post("/<code>/transitions/<tcode>/delete")
@requires_role(Role.AUTHOR)
def delete_transition(code: str, tcode: str) -> Response:
    """Delete a transition unless a state names it as its On Timeout Transition."""
    workflow = load(code)
    if DeleteForm().validate_on_submit():
        try:
            service.delete_transition(workflow.code, tcode)
        except (ValidationFailed, NotFound) as error:
            flash(f"Transition not deleted: {error.message}", "danger")
        else:
            flash(f"Transition {tcode.upper()} deleted.", "success")
    return redirect(url_for("workflows.card", code=workflow.code) + "#transitions")
