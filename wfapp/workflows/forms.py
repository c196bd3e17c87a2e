"""Forms of the Workflows pages. Rules are checked by the services; forms only parse input."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import (
    BooleanField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, ValidationError

from ..engine import RuleError, check_code
from .trigger_fields import NumberField

CODE_HELP = "1–20 characters: A–Z, 0–9, _ and -; stored upper-case."


def code_rule(form: Any, field: Any) -> None:
    """The engine's code rule, checked with the form's other fields so that every error of
    the form shows at once (not the code's only after the others are fixed)."""
    errors: list[RuleError] = []
    value = (field.data or "").strip().upper()
    if value:
        check_code(value, field.name, errors)
    if errors:
        raise ValidationError(errors[0].message)


class NewWorkflowForm(FlaskForm):
    """Code, description and the initial state every workflow starts with."""

    code = StringField("Code", validators=[DataRequired(), Length(max=20), code_rule],
                       description=CODE_HELP)
    description = StringField("Description", validators=[Length(max=100)])
    initial_state = StringField("Initial State",
                                validators=[DataRequired(), Length(max=20), code_rule],
                                default="NEW",
                                description="The state new instances start in; add more "
                                "states on the card.")
    initial_description = StringField("Initial State Description", validators=[Length(max=100)],
                                      default="New")


class GeneralForm(FlaskForm):
    """The General fields of the Workflow Card."""

    description = StringField("Description", validators=[Length(max=100)])
    initial_state = SelectField("Initial State", choices=[], validate_choice=False,
                                description="The state that new instances start in.")
    enabled = BooleanField("Enabled", description="When off, no new instances are created and "
                           "no transitions are evaluated; events are kept as skipped.")


class StateForm(FlaskForm):
    """One row of the States sub-page."""

    code = StringField("Code", validators=[DataRequired(), Length(max=20), code_rule],
                       description=CODE_HELP)
    description = StringField("Description", validators=[Length(max=100)],
                              description="Shown in workflow instance views.")
    is_initial = BooleanField("Is Initial", description="Exactly one state is initial; marking "
                              "this one moves the mark here.")
    is_final = BooleanField("Is Final", description="No transition leaves a final state; "
                            "instances in it are no longer active.")
    timeout_hours = NumberField("Timeout (Hours)",
                                description="Fractions allowed (0.5 = 30 minutes). Empty: no "
                                "timeout. A state with a timeout needs an On Timeout "
                                "Transition; a final state has none.")
    on_timeout_transition = SelectField("On Timeout Transition", choices=[], validate_choice=False,
                                        description="Fired when the timeout expires; it must "
                                        "leave this state.")


class TransitionForm(FlaskForm):
    """The general fields of a transition (the New page and the top of its detail page)."""

    code = StringField("Code", validators=[DataRequired(), Length(max=20), code_rule],
                       description=CODE_HELP)
    description = StringField("Description", validators=[Length(max=100)])
    from_state = SelectField("From State", choices=[], validate_choice=False,
                             description="Evaluated only for instances in this state.")
    to_state = SelectField("To State", choices=[], validate_choice=False,
                           description="Where the instance moves when this fires.")
    trigger_type = SelectField("Trigger Type", choices=[], validate_choice=False,
                               description="The kind of event that makes this transition be "
                               "evaluated; its own fields follow.")
    enabled = BooleanField("Enabled", default=True,
                           description="A disabled transition is never evaluated.")
    priority = NumberField("Priority", whole=True, default=0,
                           description="Lower numbers are evaluated first; ties by code.")


class CopyForm(FlaskForm):
    """Copy Workflow asks for the new code."""

    new_code = StringField("New Code", validators=[DataRequired(), Length(max=20), code_rule],
                           description=CODE_HELP)


class ImportForm(FlaskForm):
    """Upload a wfapp.workflow/v1 document."""

    file = FileField("Workflow File (.json)",
                     validators=[FileRequired("Choose a .json file to upload."),
                                 FileAllowed(["json"], "Upload a .json file.")],
                     description="A file written by Export (format wfapp.workflow/v1).")


class ConfirmImportForm(FlaskForm):
    """The second step of an import that replaces an existing workflow.

    The document travels back as text and is parsed and validated again: never trusted.
    """

    document = TextAreaField("Document", validators=[DataRequired()])


class DeleteForm(FlaskForm):
    """A bare form: only its CSRF token matters."""


def add_error(field: Any, message: str) -> None:
    """Show `message` on a form field (its errors are a tuple until the form is validated)."""
    if not isinstance(field.errors, list):
        field.errors = list(field.errors)
    field.errors.append(message)


def route_errors(errors: list[RuleError], prefix: str, form: Any,
                 aliases: dict[str, str] | None = None) -> list[RuleError]:
    """Put each error whose path starts with `prefix` on that form field; return the rest."""
    rest = []
    for error in errors:
        if error.path.startswith(prefix + ".") or error.path == prefix:
            name = error.path[len(prefix) + 1:].split(".", 1)[0].split("[", 1)[0]
            name = (aliases or {}).get(name, name)
            field = getattr(form, name, None) if name else None
            if field is not None and hasattr(field, "errors"):
                add_error(field, error.message)
                continue
        rest.append(error)
    return rest


class SimulateForm(FlaskForm):
    """A scenario as text: the start record and one JSON step per line."""

    record_key = StringField("Record Key", validators=[Length(max=200)], default="SIM-1")
    record_data = TextAreaField("Record Data (JSON)", default="{}",
                                validators=[Length(max=100_000)],
                                description="What conditions read as record.<field>.")
    steps = TextAreaField("Steps (one JSON object per line)", validators=[Length(max=200_000)],
                          description="Each line one of: event, fire, advance_hours, "
                          "action_result (examples below).")


class SaveScenarioForm(SimulateForm):
    """Save a scenario as a test case under a name."""

    name = StringField("Scenario Name", validators=[DataRequired(), Length(max=60)])
