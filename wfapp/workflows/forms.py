"""Forms of the Workflows pages. Rules are checked by the services; forms only parse input."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DecimalField,
    HiddenField,
    IntegerField,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from ..engine import RuleError

CODE_HELP = "1–20 characters: A–Z, 0–9, _ and -; stored upper-case."


class NewWorkflowForm(FlaskForm):
    """Code, description and the initial state every workflow starts with."""

    code = StringField("Code", validators=[DataRequired(), Length(max=20)],
                       description=CODE_HELP)
    description = StringField("Description", validators=[Length(max=100)])
    initial_state = StringField("Initial State", validators=[DataRequired(), Length(max=20)],
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

    code = StringField("Code", validators=[DataRequired(), Length(max=20)],
                       description=CODE_HELP)
    description = StringField("Description", validators=[Length(max=100)])
    is_initial = BooleanField("Is Initial", description="Exactly one state is initial; marking "
                              "this one moves the mark here.")
    is_final = BooleanField("Is Final", description="No transition leaves a final state; "
                            "instances in it are no longer active.")
    timeout_hours = DecimalField("Timeout (Hours)", places=None,
                                 validators=[Optional(), NumberRange(min=0)],
                                 description="Fractions allowed (0.5 = 30 minutes). Empty: no "
                                 "timeout.")
    on_timeout_transition = SelectField("On Timeout Transition", choices=[], validate_choice=False,
                                        description="Fired when the timeout expires; it must "
                                        "leave this state.")


class TransitionForm(FlaskForm):
    """The general fields of a transition (the New page and the top of its detail page)."""

    code = StringField("Code", validators=[DataRequired(), Length(max=20)],
                       description=CODE_HELP)
    description = StringField("Description", validators=[Length(max=100)])
    from_state = SelectField("From State", choices=[], validate_choice=False)
    to_state = SelectField("To State", choices=[], validate_choice=False)
    trigger_type = SelectField("Trigger Type", choices=[], validate_choice=False)
    enabled = BooleanField("Enabled", default=True,
                           description="A disabled transition is never evaluated.")
    priority = IntegerField("Priority", default=0, validators=[Optional()],
                            description="Lower numbers are evaluated first; ties by code.")


class CopyForm(FlaskForm):
    """Copy Workflow asks for the new code."""

    new_code = StringField("New Code", validators=[DataRequired(), Length(max=20)],
                           description=CODE_HELP)


class ImportForm(FlaskForm):
    """Upload a wfapp.workflow/v1 document."""

    file = FileField("Workflow File (.json)", validators=[FileRequired()])


class ConfirmImportForm(FlaskForm):
    """The second step of an import that replaces an existing workflow."""

    document = HiddenField()


class DeleteForm(FlaskForm):
    """A bare form: only its CSRF token matters."""


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
                if not isinstance(field.errors, list):
                    field.errors = list(field.errors)
                field.errors.append(error.message)
                continue
        rest.append(error)
    return rest
