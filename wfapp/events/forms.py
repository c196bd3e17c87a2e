"""Forms of the Events pages: the list filters and Replay."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField
from wtforms.validators import AnyOf, Length, Optional

from ..choices import options
from ..instances.common import an_id, no_nul

STATUSES = options([("", "All"), ("pending", "Pending"), ("processed", "Processed"),
            ("skipped", "Skipped"), ("failed", "Failed")])


class EventFilterForm(FlaskForm):
    """The filters of the Events list (a GET form: no CSRF token)."""

    class Meta:
        csrf = False

    integration = SelectField("Integration", choices=[], validate_choice=False,
                              validators=[Optional(), Length(max=20), no_nul])
    status = SelectField("Status", choices=STATUSES, default="", validate_choice=False,
                         validators=[AnyOf([c.value for c in STATUSES],
                                           message="must be pending, processed, skipped or "
                                           "failed")])
    source = SelectField("Source", choices=[], default="", validate_choice=False,
                         validators=[Length(max=40), no_nul])
    run_id = IntegerField("Run", validators=[Optional(), an_id])
    instance_id = IntegerField("Instance", validators=[Optional(), an_id])
    cursor = IntegerField("Cursor", validators=[Optional(), an_id])
    before = IntegerField("Before", validators=[Optional(), an_id])


class ReplayForm(FlaskForm):
    """Replay: only the confirmation (and its CSRF token)."""
