"""Request parsing shared by the API modules: JSON bodies, query arguments, cursors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

from flask import request

from ..engine import CODE_RE, RuleError
from ..inputs import InputError, parse_id, parse_json
from ..services.errors import ServiceError, ValidationFailed

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


class InvalidJson(ServiceError):
    """The body is not well-formed JSON (or uses NaN/Infinity, which JSON does not have)."""

    status = 400
    code = "invalid_json"


class UnsupportedMediaType(ServiceError):
    """The body was not sent as application/json."""

    status = 415
    code = "unsupported_media_type"


def iso(value: Any) -> str | None:
    """An ISO 8601 timestamp, or None."""
    return value.isoformat() if value is not None else None


def json_document() -> Any:
    """The request body as any JSON value; 415 unless sent as JSON, 400 when malformed.

    Parsed by the input boundary (wfapp.inputs), as uploads and webhooks are.
    """
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json",
                                   [{"path": "body", "message": "must be application/json"}])
    try:
        return parse_json(request.get_data(cache=True))
    except InputError as error:
        if error.malformed:
            raise InvalidJson(f"body {error.message}",
                              [{"path": error.path, "message": error.message}]) from None
        raise ValidationFailed([RuleError(place, error.message)
                                for place in error.places]) from None


def json_body(allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON object body; unknown or missing fields are errors that name the field."""
    data = json_document()
    if not isinstance(data, dict):
        raise ValidationFailed([RuleError("body", "must be a JSON object")])
    allowed = set(allowed)
    errors = [RuleError(str(k), "unknown field") for k in data if k not in allowed]
    errors += [RuleError(k, "is required") for k in sorted(required) if k not in data]
    if errors:
        raise ValidationFailed(errors)
    return data


def check_types(data: dict[str, Any], types: dict[str, tuple[type, ...]]) -> None:
    """Raise ValidationFailed naming every present field whose JSON type is wrong."""
    names = {bool: "true or false", str: "a string", int: "a whole number", dict: "an object",
             list: "a list"}
    errors = []
    for key, wanted in types.items():
        if key not in data:
            continue
        value = data[key]
        wrong = not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)
        if wrong:
            errors.append(RuleError(key, "must be " + " or ".join(names.get(t, t.__name__)
                                                                  for t in wanted)))
    if errors:
        raise ValidationFailed(errors)


def query_args(allowed: Iterable[str]) -> None:
    """Refuse query parameters this endpoint does not know (a typo should not be ignored)."""
    allowed = set(allowed)
    unknown = [RuleError(k, "unknown query parameter") for k in request.args if k not in allowed]
    if unknown:
        raise ValidationFailed(unknown)


def int_arg(name: str) -> int | None:
    """A whole-number query argument (None when absent)."""
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed([RuleError(name, "must be a whole number")]) from None
    if abs(value) > 2**63 - 1:
        raise ValidationFailed([RuleError(name, "is out of range")])
    return value


def id_arg(name: str) -> int | None:
    """An id query argument such as `run_id` (None when absent; 1 … 2^63−1, else 422)."""
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    value = parse_id(raw)
    if value is None:
        raise ValidationFailed([RuleError(name, "must be an id: a whole number from 1 to "
                                                "9223372036854775807")])
    return value


def limit_arg() -> int:
    """The `limit` query argument: 1 to 500, default 50."""
    value = int_arg("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not 1 <= value <= MAX_LIMIT:
        raise ValidationFailed([RuleError("limit", f"must be between 1 and {MAX_LIMIT}")])
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


def encode_cursor(code: str) -> str:
    """An opaque cursor that resumes a code-ordered list after `code`."""
    raw = json.dumps({"after": code}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_arg() -> str | None:
    """The code a list resumes after, from the opaque `cursor` argument (None when absent)."""
    raw = request.args.get("cursor")
    if raw in (None, ""):
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        after = decoded["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        after = None
    if not isinstance(after, str) or not CODE_RE.fullmatch(after):
        raise ValidationFailed([RuleError("cursor", "is not a cursor this API handed out")])
    return after


def keyset_page(rows: list[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    """Cut a list fetched with `limit + 1` rows into a page and the cursor of the next one."""
    if len(rows) > limit:
        return rows[:limit], encode_cursor(key(rows[limit - 1]))
    return rows, None
