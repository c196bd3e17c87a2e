"""Integration runs: upload records to import or export, and watch the run."""

from __future__ import annotations

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..choices import options
from ..engine import RuleError
from ..instances.common import MAX_ID
from ..models import Integration, Role, Run
from ..security import actor_name, requires_role
from ..services.errors import NotFound, ServiceError, ValidationFailed
from ..services.events import EventFilters, list_events
from ..services.integrations import get_integration, list_integrations
from ..services.runs import get_run, list_runs, parse_records_file, run_progress, start_run
from . import bp
from .forms import DIRECTIONS, RunForm

Page = str | tuple[str, int] | Response


def _run_or_404(run_id: int) -> Run:
    """The run with this id; 404 with the service's message when there is none."""
    if run_id > MAX_ID:
        abort(404, description=f"run {run_id} does not exist")
    try:
        return get_run(run_id)
    except NotFound as error:
        abort(404, description=error.message)


def _integration_or_404(code: str) -> Integration:
    """The integration with this code; 404 with the service's message when there is none."""
    try:
        return get_integration(code)
    except NotFound as error:
        abort(404, description=error.message)


@bp.route("/")
def index() -> str:
    """The latest runs, of one integration with ?integration=CODE."""
    code = request.args.get("integration", "").strip()
    integration = _integration_or_404(code) if code else None
    return render_template("runs/index.html", runs=list_runs(integration, limit=100),
                           integration=integration)


@bp.route("/new", methods=["GET", "POST"])
@requires_role(Role.OPERATOR)
def new() -> Page:
    """Run Import / Run Export: upload a JSON or CSV file of records; nothing is stored unless
    every record is valid."""
    form = RunForm()
    form.integration.choices = options([(i.code, f"{i.code} · {i.description}")
                                for i in list_integrations()])
    if request.method == "GET":
        code = request.args.get("integration", "").strip().upper()
        if code:
            _integration_or_404(code)
            form.integration.data = code
        if request.args.get("direction") in {c.value for c in DIRECTIONS}:
            form.direction.data = request.args["direction"]
    errors: list[RuleError] = []
    if form.validate_on_submit():
        try:
            upload = form.file.data
            records = parse_records_file(upload.read(), upload.filename or "")
            run = start_run(get_integration(form.integration.data), form.direction.data,
                            records, actor_name())
        except ValidationFailed as error:
            errors = error.errors
        except ServiceError as error:
            errors = [RuleError("integration", error.message)]
        else:
            flash(f"Run #{run.id}: {run.total} record(s) stored; the workflow is processing "
                  "them.", "success")
            return redirect(url_for("runs.show", run_id=run.id))
    errors += [RuleError(name, message) for name, messages in form.errors.items()
               for message in messages]
    page = render_template("runs/new.html", form=form, errors=errors,
                           direction=form.direction.data or "import")
    return (page, 422) if errors else page


@bp.route("/<int:run_id>")
def show(run_id: int) -> str:
    """A run: counts, status, the progress of its events and the first 200 of them."""
    run = _run_or_404(run_id)
    events, more = list_events(EventFilters(run_id=run.id), limit=200)
    return render_template("runs/show.html", run=run, progress=run_progress(run),
                           events=events, more=more is not None)


@bp.route("/<int:run_id>.json")
def progress(run_id: int) -> Response:
    """The run's event progress (pending/processed/skipped/failed), for the page to refresh."""
    return jsonify(run_progress(_run_or_404(run_id)))
