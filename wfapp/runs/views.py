"""Integration runs: upload records to import or export, and watch the run."""

from __future__ import annotations

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..engine import RuleError
from ..models import Role
from ..security import actor_name, requires_role
from ..services.errors import Conflict, NotFound, ValidationFailed
from ..services.events import EventFilters, list_events
from ..services.integrations import get_integration, list_integrations
from ..services.runs import get_run, list_runs, parse_records_file, run_progress, start_run
from . import bp


@bp.route("/")
def index() -> str:
    """The latest runs."""
    return render_template("runs/index.html", runs=list_runs(limit=100))


@bp.route("/new", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def new() -> str | Response | tuple[str, int]:
    """Run Import / Run Export: upload a JSON or CSV file of records."""
    code = request.values.get("integration", "")
    direction = request.values.get("direction", "import")
    errors: list[RuleError] = []
    if request.method == "POST":
        upload = request.files.get("file")
        try:
            integration = get_integration(code)
            if upload is None or not upload.filename:
                raise ValidationFailed([RuleError("file", "choose a JSON or CSV file")])
            records = parse_records_file(upload.read(), upload.filename)
            run = start_run(integration, direction, records, actor_name())
        except ValidationFailed as error:
            errors = error.errors
        except (NotFound, Conflict) as error:
            errors = [RuleError("integration", error.message)]
        else:
            flash(f"Run #{run.id}: {run.total} record(s) stored; the workflow is processing "
                  "them.", "success")
            return redirect(url_for("runs.show", run_id=run.id))
    status = 422 if errors else 200
    return render_template("runs/new.html", integrations=list_integrations(), code=code.upper(),
                           direction=direction, errors=errors), status


@bp.route("/<int:run_id>")
def show(run_id: int) -> str:
    """A run: counts, status and the progress of its events."""
    try:
        run = get_run(run_id)
    except NotFound as error:
        abort(404, description=error.message)
    events, _ = list_events(EventFilters(run_id=run.id), limit=200)
    return render_template("runs/show.html", run=run, progress=run_progress(run),
                           events=events)


@bp.route("/<int:run_id>.json")
def progress(run_id: int) -> Response:
    """The run's event progress, for the page to refresh itself."""
    try:
        run = get_run(run_id)
    except NotFound as error:
        abort(404, description=error.message)
    return jsonify(run_progress(run))
