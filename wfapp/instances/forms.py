"""Forms of the Workflow Instances pages: the list filters, the actions and the why-not panel."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    Field,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    AnyOf,
    DataRequired,
    InputRequired,
    Length,
    Optional,
    ValidationError,
)

from ..choices import options
from .common import an_id, no_nul

ACTIVE = {"yes": True, "no": False, "all": None, "": None}
SINCE_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S",
                 "%Y-%m-%d"]


class FilterForm(FlaskForm):
    """The filters of the Workflow Instances list (a GET form: no CSRF token)."""

    class Meta:
        csrf = False

    workflow = StringField("Workflow", validators=[Optional(), Length(max=20), no_nul])
    integration = StringField("Integration", validators=[Optional(), Length(max=20), no_nul])
    state = StringField("State", validators=[Optional(), Length(max=20), no_nul])
    since = DateTimeLocalField("In State Since (UTC)", format=SINCE_FORMATS,
                               validators=[Optional()],
                               description="Instances that entered their state at or before "
                               "this time.")
    active = SelectField("Active", choices=options([("all", "All"), ("yes", "Yes"), ("no", "No")]),
                         default="all", validate_choice=False,
                         validators=[AnyOf(list(ACTIVE), message="must be yes, no or all")])
    record_key = StringField("Record Key", validators=[Optional(), Length(max=200), no_nul])
    run_id = IntegerField("Run", validators=[Optional(), an_id])

    def since_utc(self) -> datetime | None:
        """The In State Since bound as an aware UTC time (the field is read as UTC)."""
        return self.since.data.replace(tzinfo=UTC) if self.since.data else None


class AdvanceForm(FlaskForm):
    """Advance Workflow (and one instance-page button): a Manual transition and a comment."""

    transition = RadioField("Manual transition", choices=[], validate_choice=False,
                            validators=[InputRequired(message="choose a transition")])
    comment = StringField("Comment", validators=[Length(max=1000)],
                          description="Why — kept in each instance's history.")


class ResetForm(FlaskForm):
    """Reset to State: the state to move to and a required note."""

    state = SelectField("State", choices=[],
                        validators=[DataRequired(message="choose a state")])
    note = StringField("Note", validators=[DataRequired(message="a note saying why is required"),
                                           Length(max=1000)],
                       description="Required: why the instance is moved by hand (kept in its "
                       "history).")


class DeleteForm(FlaskForm):
    """Delete Instance: only the confirmation (and its CSRF token)."""


def json_object(form: Any, field: Field) -> None:
    """The sample payload must be a JSON object."""
    try:
        value = json.loads(field.data or "{}")
    except ValueError as exc:
        raise ValidationError(f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError("must be a JSON object ({...})")


class WhyNotForm(FlaskForm):
    """A sample event for the why-not panel (a GET form: nothing is stored)."""

    class Meta:
        csrf = False

    why_source = SelectField("Trigger type", choices=[],
                             validators=[InputRequired(message="choose a trigger type")])
    why_type = StringField("Event type", validators=[Length(max=200)])
    why_payload = TextAreaField("Payload (JSON)", default="{}",
                                validators=[Length(max=100_000), json_object])

    def payload(self) -> dict[str, Any]:
        """The pasted payload, parsed (call after validate())."""
        return json.loads(self.why_payload.data or "{}")
