"""The Actions page: what each transition action did, and what people do about failed ones."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import IntegerField, SelectField, StringField
from wtforms.validators import AnyOf, Length, Optional

from ..choices import options
from ..extensions import db
from ..instances.common import MAX_ID, an_id, local_url, no_nul
from ..models import ActionDelivery, ActionStatus, Integration, Role, Workflow
from ..security import actor_name, requires_role
from ..services import outbox
from ..services.errors import NotFound, ServiceError
from . import bp

PAGE_SIZE = 50
STATUS_PAIRS = [("", "All"), *[(s.value, s.value.replace("_", " ").capitalize())
                               for s in ActionStatus]]
STATUSES = options(STATUS_PAIRS)


class ActionFilterForm(FlaskForm):
    """The filters of the Actions list (a GET form: no CSRF token)."""

    class Meta:
        csrf = False

    workflow = StringField("Workflow", validators=[Optional(), Length(max=20), no_nul])
    integration = StringField("Integration", validators=[Optional(), Length(max=20), no_nul])
    status = SelectField("Status", choices=STATUSES, default="", validate_choice=False,
                         validators=[AnyOf([v for v, _ in STATUS_PAIRS],
                                           message="is not a delivery status")])
    type = StringField("Type", validators=[Optional(), Length(max=40), no_nul])
    instance_id = IntegerField("Instance", validators=[Optional(), an_id])
    cursor = IntegerField("Cursor", validators=[Optional(), an_id])


class ConfirmForm(FlaskForm):
    """Retry now / Give up: only the CSRF token."""


def _code_id(model: type[Workflow] | type[Integration], code: str | None) -> int | None:
    if not code:
        return None
    found = db.session.scalar(select(model.id).where(model.code == code.strip().upper()))
    return found if found is not None else -1


@bp.route("/")
def index() -> str | tuple[str, int]:
    """Action deliveries, newest first, with filters."""
    form = ActionFilterForm(formdata=request.args)
    rows: list[ActionDelivery] = []
    cursor: int | None = None
    problems: list[str] = []
    if form.validate():
        rows, cursor = outbox.list_deliveries(
            status=form.status.data or None,
            workflow_id=_code_id(Workflow, form.workflow.data),
            integration_id=_code_id(Integration, form.integration.data),
            instance_id=form.instance_id.data, type=form.type.data or None,
            limit=PAGE_SIZE, cursor=form.cursor.data)
    else:
        problems = [f"{form[name].label.text}: {'; '.join(messages)}"
                    for name, messages in form.errors.items()]
    codes = {("w", i): c for i, c in db.session.execute(select(Workflow.id, Workflow.code))}
    codes.update({("i", i): c for i, c in
                  db.session.execute(select(Integration.id, Integration.code))})
    page = render_template("actions/index.html", form=form, rows=rows, cursor=cursor,
                           problems=problems, codes=codes, confirm=ConfirmForm(),
                           args={k: v for k, v in request.args.items() if k != "cursor" and v})
    return (page, 400) if problems else page


def _act(delivery_id: int, what: str) -> Response:
    if delivery_id > MAX_ID:
        abort(404, description=f"action delivery {delivery_id} does not exist")
    back = local_url(request.form.get("back"), url_for("actions.index"))
    if not ConfirmForm().validate_on_submit():
        flash("Nothing done: the form expired; reload the page and try again.", "danger")
        return redirect(back)
    try:
        if what == "retry":
            outbox.retry_now(delivery_id, actor_name())
            flash(f"Delivery #{delivery_id} is due now; a worker makes the attempt within "
                  "seconds.", "success")
        else:
            outbox.give_up(delivery_id, actor_name())
            flash(f"Gave up on delivery #{delivery_id}; its failure is an event of the "
                  "instance.", "success")
    except NotFound as error:
        abort(404, description=error.message)
    except ServiceError as error:
        flash(f"Nothing done: {error.message}", "danger")
    return redirect(back)


@bp.post("/<int:delivery_id>/retry")
@requires_role(Role.OPERATOR)
def retry(delivery_id: int) -> Response:
    """Retry now: make a pending, failed or given-up delivery due at once."""
    return _act(delivery_id, "retry")


@bp.post("/<int:delivery_id>/give-up")
@requires_role(Role.OPERATOR)
def give_up(delivery_id: int) -> Response:
    """Give up: stop retrying a pending delivery; it fails now."""
    return _act(delivery_id, "give_up")
