"""The Transitions sub-page: add a transition, its detail page (trigger fields, conditions,
captured variables) and delete."""

from __future__ import annotations

import json
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response
from wtforms import Form

from ..choices import options
from ..engine import OPERATOR_LABELS, OPERATORS, RuleError, field_suggestions
from ..models import Role, Transition, Workflow
from ..security import requires_role
from ..services import workflows as service
from ..services.errors import NotFound, ValidationFailed
from ..services.registry import get_registry
from ..triggers import TriggerType
from . import action_fields, bp
from .forms import DeleteForm, TransitionForm, add_error, route_errors
from .trigger_fields import (
    config_from_form,
    parse_captures,
    parse_conditions,
    trigger_form,
    value_text,
)
from .views import flash_checks, load, refusal

GENERAL = ("code", "description", "from_state", "to_state", "trigger_type", "enabled",
           "priority")


def _transition_form(workflow: Workflow, formdata: Any = None, obj: Any = None
                     ) -> TransitionForm:
    """The general fields, with this workflow's states and the registered trigger types."""
    form = TransitionForm(formdata=formdata, obj=obj)
    states = [(s.code, f"{s.code} · {s.description}" if s.description else s.code)
              for s in workflow.states]
    finals = {s.code for s in workflow.states if s.is_final}
    form.from_state.choices = options(s for s in states if s[0] not in finals)
    form.to_state.choices = options(states)
    form.trigger_type.choices = options(get_registry().choices())
    if not form.trigger_type.data and form.trigger_type.choices:
        form.trigger_type.data = form.trigger_type.choices[0].value
    return form


def _trigger(name: str | None) -> TriggerType | None:
    return get_registry().trigger_types.get(name or "")


def _type_changed(form: TransitionForm) -> bool:
    """True when the page shows another trigger type's fields than the one now chosen."""
    shown = request.form.get("fields-for") or form.trigger_type.data
    return request.form.get("action") == "change-type" or shown != form.trigger_type.data


def _carried_config(form: TransitionForm, stored: dict[str, Any]) -> Form:
    """The newly chosen type's fields, keeping values typed for fields of the same name."""
    old = _trigger(request.form.get("fields-for"))
    new = _trigger(form.trigger_type.data)
    values: dict[str, Any] = {}
    if old is not None:
        old_form = trigger_form(old, request.form, stored)
        old_form.validate()
        values = config_from_form(old, old_form, stored)
    names = {f.name for f in new.fields} if new else set()
    return trigger_form(new, config={k: v for k, v in values.items() if k in names})


def _trigger_templates(current: str | None, config_form: Form
                       ) -> dict[str, tuple[TriggerType, Form]]:
    """Every trigger type's field form, for switching types in the browser without a reload."""
    return {name: (trigger, config_form if name == current else trigger_form(trigger))
            for name, trigger in get_registry().trigger_types.items()}


def _place_errors(errors: list[RuleError], prefix: str, form: TransitionForm, config_form: Form,
                  conditions: list[dict[str, Any]], capture_errors: dict[str, str]
                  ) -> list[RuleError]:
    """Put each rule error on its field, condition row or variable row; return the rest."""
    rest = []
    for error in errors:
        tail = error.path[len(prefix) + 1:] if error.path.startswith(prefix + ".") else None
        if tail and tail.startswith("trigger_config.") and \
                tail.split(".", 1)[1] in config_form._fields:
            add_error(config_form[tail.split(".", 1)[1]], error.message)
        elif tail and tail.startswith("conditions["):
            index, _, part = tail[len("conditions["):].partition("].")
            if index.isdigit() and int(index) < len(conditions):
                conditions[int(index)]["errors"][part or "field"] = error.message
            else:
                rest.append(error)
        elif tail and tail.startswith("capture."):
            capture_errors[tail.split(".", 1)[1]] = error.message
        else:
            rest.append(error)
    return route_errors(rest, prefix, form, {"trigger_config": "trigger_type"})


def _suggestions(workflow: Workflow) -> list[str]:
    """Paths for the conditions editor: variables, record fields, event fields in use."""
    variables = {name for t in workflow.transitions for name in (t.capture or {})}
    record_fields = set(service.sample_record_fields(workflow))
    event_fields: set[str] = set()
    for t in workflow.transitions:
        for c in t.conditions or []:
            root, _, rest = str(c.get("field", "")).partition(".")
            if root == "record" and rest:
                record_fields.add(rest)
            elif root == "event" and rest:
                event_fields.add(rest)
    return field_suggestions(variables, record_fields, event_fields)


@bp.route("/<code>/transitions/new", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def new_transition(code: str) -> Response | tuple[str, int]:
    """Add a transition with its trigger fields; conditions follow on its detail page."""
    workflow = load(code)
    posted = request.method == "POST"
    form = _transition_form(workflow, request.form if posted else None)
    trigger = _trigger(form.trigger_type.data)
    errors: list[RuleError] = []
    failed = posted and not _type_changed(form)
    if posted and not failed:
        config_form = _carried_config(form, {})
    elif posted:
        config_form = trigger_form(trigger, request.form)
        if form.validate() & config_form.validate():
            fields = {name: getattr(form, name).data for name in GENERAL}
            fields["trigger_config"] = config_from_form(trigger, config_form)
            try:
                service.save_transition(workflow.code, None, fields)
            except ValidationFailed as error:
                place = f"workflow.transitions[{len(workflow.transitions)}]"
                errors = _place_errors(error.errors, place, form, config_form, [], {})
            else:
                tcode = fields["code"].strip().upper()
                flash(f"Transition {tcode} added. Add its conditions here if it needs any.",
                      "success")
                flash_checks(workflow.code)
                return redirect(url_for("workflows.transition", code=workflow.code,
                                        tcode=tcode))
    else:
        config_form = trigger_form(trigger)
    return render_template(
        "workflows/transition_new.html", workflow=workflow, form=form, trigger=trigger,
        config_form=config_form, templates=_trigger_templates(form.trigger_type.data, config_form),
        errors=errors, failed=failed), 422 if failed else 200


@bp.route("/<code>/transitions/<tcode>", methods=["GET", "POST"])
def transition(code: str, tcode: str) -> Response | tuple[str, int]:
    """The transition detail page: general fields, trigger fields, conditions, captures."""
    workflow = load(code)
    current = workflow.transition(tcode.upper())
    if current is None:
        flash(f"Transition {tcode.upper()} does not exist in {workflow.code}.", "danger")
        return redirect(url_for("workflows.card", code=workflow.code) + "#transitions")
    if request.method == "POST":
        return _save_transition(workflow, current)
    form = _transition_form(workflow, obj=current)
    config_form = trigger_form(_trigger(current.trigger_type), config=current.trigger_config)
    return _render_transition(workflow, current, form, config_form,
                              list(current.conditions or []), dict(current.capture or {}))


def _ops(rows: list[action_fields.ActionRow]) -> tuple[str, int | None]:
    """An action-editor button (add, remove, move, add a row) or a changed action type."""
    ops = [v for v in request.form.getlist("act-op") if v]
    types = get_registry().action_types
    if ops:
        return action_fields.apply_op(ops[-1], rows, request.form.get("act-new-type", ""),
                                      types)
    if action_fields.type_changed(request.form):
        return action_fields.apply_op("refresh", rows, "", types)
    return "", None


@requires_role(Role.AUTHOR)
def _save_transition(workflow: Workflow, current: Transition) -> Response | tuple[str, int]:
    """Save every field of the detail page at once; a type change first shows its fields, and
    the action editor's buttons change the list on the page without saving."""
    form = _transition_form(workflow, request.form)
    stored = dict(current.trigger_config or {})
    conditions = parse_conditions(request.form)
    capture = parse_captures(request.form)
    types = get_registry().action_types
    # Without the editor's inputs (an older page, a script) the stored actions are kept.
    editing = "act-count" in request.form
    rows = action_fields.read_rows(request.form, types) if editing else \
        action_fields.rows_from_actions(current.actions, types)
    if _type_changed(form):
        flash("Trigger type changed: fill in its fields, then Save.", "info")
        return _render_transition(workflow, current, form, _carried_config(form, stored),
                                  conditions, capture, status=200, rows=rows)
    trigger = _trigger(form.trigger_type.data)
    keep = stored if form.trigger_type.data == current.trigger_type else {}
    config_form = trigger_form(trigger, request.form, keep)
    done, focus = _ops(rows) if editing else ("", None)
    if done:
        flash(f"{done}. Nothing is saved until you press Save.", "info")
        return _render_transition(workflow, current, form, config_form, conditions, capture,
                                  status=200, rows=rows, focus=focus)
    errors: list[RuleError] = []
    capture_errors: dict[str, str] = {}
    condition_rows = [dict(c, errors={}) for c in conditions]
    actions = action_fields.to_actions(rows, types)
    if form.validate() & config_form.validate() and not action_fields.has_errors(rows):
        fields = {name: getattr(form, name).data for name in GENERAL}
        fields.update(trigger_config=config_from_form(trigger, config_form, keep),
                      conditions=conditions, capture=capture)
        if editing:
            fields["actions"] = actions
        index = next(i for i, t in enumerate(workflow.transitions) if t.code == current.code)
        try:
            service.save_transition(workflow.code, current.code, fields)
        except ValidationFailed as error:
            prefix = f"workflow.transitions[{index}]"
            rest = action_fields.place_errors(error.errors, prefix, rows)
            errors = _place_errors(rest, prefix, form, config_form, condition_rows,
                                   capture_errors)
        else:
            tcode = fields["code"].strip().upper()
            flash(f"Transition {tcode} saved.", "success")
            flash_checks(workflow.code)
            return redirect(url_for("workflows.transition", code=workflow.code, tcode=tcode))
    return _render_transition(workflow, current, form, config_form, condition_rows, capture,
                              capture_errors, errors, 422, rows=rows)


def _render_transition(workflow: Workflow, current: Transition, form: TransitionForm,
                       config_form: Form, conditions: list[dict[str, Any]],
                       capture: dict[str, str], capture_errors: dict[str, str] | None = None,
                       errors: list[RuleError] | None = None, status: int = 200,
                       rows: list[action_fields.ActionRow] | None = None,
                       focus: int | None = None) -> tuple[str, int]:
    """The detail page with whatever the user typed and the errors placed on their rows."""
    types = get_registry().action_types
    if rows is None:
        rows = action_fields.rows_from_actions(current.actions, types)
    used_by = [s.code for s in workflow.states if s.on_timeout_transition == current.code]
    condition_rows = [{**c, "errors": c.get("errors", {}), "value_text": value_text(
        c.get("value"))} for c in conditions]
    return render_template(
        "workflows/transition.html", workflow=workflow, transition=current, form=form,
        trigger=_trigger(form.trigger_type.data), config_form=config_form,
        templates=_trigger_templates(form.trigger_type.data, config_form),
        conditions=condition_rows, capture=capture, capture_errors=capture_errors or {},
        errors=errors or [], operators=OPERATORS, operator_labels=OPERATOR_LABELS,
        suggestions=_suggestions(workflow), used_by=used_by, delete_form=DeleteForm(),
        action_rows=rows, action_errors=action_fields.summary(rows), action_focus=focus,
        actions_json=json.dumps(current.actions or [], indent=2),
        action_types=types, failed=status == 422), status


@bp.post("/<code>/transitions/<tcode>/delete")
@requires_role(Role.AUTHOR)
def delete_transition(code: str, tcode: str) -> Response:
    """Delete a transition unless a state names it as its On Timeout Transition."""
    workflow = load(code)
    if DeleteForm().validate_on_submit():
        try:
            service.delete_transition(workflow.code, tcode)
        except (ValidationFailed, NotFound) as error:
            flash(refusal(f"Transition {tcode.upper()} not deleted", error), "danger")
        else:
            flash(f"Transition {tcode.upper()} deleted.", "success")
            flash_checks(workflow.code)
    return redirect(url_for("workflows.card", code=workflow.code) + "#transitions")

