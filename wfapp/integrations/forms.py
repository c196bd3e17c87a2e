"""The integration card form; plugin settings are read separately (they are declared at runtime)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, RadioField, SelectField, StringField
from wtforms.validators import DataRequired, Length

MODES = [("per_record", "Per Record — one instance per source record"),
         ("per_run", "Per Run — one instance per integration run")]


class IntegrationForm(FlaskForm):
    """Code, description, the attached workflow and how records map onto instances."""

    code = StringField("Code", validators=[DataRequired(), Length(max=20)],
                       description="1–20 characters: A–Z, 0–9, _ and -; stored upper-case.")
    description = StringField("Description", validators=[Length(max=100)])
    workflow_code = SelectField("Workflow Code", choices=[], validate_choice=False,
                                description="The workflow that tracks this integration's "
                                "records.")
    instance_mode = RadioField("Workflow Instance Mode", choices=MODES, default="per_record")
    enabled = BooleanField("Enabled", default=True,
                           description="A disabled integration accepts no runs or events.")
    record_url_template = StringField(
        "Record URL Template", validators=[Length(max=500)],
        description="Open Record link, e.g. https://erp.example/orders/{record_key}; "
        "placeholders {record_key}, {run_id}, {vars.<name>}, {data.<field>}.")
