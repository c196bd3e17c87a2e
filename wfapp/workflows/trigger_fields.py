"""The transition pages' dynamic parts: trigger fields, conditions and captured variables.

A trigger type's fields are declared by its plugin (`wfapp.triggers.Field`); they become a
WTForms form built at request time (inputs named `cfg-<name>`). Conditions post as
`cond-<i>-field|operator|value` (`conditions-<i>-…` is read too) and captures as
`cap-<i>-name|path`. Parsing only turns text into typed JSON values; the rules are checked by the
engine through the service, like everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from wtforms import (
    BooleanField,
    Form,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms import Field as FormField
from wtforms.fields.choices import SelectChoice
from wtforms.widgets import CheckboxInput, ListWidget, NumberInput

from ..engine import VALUELESS
from ..inputs import InputError, parse_json
from ..triggers import Field, TriggerType

PREFIX = "cfg"
CONDITION_PREFIXES = ("cond", "conditions")


class _Required:
    """Marks a field required for the label and `aria-required`; the plugin does the check."""

    field_flags = {"required": True}

    def __call__(self, form: Form, field: FormField) -> None:
        """Nothing to check here: the plugin reports a missing value through the service."""


class NumberField(StringField):
    """A number typed as text; whole numbers come back as int, others as float."""

    widget = NumberInput(step="any")

    def __init__(self, *args: Any, whole: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.whole = whole
        self.data: float | None = None

    def process_formdata(self, valuelist: list[Any]) -> None:
        """Parse the posted text; a message on the field when it is not a number."""
        text = (valuelist[0] if valuelist else "").strip()
        self.data = None
        if not text:
            return
        if "," in text and "." not in text:
            text = text.replace(",", ".")  # 0,5 as typed with a decimal comma
        try:
            number = float(text)
        except ValueError:
            raise ValueError("must be a whole number" if self.whole
                             else "must be a number") from None
        if number.is_integer():
            self.data = int(number)
        elif self.whole:
            raise ValueError("must be a whole number")
        else:
            self.data = number

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return "" if self.data is None else f"{self.data:g}" if isinstance(self.data, float) \
            else str(self.data)


class JSONField(TextAreaField):
    """A JSON object typed in a textarea (Headers)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        """Parse the posted text as JSON; a message on the field when it is not JSON."""
        text = (valuelist[0] if valuelist else "").strip()
        self.data = None
        if not text:
            return
        try:
            self.data = parse_json(text)
        except InputError as exc:
            raise ValueError(exc.message) from None

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return "" if self.data is None else json.dumps(self.data, indent=2)


class MultiCheckboxField(SelectMultipleField):
    """A multichoice field shown as a row of checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _form_field(field: Field, secret_stored: bool) -> FormField:
    """The WTForms field for one plugin-declared field."""
    validators = [_Required()] if field.required else []
    description = ("Required. " if field.required else "") + field.help
    kwargs: dict[str, Any] = {"validators": validators, "description": description}
    if field.type == "bool":
        return BooleanField(field.label, default=bool(field.default), **kwargs)
    if field.type == "int":
        return NumberField(field.label, whole=True, default=field.default, **kwargs)
    if field.type == "number":
        return NumberField(field.label, default=field.default, **kwargs)
    if field.type == "choice":
        empty = "(choose)" if field.required else "(any)"
        choices = [SelectChoice("", empty)] + [SelectChoice(v, t) for v, t in field.choices]
        return SelectField(field.label, choices=choices,
                           default=field.default or "", validate_choice=False, **kwargs)
    if field.type == "multichoice":
        return MultiCheckboxField(field.label,
                                  choices=[SelectChoice(v, t) for v, t in field.choices],
                                  default=list(field.default or []), validate_choice=False,
                                  **kwargs)
    if field.type in ("json", "map", "list"):  # typed as JSON on the trigger form
        return JSONField(field.label, default=field.default,
                         render_kw={"rows": 3, "class": "font-monospace",
                                    "placeholder": '{"Authorization": "Bearer …"}'}, **kwargs)
    if field.type == "text":
        return TextAreaField(field.label, default=field.default, render_kw={"rows": 3},
                             **kwargs)
    if field.type == "secret":
        if secret_stored:
            kwargs["description"] = (description + " " if description else "") + \
                "A value is stored; leave empty to keep it."
        return PasswordField(field.label, **kwargs)
    return StringField(field.label, default=field.default, **kwargs)


def trigger_form(trigger: TriggerType | None, formdata: Any = None,
                 config: Mapping[str, Any] | None = None) -> Form:
    """A form of the trigger type's own fields, filled from `formdata` or a stored `config`."""
    config = dict(config or {})
    attrs = {f.name: _form_field(f, f.type == "secret" and bool(config.get(f.name)))
             for f in (trigger.fields if trigger else ())}
    form_class = type("TriggerConfigForm", (Form,), attrs)
    data = {k: v for k, v in config.items() if k in attrs}
    if formdata is not None:
        return form_class(formdata=formdata, prefix=PREFIX)
    return form_class(prefix=PREFIX, data=data or None)


def config_from_form(trigger: TriggerType | None, form: Form,
                     stored: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Typed trigger config from a validated trigger form; empty fields are left out.

    A secret left empty keeps the stored value: secrets are never sent back to the browser.
    """
    config: dict[str, Any] = {}
    for field in trigger.fields if trigger else ():
        value = form[field.name].data
        if field.type == "bool":
            config[field.name] = bool(value)
            continue
        if isinstance(value, str):
            value = value.strip()
        if field.type == "secret" and not value and (stored or {}).get(field.name):
            value = stored[field.name]  # type: ignore[index]
        if value is None or value == "" or value == []:
            continue
        config[field.name] = list(value) if field.type == "multichoice" else value
    return config


def parse_value(operator: str, raw: str) -> Any:
    """A condition value: JSON when the text is JSON (5, true, ["a"]), else the text itself."""
    text = raw.strip()
    if operator in VALUELESS and not text:
        return None
    try:
        value = parse_json(text)
    except InputError:
        value = text
    if operator in ("in", "not_in") and not isinstance(value, list):
        value = [part.strip() for part in text.split(",") if part.strip()] if text else []
    return value


def value_text(value: Any) -> str:
    """Show a condition value so that parsing it again gives the same value."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            parse_json(value)
        except InputError:
            return value
        return json.dumps(value)  # "5" stays a string: shown quoted
    return json.dumps(value)


def _indexes(form: Mapping[str, Any], prefix: str) -> list[int]:
    found = set()
    for key in form:
        if key.startswith(prefix + "-"):
            number = key[len(prefix) + 1:].split("-", 1)[0]
            if number.isdigit():
                found.add(int(number))
    return sorted(found)


def parse_conditions(form: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Condition rows in page order; rows left entirely empty are dropped."""
    rows = []
    for prefix in CONDITION_PREFIXES:
        for i in _indexes(form, prefix):
            field = (form.get(f"{prefix}-{i}-field") or "").strip()
            operator = (form.get(f"{prefix}-{i}-operator") or "").strip()
            raw = form.get(f"{prefix}-{i}-value") or ""
            if not field and not raw.strip():
                continue
            condition: dict[str, Any] = {"field": field, "operator": operator}
            if operator not in VALUELESS or raw.strip():
                # A value typed for exists/not_exists is kept, so the rules can say it is wrong.
                condition["value"] = parse_value(operator, raw)
            rows.append(condition)
    return rows


def parse_captures(form: Mapping[str, Any]) -> dict[str, str]:
    """Captured variables (name → path); empty rows are dropped."""
    capture = {}
    for i in _indexes(form, "cap"):
        name = (form.get(f"cap-{i}-name") or "").strip()
        path = (form.get(f"cap-{i}-path") or "").strip()
        if name or path:
            capture[name] = path
    return capture
