"""The Events page: what arrived, what each event did; replay skipped or failed ones."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..models import Role
from ..security import requires_role
from ..services import events as service
from ..services.errors import Conflict, NotFound, ValidationFailed
from ..services.registry import get_registry
from . import bp


def _int(name: str, errors: list[RuleError]) -> int | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        errors.append(RuleError(name, "must be a whole number"))
        return None


@bp.route("/")
def index() -> str:
    """Stored events, newest first, with filters."""
    errors: list[RuleError] = []
    filters = service.EventFilters(
        integration=request.args.get("integration") or None,
        status=request.args.get("status") or None, source=request.args.get("source") or None,
        run_id=_int("run_id", errors), instance_id=_int("instance_id", errors))
    cursor = _int("cursor", errors)
    rows, next_cursor = [], None
    if not errors:
        try:
            rows, next_cursor = service.list_events(filters, 50, cursor)
        except ValidationFailed as error:
            errors = error.errors
    args = {k: v for k, v in request.args.items() if k != "cursor" and v}
    return render_template("events/index.html", rows=rows, cursor=next_cursor, errors=errors,
                           filters=request.args, args=args,
                           sources=get_registry().choices())


@bp.route("/<int:event_id>")
def show(event_id: int) -> str:
    """One event with its payload."""
    try:
        event = service.get_event(event_id)
    except NotFound as error:
        abort(404, description=error.message)
    return render_template("events/show.html", event=event)


@bp.post("/<int:event_id>/replay")
@requires_role(Role.OPERATOR)
def replay(event_id: int) -> Response:
    """Queue a skipped or failed event again."""
    try:
        service.replay(event_id)
    except (Conflict, NotFound) as error:
        flash(f"Not replayed: {error.message}", "danger")
    else:
        flash(f"Event #{event_id} queued again.", "success")
    return redirect(request.form.get("back") or url_for("events.show", event_id=event_id))
