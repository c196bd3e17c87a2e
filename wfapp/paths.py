"""Dotted-path lookups into nested JSON values, shared by the engine and the plugins."""

from __future__ import annotations

from typing import Any


class _Missing:
    """Sentinel for a path that does not exist (distinct from a null value)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


def resolve_path(value: Any, path: str) -> Any:
    """Follow `a.b.0.c` through dicts and lists; return MISSING where it does not exist."""
    if not path:
        return value
    for part in path.split("."):
        if isinstance(value, dict):
            if part not in value:
                return MISSING
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value
