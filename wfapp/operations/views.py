"""Bulk operation pages: the dry run and confirmation, the progress page, cancel."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

from ..choices import options
from ..events.forms import EventFilterForm
from ..inputs import MAX_ID
from ..instances.filters import read_filters
from ..instances.forms import FilterForm
from ..models import BulkOperation, Role
from ..security import actor_name, current_actor, requires_role
from ..services import bulk, migrations
from ..services import events as event_service
from ..services.errors import NotFound, ServiceError
from ..services.registry import get_registry
from . import bp
from .forms import AdvanceAllForm, ConfirmForm, MigrateAllForm, ResetAllForm

Page = str | tuple[str, int] | Response
INSTANCE_ACTIONS = {"advance": "Advance", "reset": "Reset to State", "delete": "Delete",
                    "migrate": "Migrate"}


def _operation_or_404(operation_id: int) -> BulkOperation:
    """The operation with this id; 404 with the service's message when there is none."""
    if operation_id > MAX_ID:
        abort(404, description=f"operation {operation_id} does not exist")
    try:
        return bulk.get_operation(operation_id)
    except NotFound as error:
        abort(404, description=error.message)


def _args() -> dict[str, Any]:
    return {k: v for k, v in request.args.items() if k not in ("cursor", "sort", "action")
            and v}


def _start(target: str, action: str, filters: Any, params: dict[str, Any]) -> Response | None:
    """Start the operation and go to its progress page (None when refused, flashed)."""
    try:
        plan = bulk.plan(target, action, filters, params, False, actor_name())
    except ServiceError as error:
        flash(f"Not started: {error.message}", "danger")
        return None
    return redirect(url_for("operations.show", operation_id=plan.operation_id))


@bp.route("/new/instances", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def new_instances() -> Page:
    """All instances matching the list's filter: the dry run, then the confirmed operation."""
    action = request.args.get("action", "")
    if action not in INSTANCE_ACTIONS:
        abort(404, description="action must be advance, reset, delete or migrate")
    role = bulk.role_needed("instances", action)
    user = current_actor()
    if user is None or not user.has_role(role):
        abort(403, description=f"This needs the {role} role.")
    filters, problems = read_filters(FilterForm(formdata=request.args))
    if filters is None:
        flash("These filters cannot be used: " + "; ".join(problems), "danger")
        return redirect(url_for("instances.index", **_args()))
    form: FlaskForm
    choices: dict[str, Any] | None = None
    if action == "advance":
        form = AdvanceAllForm()
        pairs = bulk.advance_options(filters)
        form.transition.choices = options(pairs)
        params = {"transition": form.transition.data or "", "comment": form.comment.data or ""}
    elif action == "reset":
        form = ResetAllForm()
        pairs = bulk.reset_options(filters)
        form.state.choices = options(pairs)
        params = {"state": form.state.data or "", "note": form.note.data or ""}
    elif action == "migrate":
        if not filters.workflow:
            flash("Migrate all needs a filter naming one workflow.", "warning")
            return redirect(url_for("instances.index", **_args()))
        form = MigrateAllForm()
        try:
            choices = migrations.bulk_choices(filters, form.to_version.data
                                              if request.method == "POST" else None)
        except NotFound as error:
            abort(404, description=error.message)
        form.to_version.choices = [(n, f"version {n}") for n in choices["numbers"]]
        if request.method != "POST":
            form.to_version.data = choices["to_version"]
        # One select per state the matching instances are in: where it goes (empty: same code).
        state_map = {s: request.form.get(f"map_{s}", "") for s in choices["source_states"]}
        params = {"to_version": choices["to_version"],
                  "state_map": {k: v for k, v in state_map.items() if v}}
        pairs = [("", "")]
    else:
        form, params, pairs = ConfirmForm(), {}, []
    # "Dry run" re-checks the choice (another version, another mapping) without starting.
    if form.validate_on_submit() and "check" not in request.form:
        started = _start("instances", action, filters, params)
        if started is not None:
            return started
    # The dry run: with the chosen transition or state once there is one.
    first = pairs[0][0] if pairs else ""
    dry_params = params if request.method == "POST" or action == "migrate" else {
        "transition": first, "state": first, "note": "dry run", "comment": ""}
    try:
        dry = bulk.plan("instances", action, filters, dry_params, True, actor_name())
    except ServiceError:  # no transition or state to choose: only the count to show
        dry = bulk.Plan(bulk.matched("instances", filters), [])
    page = render_template("operations/new.html", form=form, action=action,
                           title=f"{INSTANCE_ACTIONS[action]} all matching instances",
                           dry=dry, args=_args(), back=url_for("instances.index", **_args()),
                           filters=filters.as_dict(),
                           migrate=choices,
                           state_map=params.get("state_map", {}))
    return (page, 400) if form.errors else page


@bp.route("/new/events", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def new_events() -> Page:
    """Replay all events matching the Events list's filter: the dry run, then the operation."""
    filter_form = EventFilterForm(formdata=request.args)
    filter_form.source.choices = options([("", "All"), *get_registry().choices()])
    back = url_for("events.index", **_args())
    if not filter_form.validate():
        flash("These filters cannot be used.", "danger")
        return redirect(back)
    filters = event_service.EventFilters(
        integration=filter_form.integration.data or None,
        status=filter_form.status.data or None, source=filter_form.source.data or None,
        run_id=filter_form.run_id.data, instance_id=filter_form.instance_id.data)
    form = ConfirmForm()
    if form.validate_on_submit():
        started = _start("events", "replay", filters, {})
        if started is not None:
            return started
    try:
        dry = bulk.plan("events", "replay", filters, {}, True, actor_name())
    except ServiceError as error:
        flash(error.message, "danger")
        return redirect(back)
    return render_template("operations/new.html", form=form, action="replay",
                           title="Replay all matching events", dry=dry, args=_args(),
                           back=back, filters={k: getattr(filters, k) for k in (
                               "integration", "status", "source", "run_id", "instance_id")})


@bp.route("/<int:operation_id>")
def show(operation_id: int) -> str:
    """An operation's progress bar (refreshed by wfapp.js), its errors, and Cancel."""
    operation = _operation_or_404(operation_id)
    return render_template("operations/show.html", operation=operation,
                           progress=bulk.progress(operation), cancel_form=ConfirmForm())


@bp.route("/<int:operation_id>.json")
def progress(operation_id: int) -> Response:
    """The operation's progress, for the page to refresh itself."""
    return jsonify(bulk.progress(_operation_or_404(operation_id)))


@bp.post("/<int:operation_id>/cancel")
@requires_role(Role.OPERATOR)
def cancel(operation_id: int) -> Response:
    """Stop the operation between two rows."""
    operation = _operation_or_404(operation_id)
    if ConfirmForm().validate_on_submit():
        try:
            bulk.cancel(operation.id, actor_name())
        except ServiceError as error:
            flash(f"Not cancelled: {error.message}", "danger")
        else:
            flash("Cancelled: what was done so far stays done.", "success")
    else:
        flash("Not cancelled: the form expired; reload the page and try again.", "danger")
    return redirect(url_for("operations.show", operation_id=operation.id))
