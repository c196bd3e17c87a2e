"""Reading the transition detail page's dynamic parts: trigger fields, conditions, captures.

The trigger type's fields are declared by its plugin (`wfapp.triggers.Field`); the page posts
them as `cfg-<name>`, conditions as `cond-<i>-field|operator|value` and captures as
`cap-<i>-name|path`. Parsing turns the posted text into typed JSON values; the rules are then
checked by the engine through the service, like everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..engine import VALUELESS
from ..triggers import Field


def config_value_text(field: Field, value: Any) -> str:
    """How a stored config value is shown in its input."""
    if value is None:
        return ""
    if field.type == "json":
        return json.dumps(value, indent=2)
    if field.type in ("int", "number"):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return str(value)


def parse_config(fields: tuple[Field, ...], form: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed trigger config from the posted form; errors by field name for unparsable text."""
    config: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields:
        key = f"cfg-{field.name}"
        if field.type == "bool":
            config[field.name] = key in form
            continue
        if field.type == "multichoice":
            values = form.getlist(key) if hasattr(form, "getlist") else form.get(key) or []
            if values:
                config[field.name] = list(values)
            continue
        raw = (form.get(key) or "").strip()
        if raw == "":
            continue
        if field.type == "int":
            try:
                config[field.name] = int(raw)
            except ValueError:
                errors[field.name] = "must be a whole number"
        elif field.type == "number":
            try:
                number = float(raw)
                config[field.name] = int(number) if number.is_integer() else number
            except ValueError:
                errors[field.name] = "must be a number"
        elif field.type == "json":
            try:
                config[field.name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors[field.name] = f"is not valid JSON: {exc.msg}"
        else:
            config[field.name] = raw
    return config, errors


def parse_value(operator: str, raw: str) -> Any:
    """A condition value: JSON when the text is JSON (5, true, ["a"]), else the text itself."""
    if operator in VALUELESS:
        return None
    text = raw.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
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
            json.loads(value)
        except json.JSONDecodeError:
            return value
        return json.dumps(value)  # "5" stays a string: shown quoted
    return json.dumps(value)


def _indexes(form: Mapping[str, Any], prefix: str) -> list[int]:
    found = set()
    for key in form:
        if key.startswith(prefix):
            number = key[len(prefix):].split("-", 1)[0]
            if number.isdigit():
                found.add(int(number))
    return sorted(found)


def parse_conditions(form: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Condition rows in page order; rows left entirely empty are dropped."""
    rows = []
    for i in _indexes(form, "cond-"):
        field = (form.get(f"cond-{i}-field") or "").strip()
        operator = (form.get(f"cond-{i}-operator") or "").strip()
        raw = form.get(f"cond-{i}-value") or ""
        if not field and not raw.strip():
            continue
        condition: dict[str, Any] = {"field": field, "operator": operator}
        if operator not in VALUELESS:
            condition["value"] = parse_value(operator, raw)
        rows.append(condition)
    return rows


def parse_captures(form: Mapping[str, Any]) -> dict[str, str]:
    """Captured variables (name → path); empty rows are dropped."""
    capture = {}
    for i in _indexes(form, "cap-"):
        name = (form.get(f"cap-{i}-name") or "").strip()
        path = (form.get(f"cap-{i}-path") or "").strip()
        if name or path:
            capture[name] = path
    return capture
