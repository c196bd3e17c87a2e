"""Workflow Card pages for versions: the diff of two versions, pinning, and migrations."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from ..engine import RuleError
from ..models import MigrationStatus, Role
from ..security import actor_name, requires_role
from ..services import migrations, versions
from ..services import workflows as service
from ..services.errors import Conflict, NotFound, ValidationFailed
from ..services.integrations import list_integrations
from . import bp
from .forms import DeleteForm
from .views import load, refusal


def _int_arg(name: str) -> int | None:
    """A whole-number query or form argument; None when absent or not a number."""
    raw = request.values.get(name, "").strip()
    return int(raw) if raw.isdigit() else None


@bp.route("/<code>/versions/diff")
def diff(code: str) -> tuple[str, int]:
    """The readable diff between two versions (`old`, `new`; default: the last two)."""
    workflow = load(code)
    latest = workflow.latest_version
    new = _int_arg("new") or latest
    old = _int_arg("old") or max(1, new - 1)
    try:
        result = versions.diff_versions(workflow, old, new)
    except NotFound as error:
        abort(404, description=error.message)
    return render_template("workflows/version_diff.html", workflow=workflow, diff=result,
                           numbers=list(range(latest, 0, -1))), 200


@bp.post("/<code>/pin")
@requires_role(Role.AUTHOR)
def pin(code: str) -> BaseResponse:
    """Pin new instances to a version, or unpin (empty `version`)."""
    workflow = load(code)
    if not DeleteForm().validate_on_submit():
        flash("The form expired; try again.", "warning")
        return redirect(url_for("workflows.card", code=workflow.code))
    number = _int_arg("version")
    try:
        service.pin_version(workflow.code, number)
    except ValidationFailed as error:
        flash(refusal("Not pinned", error), "danger")
    else:
        flash(f"New instances start on version {number}." if number else
              "New instances start on the latest version.", "success")
    return redirect(url_for("workflows.card", code=workflow.code) + "#versions")


def _plan_input(workflow: Any) -> dict[str, Any]:
    """The migration request typed into the planner form."""
    data: dict[str, Any] = {
        "from_version": _int_arg("from_version") or max(1, workflow.latest_version - 1),
        "to_version": _int_arg("to_version") or workflow.latest_version,
    }
    state_map = {key[len("map_"):]: value for key, value in request.values.items()
                 if key.startswith("map_") and value}
    if state_map:
        data["state_map"] = state_map
    for name in ("state", "integration"):
        if request.values.get(name):
            data[name] = request.values[name]
    return data


@bp.route("/<code>/migrations/new", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def plan(code: str) -> tuple[str, int] | BaseResponse:
    """Plan a migration: pick versions and a state mapping, dry-run it, then run it."""
    workflow = load(code)
    form = DeleteForm()
    data = _plan_input(workflow)
    errors: list[RuleError] = []
    result = None
    status = 200
    if request.method == "POST" and not form.validate_on_submit():
        flash("The form expired; try again.", "warning")
        return redirect(url_for("workflows.plan", code=workflow.code))
    try:
        result = migrations.plan_migration(workflow.code, data)
        if request.method == "POST" and request.form.get("action") == "run":
            migration = migrations.start_migration(workflow.code, data, actor_name())
            flash(f"Migration #{migration.id} queued: {migration.total} instance(s) from "
                  f"version {migration.from_version} to {migration.to_version}.", "success")
            return redirect(url_for("workflows.migration", code=workflow.code,
                                    migration_id=migration.id))
    except ValidationFailed as error:
        errors, status = error.errors, 422
    except Conflict as error:
        errors, status = [RuleError("migration", error.message)], 409
    integrations = [i.code for i in list_integrations()]
    return render_template(
        "workflows/migration_plan.html", workflow=workflow, form=form, data=data,
        plan=result, errors=errors, numbers=list(range(workflow.latest_version, 0, -1)),
        integrations=integrations, dry_run=request.method == "POST",
        recent=migrations.list_migrations(workflow)), status


@bp.route("/<code>/migrations/<int:migration_id>")
def migration(code: str, migration_id: int) -> tuple[str, int]:
    """A migration's progress (the page refreshes itself until it has finished)."""
    workflow = load(code)
    try:
        found = migrations.get_migration(workflow.code, migration_id)
    except NotFound as error:
        abort(404, description=error.message)
    running = found.status in (MigrationStatus.QUEUED.value, MigrationStatus.RUNNING.value)
    return render_template("workflows/migration.html", workflow=workflow, migration=found,
                           running=running), 200


@bp.post("/<code>/versions/<int:number>/delete")
@requires_role(Role.AUTHOR)
def delete_version(code: str, number: int) -> BaseResponse:
    """Delete an old version; refused while instances follow it or it is latest or pinned."""
    workflow = load(code)
    if not DeleteForm().validate_on_submit():
        flash("The form expired; try again.", "warning")
    else:
        try:
            service.delete_version(workflow.code, number)
        except (Conflict, NotFound) as error:
            flash(refusal(f"Version {number} not deleted", error), "danger")
        else:
            flash(f"Version {number} deleted.", "success")
    return redirect(url_for("workflows.card", code=workflow.code) + "#versions")
