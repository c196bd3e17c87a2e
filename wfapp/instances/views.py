"""The Workflow Instances page, its actions, and the instance page."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from flask import (
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from werkzeug.wrappers import Response

from ..choices import options as choice_options
from ..models import Instance, Role, utcnow
from ..security import actor_name, requires_role
from ..services import instance_list, outbox
from ..services import instances as service
from ..services.errors import NotFound, ServiceError, ValidationFailed
from ..services.registry import get_registry
from ..workflows.diagram import definition_shape, path_overlay, state_diagram
from . import bp
from .common import MAX_ID, local_url
from .export import csv_rows
from .filters import read_filters
from .forms import AdvanceForm, DeleteForm, FilterForm, ResetForm, WhyNotForm

PAGE_SIZE = 50
MAX_SELECTED = 500
INSTANCE_PAGE = re.compile(r"^/instances/\d+$")
Page = str | tuple[str, int] | Response


def _labels() -> dict[str, str]:
    return {name: t.label for name, t in get_registry().trigger_types.items()}


def _name(instance: Instance) -> str:
    return instance.record_key or (f"run {instance.run_id}" if instance.run_id else
                                   f"#{instance.id}")


def _back(default: str) -> str:
    """A local URL to return to: the form's `back`, else the referrer on GET, else `default`."""
    back = local_url(request.values.get("back"), "")
    if not back and request.method == "GET":
        back = local_url(request.referrer, "")
    return back or default


def _instance_or_404(instance_id: int) -> Instance:
    """The instance with this id; 404 with the service's message when there is none."""
    if instance_id > MAX_ID:
        abort(404, description=f"instance {instance_id} does not exist")
    try:
        return service.get_instance(instance_id)
    except NotFound as error:
        abort(404, description=error.message)


def _selected() -> list[Instance]:
    """The instances picked on the list (`id` values); unknown or malformed ids are skipped."""
    instances: dict[int, Instance] = {}
    ids = request.values.getlist("id")
    if len(ids) > MAX_SELECTED:
        flash(f"At most {MAX_SELECTED} instances at a time: the first {MAX_SELECTED} are "
              "used.", "warning")
    for raw in ids[:MAX_SELECTED]:
        if not raw.isdigit() or int(raw) > MAX_ID or int(raw) in instances:
            continue
        try:
            instances[int(raw)] = service.get_instance(int(raw))
        except NotFound:
            continue
    return list(instances.values())


def _each(instances: Sequence[Instance], change: Callable[[int], Any], done_text: str,
          refused_text: str) -> None:
    """Apply a service call to each instance and flash one line for what worked and what not."""
    done = []
    for instance in instances:
        name = _name(instance)
        try:
            change(instance.id)
        except ServiceError as error:
            flash(f"{refused_text} {name}: {error.message}", "danger")
        else:
            done.append(name)
    if done:
        flash(f"{done_text} {', '.join(done)}.", "success")


def _filter_args() -> dict[str, str]:
    """The list's query arguments but the page position (for links that keep the filter)."""
    return {k: v for k, v in request.args.items() if k not in ("cursor", "sort") and v}


@bp.route("/")
def index() -> Page:
    """The Workflow Instances list: filters, sortable keyset pages, a bounded total, and the
    actions on selected rows or on every row the filter matches."""
    form = FilterForm(formdata=request.args)
    page = instance_list.Page([], None, None)
    total, more = 0, False
    filters, problems = read_filters(form)
    sort = request.args.get("sort") or "entered"
    if filters is not None:
        try:
            page = instance_list.list_page(filters, int(form.size.data or PAGE_SIZE),
                                           request.args.get("cursor"), sort)
            total, more = instance_list.count(filters)
        except ValidationFailed as error:
            problems = [f"{e.path}: {e.message}" for e in error.errors]
    instances = [row.instance for row in page.rows]
    html = render_template(
        "instances/index.html", form=form, rows=page.rows, cursor=page.next,
        previous=page.previous, problems=problems, total=total, more=more, sort=sort,
        sorts=instance_list.SORT_LABELS,
        manual=service.manual_actions_by_instance(instances),
        links={i.id: service.record_link(i) for i in instances}, labels=_labels(),
        args=_filter_args())
    return (html, 400) if problems else html


@bp.route("/export.csv")
def export_csv() -> Page:
    """The filtered list as CSV, streamed page by page (every matching row, list order)."""
    form = FilterForm(formdata=request.args)
    filters, problems = read_filters(form)
    if filters is None:
        return "; ".join(problems), 400
    sort = request.args.get("sort") or "entered"
    return Response(stream_with_context(csv_rows(filters, sort, _labels())),
                    mimetype="text/csv", headers={
                        "Content-Disposition": "attachment; filename=instances.csv"})


@bp.route("/advance", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def advance() -> Page:
    """Advance Workflow: fire one Manual transition on each selected instance."""
    instances = _selected()
    back = _back(url_for("instances.index"))
    if not instances:
        flash("Select one or more instances first.", "warning")
        return redirect(back)
    options = service.common_manual_actions(instances)
    form = AdvanceForm()
    form.transition.choices = choice_options((a.code, a.label) for a in options)
    if form.validate_on_submit():
        code = form.transition.data.strip().upper()
        _each(instances, lambda i: service.fire_manual(i, code, form.comment.data or "",
                                                       actor_name()),
              f"Fired {code} for", "Not fired for")
        if len(instances) == 1:
            return redirect(url_for("instances.show", instance_id=instances[0].id))
        return redirect(back)
    page = render_template("instances/advance.html", form=form, instances=instances,
                           options=options, back=back)
    return (page, 400) if form.errors else page


@bp.route("/reset", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def reset() -> Page:
    """Reset to State: move the selected instances to a state without firing anything."""
    instances = _selected()
    back = _back(url_for("instances.index"))
    if not instances:
        flash("Select one or more instances first.", "warning")
        return redirect(back)
    workflows = {i.workflow_id for i in instances}
    form = ResetForm()
    # The states of the versions the instances follow (older ones may lack a new state).
    form.state.choices = choice_options(service.reset_choices(instances)) \
        if len(workflows) == 1 else []
    if len(workflows) == 1 and form.validate_on_submit():
        state, note = form.state.data, form.note.data.strip()
        _each(instances, lambda i: service.reset_instance(i, state, note, actor_name()),
              f"Reset to {state.upper()}:", "Not reset:")
        if len(instances) == 1:
            return redirect(url_for("instances.show", instance_id=instances[0].id))
        return redirect(back)
    page = render_template("instances/reset.html", form=form, instances=instances, back=back,
                           mixed=len(workflows) > 1)
    return (page, 400) if form.errors or (request.method == "POST" and len(workflows) > 1) \
        else page


@bp.route("/delete", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def delete() -> Page:
    """Delete Instance: remove the selected instances without firing anything (audited)."""
    instances = _selected()
    back = _back(url_for("instances.index"))
    if INSTANCE_PAGE.match(urlsplit(back).path):
        back = url_for("instances.index", workflow=instances[0].workflow.code) if instances \
            else url_for("instances.index")
    if not instances:
        flash("Select one or more instances first.", "warning")
        return redirect(back)
    form = DeleteForm()
    if form.validate_on_submit():
        _each(instances, lambda i: service.delete_instance(i, actor_name()),
              "Deleted (written to the audit log):", "Not deleted:")
        return redirect(back)
    return render_template("instances/delete.html", form=form, instances=instances, back=back)


@bp.route("/<int:instance_id>")
def show(instance_id: int) -> Page:
    """One instance: state, timer, data, variables, history, events, actions and why-not."""
    instance = _instance_or_404(instance_id)
    sample = "why_payload" in request.args
    why = WhyNotForm(formdata=request.args if sample else None)
    why.why_source.choices = choice_options(get_registry().choices())
    if sample and why.validate():
        about, verdicts = service.why_not(instance, why.payload(), why.why_source.data,
                                          why.why_type.data or "")
    else:
        about, verdicts = service.why_not(instance)
    history = service.history(instance.id)
    return render_template(
        "instances/show.html", instance=instance, state=service.current_state(instance),
        diagram=state_diagram(definition_shape(service.version_definition(instance)),
                              path_overlay(instance.state, history)),
        history=history, events=service.events_of(instance.id),
        actions=service.manual_actions(instance), about=about, verdicts=verdicts, why=why,
        sample=sample, link=service.record_link(instance), labels=_labels(),
        deliveries=outbox.list_deliveries(instance_id=instance.id, limit=100)[0],
        seconds_left=int((instance.timeout_due_at - utcnow()).total_seconds())
        if instance.timeout_due_at else None)


@bp.post("/<int:instance_id>/fire")
@requires_role(Role.OPERATOR)
def fire(instance_id: int) -> Response:
    """Fire one Manual transition from the instance page."""
    instance = _instance_or_404(instance_id)
    code = (request.form.get("transition") or "").strip().upper()
    form = AdvanceForm()
    form.transition.choices = choice_options([(code, code)])
    if not form.validate_on_submit():
        for messages in form.errors.values():
            flash(f"Not fired: {'; '.join(messages)}", "danger")
    else:
        try:
            service.fire_manual(instance.id, code, form.comment.data or "", actor_name())
        except ServiceError as error:
            flash(f"Not fired: {error.message}", "danger")
        else:
            flash(f"Fired {code}.", "success")
    return redirect(url_for("instances.show", instance_id=instance.id))
