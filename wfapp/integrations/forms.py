"""The integration card form, and reading the plugin settings posted beside it.

Plugin settings are declared at runtime (wfapp.triggers.Field), so they are not WTForms fields:
they are posted as `set-<name>` (and `clear-<name>` for a stored secret) and typed here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import BooleanField, RadioField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from ..triggers import Field
from ..workflows.forms import code_rule

MODES = [SelectChoice("per_record", "Per Record — one instance per source record"),
         SelectChoice("per_run", "Per Run — one instance per integration run")]

# Bootstrap-Flask renders descriptions as markup, so the placeholders' angle brackets are escaped.
URL_HELP = Markup(
    "The link behind Open Record on the Workflow Instances page, e.g. "
    "<code>https://erp.example/orders/{record_key}</code>. Placeholders: "
    "<code>{record_key}</code>, <code>{run_id}</code>, "
    "<code>{vars.&lt;name&gt;}</code> (a workflow variable), "
    "<code>{data.&lt;field&gt;}</code> (a field of the record data).")


class IntegrationForm(FlaskForm):
    """Code, description, the attached workflow and how records map onto instances."""

    code = StringField("Code", validators=[DataRequired(), Length(max=20), code_rule],
                       description="1–20 characters: A–Z, 0–9, _ and -; stored upper-case. "
                       "It cannot change once the integration exists.")
    description = StringField("Description", validators=[Length(max=100)])
    workflow_code = SelectField("Workflow Code", choices=[], validate_choice=False,
                                description="The workflow that tracks this integration's "
                                "records. (none): events are stored but move nothing.")
    instance_mode = RadioField("Workflow Instance Mode", choices=MODES, default="per_record",
                               description="Per Record: each imported or exported record (or "
                               "webhook record key) has its own instance. Per Run: each import "
                               "or export run is one instance, which gets one event with the "
                               "run's summary when the run ends.")
    enabled = BooleanField("Enabled", default=True,
                           description="A disabled integration accepts no runs or events.")
    record_url_template = StringField("Record URL Template", validators=[Length(max=500)],
                                      description=URL_HELP)


@dataclass
class PostedSettings:
    """Plugin settings read from a form: typed values, secrets to clear, typing errors."""

    values: dict[str, Any] = field(default_factory=dict)
    clear: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    shown: dict[str, Any] = field(default_factory=dict)  # what to show again if saving fails


def _typed(setting: Field, raw: str, form: Any) -> Any:
    """Turn the posted text into the JSON type the setting declares; ValueError names why."""
    kind = setting.type
    if kind == "bool":
        return f"set-{setting.name}" in form
    if kind == "multichoice":
        return list(form.getlist(f"set-{setting.name}"))
    if raw == "":
        return None if kind in ("int", "number", "json", "choice") else ""
    if kind in ("int", "number"):
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        return int(number) if number.is_integer() else number
    if kind == "json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON: {exc.msg}") from None
    return raw


def read_settings(form: Any, settings: Iterable[Field]) -> PostedSettings:
    """Read `set-<name>` fields; an empty secret keeps the stored one, `clear-<name>` drops it."""
    posted = PostedSettings()
    for setting in settings:
        name = setting.name
        raw = (form.get(f"set-{name}") or "").strip()
        if setting.type == "secret":
            if raw:  # a new value replaces the stored one, whatever the clear box says
                posted.values[name] = raw
            elif form.get(f"clear-{name}"):
                posted.clear.append(name)
            continue
        try:
            value = _typed(setting, raw, form)
        except ValueError as error:
            posted.errors[name] = str(error)
            posted.shown[name] = raw
            continue
        posted.values[name] = setting.default if value in (None, "") else value
        posted.shown[name] = raw if setting.type in ("int", "number", "json") else (
            posted.values[name])
    return posted


NEW_SECRET_ROWS = 2


def read_named_secrets(form: Any, posted: PostedSettings) -> None:
    """The Secrets section: new name/value rows set a secret, `remove-secret` boxes drop one."""
    named: dict[str, Any] = {}
    for name in form.getlist("remove-secret"):
        named[name] = None
    for i in range(NEW_SECRET_ROWS):
        name = (form.get(f"new-secret-name-{i}") or "").strip()
        value = form.get(f"new-secret-value-{i}") or ""
        if not name and not value:
            continue
        if not name:
            posted.errors["secrets"] = "give the new secret a name"
            continue
        named[name] = value
    if named:
        posted.values["secrets"] = named


def setting_display(settings: Iterable[Field], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The text each non-secret setting shows in its input (secrets never leave the server)."""
    shown: dict[str, Any] = {}
    for setting in settings:
        if setting.type == "secret":
            continue
        value = stored.get(setting.name, setting.default)
        if setting.type == "json" and value is not None:
            value = json.dumps(value, indent=2)
        shown[setting.name] = value
    return shown
