"""Forms of the bulk operation pages."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, InputRequired, Length


class AdvanceAllForm(FlaskForm):
    """Advance every matching instance by one Manual transition."""

    transition = SelectField("Manual transition", choices=[],
                             validators=[InputRequired(message="choose a transition")])
    comment = StringField("Comment", validators=[Length(max=1000)],
                          description="Why — kept in each instance's history.")


class ResetAllForm(FlaskForm):
    """Reset every matching instance to one state, with a note."""

    state = SelectField("State", choices=[], validators=[DataRequired(message="choose a state")])
    note = StringField("Note", validators=[DataRequired(message="a note saying why is required"),
                                           Length(max=1000)],
                       description="Required: kept in each instance's history.")


class MigrateAllForm(FlaskForm):
    """Move every matching instance (of one workflow) to one version, mapping states."""

    to_version = SelectField("To version", choices=[], coerce=int,
                             validators=[InputRequired(message="choose a version")])


class ConfirmForm(FlaskForm):
    """Delete all, replay all, cancel: only the confirmation (and its CSRF token)."""
