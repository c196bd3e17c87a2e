"""The Events pages: what arrived, what each event did; replay skipped or failed ones."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..choices import options
from ..instances.common import MAX_ID, local_url
from ..models import Event, Role
from ..security import requires_role
from ..services import events as service
from ..services import instance_list
from ..services.errors import NotFound, ServiceError, ValidationFailed
from ..services.registry import get_registry
from . import bp
from .forms import EventFilterForm, ReplayForm

PAGE_SIZE = 50


def _labels() -> dict[str, str]:
    return {name: t.label for name, t in get_registry().trigger_types.items()}


def _event_or_404(event_id: int) -> Event:
    """The event with this id; 404 with the service's message when there is none."""
    if event_id > MAX_ID:
        abort(404, description=f"event {event_id} does not exist")
    try:
        return service.get_event(event_id)
    except NotFound as error:
        abort(404, description=error.message)


@bp.route("/")
def index() -> str | tuple[str, int]:
    """Stored events, newest first, with filters and keyset pages."""
    form = EventFilterForm(formdata=request.args)
    sources = get_registry().choices()
    # Timeouts and resets are moves without a trigger type; they are sources of the ledger too.
    form.source.choices = options([("", "All"), *sources, ("timeout", "Timeout"),
                                   ("reset", "Reset")])
    form.integration.choices = options([("", "All"), *((c, c) for c in instance_list.filter_choices(
        None)["integration"])])
    rows: list[Event] = []
    cursor, previous, problems = None, None, []
    total, more = 0, False
    if form.validate():
        filters = service.EventFilters(
            integration=form.integration.data or None, status=form.status.data or None,
            source=form.source.data or None, run_id=form.run_id.data,
            instance_id=form.instance_id.data)
        try:
            rows, cursor, previous = service.list_events_page(
                filters, PAGE_SIZE, form.cursor.data, form.before.data)
            total, more = service.count_events(filters)
        except ValidationFailed as error:
            problems = [f"{e.path}: {e.message}" for e in error.errors]
    else:
        problems = [f"{form[name].label.text}: {'; '.join(messages)}"
                    for name, messages in form.errors.items()]
    page = render_template(
        "events/index.html", form=form, rows=rows, cursor=cursor, problems=problems,
        previous=previous, total=total, more=more,
        labels=_labels(), replay_form=ReplayForm(),
        args={k: v for k, v in request.args.items() if k not in ("cursor", "before") and v})
    return (page, 400) if problems else page


@bp.route("/<int:event_id>")
def show(event_id: int) -> str:
    """One event: where it came from, what it did, its payload and record."""
    return render_template("events/show.html", event=_event_or_404(event_id), labels=_labels(),
                           replay_form=ReplayForm())


@bp.post("/<int:event_id>/replay")
@requires_role(Role.OPERATOR)
def replay(event_id: int) -> Response:
    """Queue a skipped or failed event again."""
    event = _event_or_404(event_id)
    form = ReplayForm()
    if form.validate_on_submit():
        try:
            service.replay(event.id)
        except ServiceError as error:
            flash(f"Not replayed: {error.message}", "danger")
        else:
            flash(f"Event #{event.id} queued again; a worker evaluates it within seconds.",
                  "success")
    else:
        flash("Not replayed: the form expired; reload the page and try again.", "danger")
    return redirect(local_url(request.form.get("back"), url_for("events.show", event_id=event.id)))
