"""Small pieces the instance, event and run pages share: id bounds, text checks, safe returns."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import request
from wtforms import Field
from wtforms.validators import ValidationError

from ..inputs import MAX_ID  # ids are BIGINT: larger ones cannot exist


def no_nul(form: Any, field: Field) -> None:
    """Text with a NUL character cannot be stored or compared (PostgreSQL refuses it)."""
    if isinstance(field.data, str) and "\x00" in field.data:
        raise ValidationError("must not contain a NUL character")


def local_url(url: str | None, default: str) -> str:
    """`url` when it points into this site (a path, or this host), else `default`."""
    if not url:
        return default
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https") or parts.netloc not in ("", request.host) \
            or not parts.path.startswith("/") or parts.path.startswith("//") or "\\" in url:
        return default
    return urlunsplit(("", "", parts.path, parts.query, parts.fragment))


def an_id(form: Any, field: Field) -> None:
    """An id typed into a filter: a whole number in the BIGINT range (skipped when unreadable,
    the field already says it is not a whole number)."""
    if field.data is not None and not 1 <= field.data <= MAX_ID:
        raise ValidationError("must be an id: a whole number from 1 up")
