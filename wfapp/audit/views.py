"""The audit log: who changed what and when, filtered; admins only."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from flask import render_template, request
from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField
from wtforms.validators import Length, Optional

from ..choices import options
from ..inputs import parse_id
from ..models import Role
from ..security import requires_role
from ..services import audit as service
from . import bp

PAGE_SIZE = 50


class AuditFilterForm(FlaskForm):
    """The filters of the audit page (a GET form: no CSRF token needed)."""

    class Meta:
        csrf = False

    actor = StringField("Who", validators=[Optional(), Length(max=64)])
    action = SelectField("Action", choices=[], validate_choice=False)
    object_type = SelectField("Object", choices=[], validate_choice=False)
    object_key = StringField("Code or id", validators=[Optional(), Length(max=200)])
    since = DateField("From (UTC)", validators=[Optional()])
    until = DateField("To (UTC)", validators=[Optional()])


def _day(value: object, end: bool = False) -> datetime | None:
    if value is None:
        return None
    start = datetime.combine(value, time(), tzinfo=UTC)  # type: ignore[arg-type]
    return start + timedelta(days=1) if end else start


@bp.route("/")
@requires_role(Role.ADMIN)
def index() -> tuple[str, int] | str:
    """Audit rows, newest first, with filters and keyset pages."""
    form = AuditFilterForm(formdata=request.args)
    seen = service.choices()
    form.action.choices = options([("", "All"), *((a, a) for a in seen["action"])])
    form.object_type.choices = options([("", "All"), *((t, t) for t in seen["object_type"])])
    rows: list[Any] = []
    cursor, problems = None, []
    raw_cursor = request.args.get("cursor")
    cursor_id = parse_id(raw_cursor) if raw_cursor else None
    if raw_cursor and cursor_id is None:
        problems.append("The page link is not valid; start from the newest entries.")
    elif form.validate():
        filters = service.AuditFilters(
            actor=(form.actor.data or "").strip() or None, action=form.action.data or None,
            object_type=form.object_type.data or None,
            object_key=(form.object_key.data or "").strip() or None,
            since=_day(form.since.data), until=_day(form.until.data, end=True))
        rows, cursor = service.list_entries(filters, PAGE_SIZE, cursor_id)
    else:
        problems = [f"{form[name].label.text}: {'; '.join(messages)}"
                    for name, messages in form.errors.items()]
    page = render_template("audit/index.html", form=form, rows=rows, cursor=cursor,
                           problems=problems,
                           args={k: v for k, v in request.args.items() if k != "cursor" and v})
    return (page, 400) if problems else page
