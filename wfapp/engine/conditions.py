"""Conditions: evaluating `field operator value` against {event, record, instance}."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..paths import MISSING, resolve_path
from .patterns import MAX_VALUE_LENGTH, full_match

OPERATORS = (
    "eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "starts_with",
    "exists", "not_exists", "matches",
)
OPERATOR_LABELS = {
    "eq": "equals", "ne": "does not equal", "gt": "greater than", "ge": "greater or equal",
    "lt": "less than", "le": "less or equal", "in": "is one of", "not_in": "is not one of",
    "contains": "contains", "starts_with": "starts with", "exists": "exists",
    "not_exists": "does not exist", "matches": "matches (regex)",
}
VALUELESS = {"exists", "not_exists"}

def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(actual: Any, expected: Any) -> bool:
    if actual == expected and type(actual) is not bool and type(expected) is not bool:
        return True
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected or str(actual).lower() == str(expected).lower()
    a, b = _number(actual), _number(expected)
    if a is not None and b is not None:
        return a == b
    return False


def _order(actual: Any, expected: Any) -> tuple[Any, Any] | None:
    a, b = _number(actual), _number(expected)
    if a is not None and b is not None:
        return a, b
    if isinstance(actual, str) and isinstance(expected, str):
        return actual, expected
    return None


def _contains(actual: Any, expected: Any) -> bool:
    if expected is None and not isinstance(actual, list):
        return False  # null is not a substring or a key ("None of it" does not contain null)
    if isinstance(actual, str):
        return str(expected) in actual
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    if isinstance(actual, dict):
        return str(expected) in actual
    return False


def compare(operator: str, actual: Any, expected: Any) -> bool:
    """Apply one operator; a MISSING actual value is false for all but not_exists."""
    if operator == "not_exists":
        return actual is MISSING
    if actual is MISSING:
        return False
    if operator == "exists":
        return True
    if operator == "eq":
        return _equal(actual, expected)
    if operator == "ne":
        return not _equal(actual, expected)
    if operator in ("gt", "ge", "lt", "le"):
        pair = _order(actual, expected)
        if pair is None:
            return False
        a, b = pair
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[operator]
    if operator == "in":
        return isinstance(expected, list) and any(_equal(actual, v) for v in expected)
    if operator == "not_in":
        return isinstance(expected, list) and not any(_equal(actual, v) for v in expected)
    if operator == "contains":
        return _contains(actual, expected)
    if operator == "starts_with":
        return isinstance(actual, str | int | float) and str(actual).startswith(str(expected))
    if operator == "matches":
        return isinstance(actual, str | int | float) and not isinstance(actual, bool) and \
            full_match(str(expected), str(actual))
    raise ValueError(f"unknown operator {operator!r}")


def evaluate_condition(condition: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    """Evaluate one condition against the context {event, record, instance}."""
    actual = resolve_path(context, condition["field"])
    return compare(condition["operator"], actual, condition.get("value"))


def explain_condition(condition: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """Say why a condition is false, e.g. `event.total gt 0 was false because event.total is 0`."""
    field = condition["field"]
    actual = resolve_path(context, field)
    shown = "missing" if actual is MISSING else _shown(actual)
    value = "" if condition["operator"] in VALUELESS else f" {_shown(condition.get('value'))}"
    why = f"{field} is {shown}"
    if condition["operator"] == "matches" and isinstance(actual, str) and \
            len(actual) > MAX_VALUE_LENGTH:
        why = f"{field} is longer than {MAX_VALUE_LENGTH} characters, which never match"
    return f"condition {field} {condition['operator']}{value} was false because {why}"


def _shown(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_failed_condition(
    conditions: Iterable[Mapping[str, Any]], context: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """Return the first condition that does not hold, or None when all hold."""
    for condition in conditions:
        if not evaluate_condition(condition, context):
            return condition
    return None


def field_suggestions(vars_names: Iterable[str] = (), record_fields: Iterable[str] = (),
                      event_fields: Iterable[str] = ()) -> list[str]:
    """Paths offered in the conditions editor: record., event. and instance.vars. fields."""
    paths = ["instance.state", "instance.record_key", "instance.run_id"]
    paths += [f"record.{name}" for name in sorted(set(record_fields))]
    paths += [f"event.{name}" for name in sorted(set(event_fields))]
    paths += [f"instance.vars.{name}" for name in sorted(set(vars_names))]
    return paths

