"""Forms of the auth blueprint: logging in and the admin's Users page."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length

from ..models import Role

ROLE_CHOICES = [SelectChoice(r.value, r.value) for r in Role]


class LoginForm(FlaskForm):
    """User name and password."""

    username = StringField("User Name", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])
    submit = SubmitField("Log In")


class NewUserForm(FlaskForm):
    """A new user: name, first password, role."""

    username = StringField("User Name", id="new-username",
                           validators=[DataRequired(), Length(max=64)],
                           description="Letters, digits and _ - . @")
    password = PasswordField("Password", id="new-password",
                             validators=[DataRequired(), Length(max=200)],
                             description="At least 8 characters; tell it to the user.",
                             render_kw={"autocomplete": "new-password"})
    role = SelectField("Role", id="new-role", choices=ROLE_CHOICES, default=Role.VIEWER.value)


class PasswordForm(FlaskForm):
    """Your current password and a new one, twice."""

    current_password = PasswordField("Current Password", validators=[DataRequired()],
                                     render_kw={"autocomplete": "current-password"})
    password = PasswordField("New Password", validators=[DataRequired(), Length(max=200)],
                             description="At least 8 characters, not a common password.",
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat New Password",
                            validators=[DataRequired(), EqualTo("password",
                                                                "the two new passwords differ")],
                            render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Change Password")
