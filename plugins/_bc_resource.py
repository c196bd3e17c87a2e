"""Reading Business Central resource URLs and notification items: pure functions, no Flask."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

# The id inside the last parentheses of a path: ".../customers(130bbd17-...)" or "...('A-1')".
LAST_KEY = re.compile(r"\(([^()]*)\)[^()]*$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_RECORD_KEY = 200
MAX_RESOURCE = 2048
MAX_CHANGE_TYPE = 50
MAX_FIELD = 200
COLLECTION = "collection"


def entity_set(resource: str) -> str:
    """The entity set a resource names: `.../companies(1)/salesOrders(2)` → `salesOrders`."""
    path = resource.split("?", 1)[0].rstrip("/")
    return path.rsplit("/", 1)[-1].split("(", 1)[0]


def record_id(resource: str) -> str | None:
    """The id inside the resource path's last parentheses, quotes stripped (None when none)."""
    found = LAST_KEY.search(resource.split("?", 1)[0])
    if found is None:
        return None
    key = unquote(found.group(1)).strip()
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "'\"":
        key = key[1:-1]
    return key or None


def collection_key(resource: str) -> str:
    """The record key of a `collection` notification: `collection:<entity set>`.

    A collection says "many records of this entity set changed", so it is keyed by the entity
    set: in Per Record mode its events all go to one instance, `collection:salesOrders`.
    """
    return f"{COLLECTION}:{entity_set(resource)}"


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def notification_dedupe_key(item: Mapping[str, Any]) -> str:
    """subscriptionId + resource + changeType + lastModifiedDateTime, hashed to a fixed size."""
    return "bc:" + _digest([item.get("subscriptionId"), item.get("resource"),
                            item.get("changeType"), item.get("lastModifiedDateTime")])


def record_dedupe_key(entity_path: str, record: str, modified: str) -> str:
    """A record read while expanding a collection: its entity set path, id and modification."""
    return "bc:rec:" + _digest([entity_path, record, modified])


@dataclass(frozen=True)
class Item:
    """One notification item that passed the shape checks."""

    data: dict[str, Any]
    record_key: str
    change_type: str


class BadItem(ValueError):
    """A notification item that cannot become an event; the message says why."""


def _text(item: Mapping[str, Any], name: str, limit: int, required: bool = True) -> str:
    value = item.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadItem(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise BadItem(f"{name} is longer than {limit} characters")
    return value


def read_item(item: Any) -> Item:
    """Check one item of a notification's `value` list; raise BadItem naming the problem."""
    if not isinstance(item, dict):
        raise BadItem("an item is not an object")
    _text(item, "subscriptionId", MAX_FIELD)
    resource = _text(item, "resource", MAX_RESOURCE)
    change = _text(item, "changeType", MAX_CHANGE_TYPE)
    _text(item, "lastModifiedDateTime", MAX_FIELD)
    _text(item, "clientState", 4096, required=False)
    if change == COLLECTION:
        key = collection_key(resource)
    else:
        found = record_id(resource)
        if found is None:
            raise BadItem("resource has no record id in parentheses")
        key = found
    if len(key) > MAX_RECORD_KEY:
        raise BadItem(f"the record key is longer than {MAX_RECORD_KEY} characters")
    if CONTROL.search(key):
        raise BadItem("the record key holds control characters")
    return Item(item, key, change)


def api_relative(resource: str) -> str | None:
    """A resource as a path below the environment's URL (`api/...`), or None when it is not one.

    Used before reading a collection's records: the path is appended to the configured Business
    Central URL, so it may not name another host, climb out with `..` or hold odd characters.
    """
    path = resource.strip().lstrip("/")
    if not path.startswith("api/") or "://" in path or "\\" in path or CONTROL.search(path):
        return None
    route = path.split("?", 1)[0]
    if ".." in route.split("/") or " " in route:
        return None
    return path


def parse_time(value: Any) -> datetime | None:
    """An ISO time as stored or as Business Central writes it; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def shown(value: Any) -> str:
    """A stored time as people read it: `2026-01-05 10:00:00 UTC` ("" when there is none)."""
    parsed = parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else ""
