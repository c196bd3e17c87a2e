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
    Regexp,
    ValidationError,
)

from ..choices import options
from .common import an_id, no_nul

ACTIVE = {"yes": True, "no": False, "all": None, "": None}
SINCE_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S",
                 "%Y-%m-%d"]


PAGE_SIZES = [25, 50, 100, 200]
VAR_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class FilterForm(FlaskForm):
    """The filters of the Workflow Instances list (a GET form: no CSRF token).

    Workflow, integration and state are drop-downs of the known values (set by the view); a
    value typed into the URL that is not among them still filters (and finds nothing).
    """

    class Meta:
        csrf = False

    workflow = SelectField("Workflow", choices=[], validate_choice=False,
                           validators=[Optional(), Length(max=20), no_nul])
    integration = SelectField("Integration", choices=[], validate_choice=False,
                              validators=[Optional(), Length(max=20), no_nul])
    state = SelectField("State", choices=[], validate_choice=False,
                        validators=[Optional(), Length(max=20), no_nul])
    since = DateTimeLocalField("In State Since (UTC)", format=SINCE_FORMATS,
                               validators=[Optional()],
                               description="Instances that entered their state at or before "
                               "this time.")
    active = SelectField("Active", choices=options([("yes", "Active"), ("no", "Finished"),
                                                    ("all", "All")]),
                         default="yes", validate_choice=False,
                         validators=[AnyOf(list(ACTIVE), message="must be yes, no or all")])
    record_key = StringField("Record Key", validators=[Optional(), Length(max=200), no_nul],
                             description="The exact key.")
    record_key_prefix = StringField("Key starts with",
                                    validators=[Optional(), Length(max=200), no_nul])
    var_name = StringField("Variable", validators=[
        Optional(), Regexp(VAR_NAME_RE, message="must be a variable name (letters, digits, _)")],
        description="A captured workflow variable, e.g. tracking_no.")
    var_value = StringField("Value", validators=[Optional(), Length(max=200), no_nul])
    run_id = IntegerField("Run", validators=[Optional(), an_id])
    size = SelectField("Rows", choices=options((str(n), str(n)) for n in PAGE_SIZES),
                       default="50",
                       validators=[AnyOf([str(n) for n in PAGE_SIZES],
                                         message="must be 25, 50, 100 or 200")])

    def since_utc(self) -> datetime | None:
        """The In State Since bound as an aware UTC time (the field is read as UTC)."""
        return self.since.data.replace(tzinfo=UTC) if self.since.data else None

    def validate_var_value(self, field: Field) -> None:
        """A variable value needs the variable's name."""
        if field.data and not self.var_name.data:
            raise ValidationError("name the variable too")


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
