"""The run upload form: an integration, a direction and a JSON or CSV file of records."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import RadioField, SelectField

from ..choices import options

DIRECTIONS = options([("import", "Import"), ("export", "Export")])


class RunForm(FlaskForm):
    """Run Import / Run Export."""

    integration = SelectField("Integration", choices=[])
    direction = RadioField("Direction", choices=DIRECTIONS, default="import")
    file = FileField("Records file (.json or .csv)", validators=[
        FileRequired(message="choose a JSON or CSV file"),
        FileAllowed(["json", "csv"], message="must be a .json or .csv file")],
        description='JSON: a list of {"key", "data", "status"} objects or {"records": [...]}; '
        "CSV: a header row with key, optionally status (success / error), and the data "
        "columns.")
