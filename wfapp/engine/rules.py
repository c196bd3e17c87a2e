"""Definition rules: every rule of the design (§2) that a workflow definition must satisfy."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..triggers import TriggerType
from .conditions import OPERATORS, VALUELESS
from .patterns import check_pattern

CODE_RE = re.compile(r"[A-Z0-9_-]{1,20}")
CAPTURE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
FIELD_RE = re.compile(
    r"(?:event|record)(?:\.[^.\s]+)+|instance\.(?:state|record_key|run_id)|instance\.vars(?:\.[^.\s]+)+"
)
MAX_DESCRIPTION = 100
#: Bounds that keep values storable (a 32-bit priority column) and timers computable.
MIN_PRIORITY, MAX_PRIORITY = -1_000_000, 1_000_000
MAX_TIMEOUT_HOURS = 87_600  # ten years


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
    wf: Mapping[str, Any], trigger_types: Mapping[str, TriggerType], prefix: str = "workflow"
) -> list[RuleError]:
    """Check a normalized workflow definition against every rule; return all that are broken."""
    errors: list[RuleError] = []
    check_code(wf.get("code"), f"{prefix}.code", errors)
    check_description(wf.get("description"), f"{prefix}.description", errors)
    states = list(wf.get("states") or [])
    transitions = list(wf.get("transitions") or [])
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
                          trigger_types, errors)
    return errors


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
                      trigger_types: Mapping[str, TriggerType], errors: list[RuleError]) -> None:
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
    for i, condition in enumerate(t.get("conditions") or []):
        errors.extend(check_condition(condition, f"{path}.conditions[{i}]"))
    capture = t.get("capture") or {}
    if not isinstance(capture, Mapping):
        errors.append(RuleError(f"{path}.capture", "must be an object of names to paths"))
        return
    for name, source in capture.items():
        if not CAPTURE_NAME_RE.fullmatch(str(name)):
            errors.append(RuleError(f"{path}.capture.{name}",
                                    "variable name must be a letter or _ then letters, digits, _"))
        if not isinstance(source, str) or not FIELD_RE.fullmatch(source):
            errors.append(RuleError(
                f"{path}.capture.{name}",
                f"path {source!r} must start with event., record. or instance.vars."))


def check_condition(condition: Mapping[str, Any], path: str) -> list[RuleError]:
    """Return what is wrong with one condition (field, operator, value)."""
    errors: list[RuleError] = []
    field = condition.get("field")
    operator = condition.get("operator")
    value = condition.get("value")
    if not isinstance(field, str) or not FIELD_RE.fullmatch(field):
        errors.append(RuleError(
            f"{path}.field", f"field {field!r} must be a path starting with event., record., "
            "instance.vars. (or instance.state, instance.record_key, instance.run_id)"))
    if operator not in OPERATORS:
        errors.append(RuleError(f"{path}.operator",
                                f"unknown operator {operator!r}; known: {' '.join(OPERATORS)}"))
        return errors
    if operator in VALUELESS:
        if value is not None:
            errors.append(RuleError(f"{path}.value", f"operator {operator} takes no value"))
    elif operator in ("in", "not_in"):
        if not isinstance(value, list):
            errors.append(RuleError(f"{path}.value", f"operator {operator} needs a list value"))
    elif operator in ("gt", "ge", "lt", "le"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            errors.append(RuleError(f"{path}.value",
                                    f"operator {operator} needs a number or a string"))
    elif operator in ("matches", "starts_with"):
        if not isinstance(value, str):
            errors.append(RuleError(f"{path}.value", f"operator {operator} needs a string"))
        elif operator == "matches":
            problem = check_pattern(value)
            if problem:
                errors.append(RuleError(f"{path}.value",
                                        f"invalid regular expression (RE2 syntax): {problem}"))
    elif value is None and "value" not in condition:
        errors.append(RuleError(f"{path}.value", f"operator {operator} needs a value"))
    return errors
