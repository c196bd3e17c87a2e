"""Definition rules: every rule of the design (§2) that a workflow definition must satisfy."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..actions import ACTION_ID_PATTERN, ActionType
from ..triggers import TriggerType
from .conditions import OPERATORS, VALUELESS
from .patterns import check_pattern

CODE_RE = re.compile(r"[A-Z0-9_-]{1,20}")
CAPTURE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
FIELD_RE = re.compile(
    r"(?:event|record)(?:\.[^.\s]+)+|instance\.(?:state|record_key|run_id)|instance\.vars(?:\.[^.\s]+)+"
)
ACTION_ID_RE = re.compile(ACTION_ID_PATTERN)
MAX_DESCRIPTION = 100
#: Bounds that keep values storable (a 32-bit priority column) and timers computable.
MIN_PRIORITY, MAX_PRIORITY = -1_000_000, 1_000_000
MAX_TIMEOUT_HOURS = 87_600  # ten years


@dataclass(frozen=True)
class Limits:
    """How big a definition may be; every door (import, API, forms) enforces the same limits.

    Configurable through DEFINITION_LIMITS, e.g. {"states": 400}.
    """

    states: int = 200
    transitions: int = 500
    conditions: int = 50        # per transition
    captures: int = 50          # per transition
    value_length: int = 1000    # characters of a condition value (or of one item of a list)
    list_items: int = 500       # items of an `in` / `not_in` value
    path_length: int = 200      # characters of a condition field or a captured path
    actions: int = 20           # per transition


DEFAULT_LIMITS = Limits()
ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?")


@dataclass(frozen=True)
class RuleError:
    """One broken rule, with the place it concerns (`workflow.states[2].code`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def normalize_code(value: Any) -> Any:
    """Codes are stored upper-case; anything that is not a string is left for validation."""
    return value.strip().upper() if isinstance(value, str) else value


def check_code(value: Any, path: str, errors: list[RuleError], label: str = "code") -> None:
    """Append an error unless `value` is a well-formed code (1-20 of A-Z 0-9 _ -)."""
    if not isinstance(value, str) or not value:
        errors.append(RuleError(path, f"{label} is required"))
    elif not CODE_RE.fullmatch(value):
        errors.append(RuleError(
            path, f"{label} {value!r} must be 1-20 characters of A-Z, 0-9, _ and -"))


def check_description(value: Any, path: str, errors: list[RuleError]) -> None:
    """Append an error unless `value` is empty or a storable description (no NUL, not too long)."""
    if not value:
        return
    if not isinstance(value, str):
        errors.append(RuleError(path, "must be a string"))
    elif len(value) > MAX_DESCRIPTION:
        errors.append(RuleError(path, f"must be at most {MAX_DESCRIPTION} characters"))
    elif "\x00" in value:
        errors.append(RuleError(path, "must not contain NUL characters"))


def validate_workflow(
    wf: Mapping[str, Any], trigger_types: Mapping[str, TriggerType], prefix: str = "workflow",
    limits: Limits = DEFAULT_LIMITS, action_types: Mapping[str, ActionType] | None = None,
) -> list[RuleError]:
    """Check a normalized workflow definition against every rule; return all that are broken.

    Transition actions are checked against `action_types` (none is known when it is None).
    """
    errors: list[RuleError] = []
    check_code(wf.get("code"), f"{prefix}.code", errors)
    check_description(wf.get("description"), f"{prefix}.description", errors)
    states = list(wf.get("states") or [])
    transitions = list(wf.get("transitions") or [])
    if len(states) > limits.states:
        return [RuleError(f"{prefix}.states", f"a workflow may have at most {limits.states} "
                          f"states; this one has {len(states)}")]
    if len(transitions) > limits.transitions:
        return [RuleError(f"{prefix}.transitions", f"a workflow may have at most "
                          f"{limits.transitions} transitions; this one has {len(transitions)}")]
    state_codes = _unique_codes(states, f"{prefix}.states", errors)
    transition_by_code = {
        t["code"]: t for t in transitions if isinstance(t.get("code"), str)
    }
    _unique_codes(transitions, f"{prefix}.transitions", errors)

    if not states:
        errors.append(RuleError(f"{prefix}.states", "a workflow needs at least one state"))
    initial = wf.get("initial_state")
    if not initial:
        errors.append(RuleError(f"{prefix}.initial_state", "initial state is required"))
    elif initial not in state_codes:
        errors.append(RuleError(f"{prefix}.initial_state",
                                f"initial state {initial!r} is not a state of this workflow"))
    marked = [s.get("code") for s in states if s.get("is_initial")]
    if len(marked) != 1 and states:
        errors.append(RuleError(
            f"{prefix}.states",
            f"exactly one state must be marked initial; {len(marked)} are"
            + (f" ({', '.join(map(str, marked))})" if marked else "")))
    elif marked and initial in state_codes and marked[0] != initial:
        errors.append(RuleError(
            f"{prefix}.initial_state",
            f"initial state {initial!r} differs from the state marked initial ({marked[0]!r})"))

    final_codes = {s.get("code") for s in states if s.get("is_final")}
    for i, state in enumerate(states):
        _check_state(state, f"{prefix}.states[{i}]", transition_by_code, errors)
    for i, transition in enumerate(transitions):
        _check_transition(transition, f"{prefix}.transitions[{i}]", state_codes, final_codes,
                          trigger_types, errors, limits)
        check_actions(transition.get("actions"), f"{prefix}.transitions[{i}].actions",
                      action_types or {}, errors, limits)
    return errors


def check_actions(actions: Any, path: str, action_types: Mapping[str, ActionType],
                  errors: list[RuleError], limits: Limits = DEFAULT_LIMITS) -> None:
    """Check a transition's `actions`: a list of {id, type, config}, ids unique, configs valid."""
    if actions is None:
        return
    if not isinstance(actions, list):
        errors.append(RuleError(path, "must be a list of actions"))
        return
    if len(actions) > limits.actions:
        errors.append(RuleError(path, f"a transition may have at most {limits.actions} "
                                f"actions; this one has {len(actions)}"))
        return
    seen: set[str] = set()
    for i, action in enumerate(actions):
        where = f"{path}[{i}]"
        if not isinstance(action, Mapping):
            errors.append(RuleError(where, "must be an object with type and config"))
            continue
        for key in action:
            if key not in ("id", "type", "config"):
                errors.append(RuleError(f"{where}.{key}", "unknown field"))
        ident = action.get("id")
        if ident not in (None, ""):
            if not isinstance(ident, str) or not ACTION_ID_RE.fullmatch(ident):
                errors.append(RuleError(f"{where}.id", "must be 1–40 letters, digits, _ . or -"))
            elif ident in seen:
                errors.append(RuleError(f"{where}.id", f"duplicate action id {ident!r}"))
            else:
                seen.add(ident)
        kind = action.get("type")
        found = action_types.get(kind) if isinstance(kind, str) else None
        if found is None:
            known = ", ".join(action_types) or "none"
            errors.append(RuleError(f"{where}.type",
                                    f"unknown action type {kind!r}; known: {known}"))
            continue
        for name, message in found.validate(action.get("config") or {}):
            errors.append(RuleError(f"{where}.config" + (f".{name}" if name else ""), message))


def _unique_codes(rows: list[Mapping[str, Any]], path: str, errors: list[RuleError]) -> set[str]:
    seen: set[str] = set()
    for i, row in enumerate(rows):
        code = row.get("code")
        check_code(code, f"{path}[{i}].code", errors)
        if isinstance(code, str) and code:
            if code in seen:
                errors.append(RuleError(f"{path}[{i}].code", f"duplicate code {code!r}"))
            seen.add(code)
    return seen


def _check_state(state: Mapping[str, Any], path: str, transitions: Mapping[str, Any],
                 errors: list[RuleError]) -> None:
    check_description(state.get("description"), f"{path}.description", errors)
    if state.get("is_initial") and state.get("is_final"):
        errors.append(RuleError(f"{path}.is_final", "the initial state cannot be final"))
    hours = state.get("timeout_hours")
    on_timeout = state.get("on_timeout_transition")
    if hours is not None:
        if (isinstance(hours, bool) or not isinstance(hours, int | float)
                or (isinstance(hours, float) and math.isnan(hours)) or hours <= 0):
            errors.append(RuleError(f"{path}.timeout_hours",
                                    "timeout must be a number of hours greater than 0"))
        elif hours > MAX_TIMEOUT_HOURS:
            errors.append(RuleError(f"{path}.timeout_hours",
                                    f"timeout must be at most {MAX_TIMEOUT_HOURS} hours"))
        elif state.get("is_final"):
            errors.append(RuleError(f"{path}.timeout_hours", "a final state has no timeout"))
        elif not on_timeout:
            errors.append(RuleError(f"{path}.on_timeout_transition",
                                    "a state with a timeout needs an On Timeout Transition"))
    if on_timeout:
        transition = transitions.get(on_timeout)
        if transition is None:
            errors.append(RuleError(f"{path}.on_timeout_transition",
                                    f"transition {on_timeout!r} does not exist"))
        elif transition.get("from_state") != state.get("code"):
            errors.append(RuleError(
                f"{path}.on_timeout_transition",
                f"transition {on_timeout!r} leaves {transition.get('from_state')!r}, "
                f"not {state.get('code')!r}"))
        elif hours is None:
            errors.append(RuleError(f"{path}.timeout_hours",
                                    "an On Timeout Transition needs a timeout"))


def _check_transition(t: Mapping[str, Any], path: str, states: set[str], finals: set[Any],
                      trigger_types: Mapping[str, TriggerType], errors: list[RuleError],
                      limits: Limits = DEFAULT_LIMITS) -> None:
    check_description(t.get("description"), f"{path}.description", errors)
    for key in ("from_state", "to_state"):
        code = t.get(key)
        if not code:
            errors.append(RuleError(f"{path}.{key}", f"{key.replace('_', ' ')} is required"))
        elif code not in states:
            errors.append(RuleError(f"{path}.{key}", f"state {code!r} does not exist"))
    if t.get("from_state") in finals:
        errors.append(RuleError(
            f"{path}.from_state",
            f"state {t['from_state']!r} is final; nothing leaves a final state"))
    priority = t.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        errors.append(RuleError(f"{path}.priority", "priority must be a whole number"))
    elif not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        errors.append(RuleError(f"{path}.priority",
                                f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}"))
    trigger = trigger_types.get(t.get("trigger_type") or "")
    if trigger is None:
        errors.append(RuleError(
            f"{path}.trigger_type",
            f"unknown trigger type {t.get('trigger_type')!r}; known: {', '.join(trigger_types)}"))
    else:
        for name, message in trigger.validate(t.get("trigger_config") or {}):
            where = f"{path}.trigger_config" + (f".{name}" if name else "")
            errors.append(RuleError(where, message))
    conditions = t.get("conditions") or []
    if len(conditions) > limits.conditions:
        errors.append(RuleError(f"{path}.conditions", f"a transition may have at most "
                                f"{limits.conditions} conditions; this one has {len(conditions)}"))
    else:
        for i, condition in enumerate(conditions):
            errors.extend(check_condition(condition, f"{path}.conditions[{i}]", limits))
    capture = t.get("capture") or {}
    if not isinstance(capture, Mapping):
        errors.append(RuleError(f"{path}.capture", "must be an object of names to paths"))
        return
    if len(capture) > limits.captures:
        errors.append(RuleError(f"{path}.capture", f"a transition may capture at most "
                                f"{limits.captures} variables; this one captures {len(capture)}"))
        return
    for name, source in capture.items():
        if not CAPTURE_NAME_RE.fullmatch(str(name)):
            errors.append(RuleError(f"{path}.capture.{name}",
                                    "variable name must be a letter or _ then letters, digits, _"))
        if not isinstance(source, str) or len(source) > limits.path_length or \
                not FIELD_RE.fullmatch(source):
            errors.append(RuleError(
                f"{path}.capture.{name}",
                f"path {source!r} must start with event., record. or instance.vars."))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _too_long(value: Any, limits: Limits) -> bool:
    return isinstance(value, str) and len(value) > limits.value_length


def _orderable(value: Any) -> bool:
    """A number, a numeric string or an ISO date/time: what gt/ge/lt/le compare sensibly."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return not (isinstance(value, float) and math.isnan(value))
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return bool(ISO_DATE_RE.fullmatch(value.strip()))
    return True


def check_condition(condition: Mapping[str, Any], path: str,
                    limits: Limits = DEFAULT_LIMITS) -> list[RuleError]:
    """Return what is wrong with one condition (field, operator, value for that operator)."""
    errors: list[RuleError] = []
    field = condition.get("field")
    operator = condition.get("operator")
    value = condition.get("value")
    if not isinstance(field, str) or len(field) > limits.path_length or \
            not FIELD_RE.fullmatch(field):
        errors.append(RuleError(
            f"{path}.field", f"field {_short(field)} must be a path starting with event., "
            "record., instance.vars. (or instance.state, instance.record_key, "
            f"instance.run_id), at most {limits.path_length} characters"))
    if operator not in OPERATORS:
        errors.append(RuleError(f"{path}.operator",
                                f"unknown operator {_short(operator)}; known: "
                                f"{' '.join(OPERATORS)}"))
        return errors
    where = f"{path}.value"
    if operator in VALUELESS:
        if value is not None:
            errors.append(RuleError(where, f"operator {operator} takes no value"))
    elif value is None and "value" not in condition:
        errors.append(RuleError(where, f"operator {operator} needs a value"))
    elif operator in ("in", "not_in"):
        if not isinstance(value, list):
            errors.append(RuleError(where, f"operator {operator} needs a list value"))
        elif len(value) > limits.list_items:
            errors.append(RuleError(where, f"a list may have at most {limits.list_items} "
                                           "items"))
        elif not all(_scalar(v) for v in value):
            errors.append(RuleError(where, "the items must be text, numbers, true/false or null"))
        elif any(_too_long(v, limits) for v in value):
            errors.append(RuleError(where, f"an item is longer than {limits.value_length} "
                                           "characters"))
    elif _too_long(value, limits):
        errors.append(RuleError(where, f"must be at most {limits.value_length} characters"))
    elif operator in ("gt", "ge", "lt", "le"):
        if not _orderable(value):
            errors.append(RuleError(where, f"operator {operator} needs a number (or a date such "
                                           f"as 2026-01-31); {_short(value)} is neither"))
    elif operator in ("matches", "starts_with"):
        if not isinstance(value, str):
            errors.append(RuleError(where, f"operator {operator} needs a string"))
        elif operator == "matches":
            problem = check_pattern(value)
            if problem:
                errors.append(RuleError(where,
                                        f"invalid regular expression (RE2 syntax): {problem}"))
    return errors


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
