"""The input boundary: parsing untrusted JSON the same way at every door.

Every entry point that takes a JSON body or file (the API, uploads, webhooks, plugins) parses it
here, so the same bad input gets the same answer everywhere: not UTF-8, malformed, `NaN` or
`Infinity` (not JSON), nested too deeply, numbers too long, duplicate keys, NUL characters
(which no database stores). A problem is an `InputError` naming the place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.routing import IntegerConverter

MAX_DEPTH = 64
MAX_NUMBER_DIGITS = 100


class InputError(ValueError):
    """Input that cannot be accepted; `path` names the place ("body", "data.items[2]")."""

    def __init__(self, message: str, path: str = "body", *, malformed: bool = True,
                 places: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        #: Every place with this problem (NUL characters can be in several), `path` first.
        self.places = places or [path]
        #: True when the input is not (acceptable) JSON at all; False when it is JSON whose
        #: content breaks a rule (NUL characters, duplicate keys).
        self.malformed = malformed


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _big_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS + 10:
        raise ValueError(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number is too large")
    return value


class _DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def parse_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON (UTF-8, a BOM allowed); raise InputError naming what is wrong."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.lstrip("\ufeff")
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_int=_big_int,
                           parse_float=_float, object_pairs_hook=_pairs)
    except _DuplicateKey as exc:
        raise InputError(f"has the key {exc.args[0]!r} twice in one object",
                         malformed=False) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"is not valid JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}") from None
    except RecursionError:
        raise InputError("is nested too deeply") from None
    except MemoryError:
        raise InputError("is too large to read") from None
    except ValueError as exc:  # NaN, Infinity, numbers too long
        raise InputError(f"is not valid JSON: {exc}") from None
    check_value(value, max_depth=max_depth)
    return value


def check_value(value: Any, *, max_depth: int = MAX_DEPTH, root: str = "") -> None:
    """Refuse nesting deeper than `max_depth` and NUL characters (naming every place)."""
    # Places are kept as (parent, key) links and spelled out only for what is refused: every
    # webhook payload passes through here, and almost none has anything to name.
    found: list[Any] = []
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        item, depth, node = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append(node)
            continue
        children: Iterable[tuple[Any, Any]]
        if isinstance(item, dict):
            children = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            continue
        if depth >= max_depth:
            raise InputError(f"is nested more than {max_depth} levels deep",
                             _place(root, node) or "body")
        for key, child in children:
            if isinstance(key, str) and "\x00" in key:
                found.append((node, key))
            elif isinstance(child, str):
                if "\x00" in child:
                    found.append((node, key))
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1, (node, key)))
    if found:
        places = sorted(_place(root, node) or "body" for node in found)
        raise InputError("must not contain NUL characters", places[0], malformed=False,
                         places=places)


def _place(root: str, node: Any) -> str:
    """The dotted place of a (parent, key) link below `root`: a.b[0].c."""
    keys = []
    while node is not None:
        node, key = node
        keys.append(key)
    place = root
    for key in reversed(keys):
        place = f"{place}[{key}]" if isinstance(key, int) else (
            f"{place}.{key}" if place else str(key))
    return place


MAX_ID = 2**63 - 1


class IdConverter(IntegerConverter):
    """The `int` URL converter of wfapp's routes: ids a BIGINT can hold.

    A number beyond 2^63−1 becomes 0, an id no row has, so the view answers its usual 404
    instead of the database failing on the query (refusing the match would make werkzeug answer
    405 for the other methods of the same path).
    """

    def to_python(self, value: str) -> int:
        """The id, or 0 for a number no BIGINT holds."""
        number = super().to_python(value)
        return number if 0 <= number <= MAX_ID else 0


def parse_id(raw: str | int | None) -> int | None:
    """A database id from text: a whole number 1 … 2^63−1, else None (callers answer 404/422)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 1 <= raw <= MAX_ID else None
    text = (raw or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


MAX_CSV_FIELD = 100_000


def parse_csv(raw: bytes) -> list[dict[str, str]]:
    """Rows of an uploaded CSV file (UTF-8, a BOM allowed) as dicts keyed by the header row."""
    import csv
    import io

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text", "file") from None
    if "\x00" in text:
        raise InputError("must not contain NUL characters", "file", malformed=False)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        for row in reader:
            for key, value in row.items():
                if key is None or isinstance(value, list):
                    raise InputError(f"line {reader.line_num} has more fields than the header",
                                     "file")
                if value is not None and len(value) > MAX_CSV_FIELD:
                    raise InputError(f"line {reader.line_num}: a field is longer than "
                                     f"{MAX_CSV_FIELD} characters", "file")
            rows.append({k: (v or "") for k, v in row.items()})
    except csv.Error as exc:
        raise InputError(f"is not valid CSV: {exc} (line {reader.line_num})", "file") from None
    if reader.fieldnames is None:
        raise InputError("is empty: a CSV file needs a header row", "file")
    return rows
