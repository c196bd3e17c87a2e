"""The Workflows list and the Workflow Card: general fields, copy, export, import, delete."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from ..choices import options
from ..engine import RuleError
from ..models import Role, Workflow
from ..security import actor_name, requires_role
from ..services import definitions
from ..services import workflows as service
from ..services.errors import Conflict, NotFound, ServiceError, ValidationFailed
from ..services.registry import get_registry
from . import bp
from .diagram import state_diagram
from .forms import (
    ConfirmImportForm,
    CopyForm,
    DeleteForm,
    GeneralForm,
    ImportForm,
    NewWorkflowForm,
    route_errors,
)


def load(code: str) -> Workflow:
    """The workflow called `code` (any case); 404 when there is none."""
    try:
        return definitions.get_workflow(code)
    except NotFound as error:
        abort(404, description=error.message)


def refusal(prefix: str, error: ServiceError) -> str:
    """A flash message for a refused change: what was refused and every reason, without paths."""
    if isinstance(error, ValidationFailed) and error.errors:
        reasons = "; ".join(e.message for e in error.errors)
    else:
        reasons = error.message
    return f"{prefix}: {reasons}."


@bp.route("/")
def index() -> str:
    """The Workflows list."""
    return render_template("workflows/index.html", rows=service.list_workflows(),
                           delete_form=DeleteForm())


@bp.route("/new", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def new() -> BaseResponse | tuple[str, int]:
    """Create a workflow with its initial state."""
    form = NewWorkflowForm()
    errors: list[RuleError] = []
    if form.validate_on_submit():
        try:
            workflow = service.create_workflow(form.code.data, form.description.data,
                                               form.initial_state.data,
                                               form.initial_description.data)
        except ValidationFailed as error:
            errors = route_errors(error.errors, "workflow.states[0]", form,
                                  {"code": "initial_state", "description": "initial_description"})
            errors = route_errors(errors, "workflow", form, {"states": "initial_state"})
        else:
            flash(f"Workflow {workflow.code} created. Add its states and transitions below.",
                  "success")
            return redirect(url_for("workflows.card", code=workflow.code))
    status = 422 if request.method == "POST" else 200
    return render_template("workflows/new.html", form=form, errors=errors), status


def _general_form(workflow: Workflow, formdata: Any = None) -> GeneralForm:
    """The General fields; Initial State offers this workflow's states."""
    form = GeneralForm(formdata=formdata, obj=None if formdata else workflow)
    form.initial_state.choices = options([(s.code, f"{s.code} · {s.description}" if s.description
                                   else s.code) for s in workflow.states if not s.is_final])
    if formdata is None:
        form.initial_state.data = workflow.initial_state
    return form


def _render_card(workflow: Workflow, general: GeneralForm | None = None,
                 errors: list[RuleError] | None = None, copy_form: CopyForm | None = None,
                 status: int = 200) -> tuple[str, int]:
    """The Workflow Card, with the forms as typed when a save was refused."""
    labels = {name: t.label for name, t in get_registry().trigger_types.items()}
    return render_template(
        "workflows/card.html", workflow=workflow, general=general or _general_form(workflow),
        errors=errors or [], copy_form=copy_form or CopyForm(formdata=None),
        delete_form=DeleteForm(), labels=labels,
        state_counts=service.state_instance_counts(workflow),
        active=service.active_instance_count(workflow),
        diagram=state_diagram(workflow)), status


@bp.route("/<code>", methods=["GET", "POST"])
def card(code: str) -> tuple[str, int] | BaseResponse:
    """The Workflow Card; POST saves the General fields (author role)."""
    workflow = load(code)
    if request.method == "GET":
        return _render_card(workflow)
    return _save_general(workflow)


@requires_role(Role.AUTHOR)
def _save_general(workflow: Workflow) -> tuple[str, int] | BaseResponse:
    """Save Description, Initial State and Enabled."""
    form = _general_form(workflow, request.form)
    if form.validate():
        try:
            service.update_general(workflow.code, form.description.data,
                                   form.initial_state.data, form.enabled.data)
        except ValidationFailed as error:
            errors = route_errors(error.errors, "workflow", form)
            return _render_card(load(workflow.code), form, errors, status=422)
        flash("General fields saved.", "success")
        return redirect(url_for("workflows.card", code=workflow.code))
    return _render_card(workflow, form, status=422)


@bp.post("/<code>/delete")
@requires_role(Role.AUTHOR)
def delete(code: str) -> BaseResponse:
    """Delete a workflow; refused while it has active instances."""
    if not DeleteForm().validate_on_submit():
        flash("The form expired; try again.", "warning")
        return redirect(url_for("workflows.index"))
    try:
        detached = service.delete_workflow(code, actor_name())
    except (Conflict, NotFound) as error:
        flash(refusal(f"Workflow {code.upper()} not deleted", error), "danger")
        return redirect(url_for("workflows.index"))
    message = f"Workflow {code.upper()} deleted."
    if detached:
        message += f" Detached from integration(s) {', '.join(detached)}."
    flash(message, "success")
    return redirect(url_for("workflows.index"))


@bp.post("/<code>/copy")
@requires_role(Role.AUTHOR)
def copy(code: str) -> tuple[str, int] | BaseResponse:
    """Copy Workflow under a new code; a refused code is shown on the New Code field."""
    workflow = load(code)
    form = CopyForm()
    if form.validate_on_submit():
        try:
            new = definitions.copy_workflow(workflow.code, form.new_code.data)
        except ValidationFailed as error:
            rest = route_errors(error.errors, "workflow", form, {"code": "new_code"})
            return _render_card(workflow, errors=rest, copy_form=form, status=422)
        except Conflict:
            form.new_code.errors = [f"workflow {form.new_code.data.strip().upper()!r} already "
                                    "exists; choose another code"]
            return _render_card(workflow, copy_form=form, status=422)
        flash(f"Copied {workflow.code} to {new.code}: states, transitions and conditions.",
              "success")
        return redirect(url_for("workflows.card", code=new.code))
    return _render_card(workflow, copy_form=form, status=422)


@bp.route("/<code>/export")
def export(code: str) -> Response:
    """Download `<CODE>.workflow.json`."""
    workflow = load(code)
    text = definitions.dumps(definitions.export_document(workflow.code))
    return Response(text, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="{workflow.code}.workflow.json"'})


@bp.route("/import", methods=["GET", "POST"])
@requires_role(Role.AUTHOR)
def import_file() -> BaseResponse | tuple[str, int]:
    """Import a workflow file; an existing code shows what would change and asks first."""
    form = ImportForm()
    errors: list[RuleError] = []
    if form.validate_on_submit():
        try:
            document = definitions.parse_file(form.file.data.read())
            preview = definitions.preview_import(document)
            if not preview.exists:
                workflow = definitions.import_document(preview.document)
                flash(f"Imported workflow {workflow.code}.", "success")
                return redirect(url_for("workflows.card", code=workflow.code))
        except ValidationFailed as error:
            errors = error.errors
        except ServiceError as error:
            errors = [RuleError("file", error.message)]
        else:
            confirm = ConfirmImportForm(formdata=None,
                                        document=definitions.dumps(preview.document))
            return render_template("workflows/import_confirm.html", preview=preview,
                                   form=confirm), 200
    status = 422 if request.method == "POST" else 200
    return render_template("workflows/import.html", form=form, errors=errors), status


@bp.post("/import/confirm")
@requires_role(Role.AUTHOR)
def import_confirm() -> BaseResponse | tuple[str, int]:
    """Replace the existing workflow with the previewed document (parsed and checked again)."""
    form = ConfirmImportForm()
    if not form.validate_on_submit():
        flash("Nothing to import: upload the file again.", "warning")
        return redirect(url_for("workflows.import_file"))
    try:
        document = definitions.parse_file(form.document.data)
        workflow = definitions.import_document(document, replace=True)
    except ValidationFailed as error:
        return render_template("workflows/import.html", form=ImportForm(formdata=None),
                               errors=error.errors), 422
    flash(f"Replaced workflow {workflow.code} with the imported definition.", "success")
    return redirect(url_for("workflows.card", code=workflow.code))
