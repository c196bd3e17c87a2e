"""Request parsing shared by the API modules: JSON bodies, query arguments, timestamps."""

from __future__ import annotations

from typing import Any

from flask import request

from ..engine import RuleError
from ..services.errors import ValidationFailed


def iso(value: Any) -> str | None:
    """An ISO 8601 timestamp, or None."""
    return value.isoformat() if value is not None else None


def json_body(allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    """The JSON object body; unknown or missing fields are errors that name the field."""
    data = request.get_json(silent=True)
    if not request.is_json:
        raise ValidationFailed([RuleError("body", "send JSON with Content-Type: "
                                          "application/json")])
    if not isinstance(data, dict):
        raise ValidationFailed([RuleError("body", "must be a JSON object")])
    errors = [RuleError(k, "unknown field") for k in data if k not in allowed]
    errors += [RuleError(k, "is required") for k in sorted(required) if k not in data]
    if errors:
        raise ValidationFailed(errors)
    return data


def int_arg(name: str) -> int | None:
    """A whole-number query argument (None when absent)."""
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationFailed([RuleError(name, "must be a whole number")]) from None


def limit_arg() -> int:
    """The `limit` query argument: 1 to 500, default 50."""
    value = int_arg("limit")
    if value is None:
        return 50
    if not 1 <= value <= 500:
        raise ValidationFailed([RuleError("limit", "must be between 1 and 500")])
    return value


def bool_arg(name: str) -> bool | None:
    """A true/false query argument (None when absent)."""
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationFailed([RuleError(name, "must be true or false")])


def json_document() -> Any:
    """The request body as any JSON value (for documents such as a workflow export)."""
    if not request.is_json:
        raise ValidationFailed([RuleError("body", "send JSON with Content-Type: "
                                          "application/json")])
    data = request.get_json(silent=True)
    if data is None:
        raise ValidationFailed([RuleError("body", "is not valid JSON")])
    return data


def page_of(items: list[Any], key: Any, limit: int, cursor: str | None
            ) -> tuple[list[Any], str | None]:
    """Keyset pagination over an already ordered list by `key` (for small, code-ordered lists)."""
    if cursor:
        items = [i for i in items if key(i) > cursor]
    page = items[:limit]
    return page, (key(page[-1]) if len(items) > limit else None)
