"""Lint: the author's likely mistakes in a workflow definition, found before an instance does.

Errors are the definition rules of `rules.validate_workflow` (they block a save); warnings are
legal definitions that probably do not do what their author meant. Everything works on the
normalized definition (the export shape's `workflow`), so lint is pure and fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..triggers import TriggerType
from .rules import DEFAULT_LIMITS, Limits, validate_workflow


@dataclass(frozen=True)
class LintItem:
    """One finding: a stable `code`, a sentence, and the place (`workflow.states[2]`)."""

    code: str
    message: str
    path: str

    def as_dict(self) -> dict[str, str]:
        """The JSON shape of an item."""
        return asdict(self)


@dataclass
class LintReport:
    """What lint found: errors (blocking) and warnings (advice)."""

    errors: list[LintItem] = field(default_factory=list)
    warnings: list[LintItem] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        """The JSON shape of a report: `{"errors": [...], "warnings": [...]}`."""
        return {"errors": [e.as_dict() for e in self.errors],
                "warnings": [w.as_dict() for w in self.warnings]}


def lint_workflow(wf: Mapping[str, Any], trigger_types: Mapping[str, TriggerType],
                  limits: Limits = DEFAULT_LIMITS, prefix: str = "workflow") -> LintReport:
    """Lint a normalized definition: the rule errors, then every warning."""
    errors = [LintItem("rule", e.message, e.path)
              for e in validate_workflow(wf, trigger_types, prefix, limits)]
    return LintReport(errors, lint_warnings(wf, trigger_types, prefix))


def lint_warnings(wf: Mapping[str, Any], trigger_types: Mapping[str, TriggerType],
                  prefix: str = "workflow") -> list[LintItem]:
    """The warnings of a normalized definition (tolerates dangling references)."""
    states = [s for s in wf.get("states") or [] if isinstance(s.get("code"), str)]
    transitions = [t for t in wf.get("transitions") or [] if isinstance(t.get("code"), str)]
    t_index = {t["code"]: i for i, t in enumerate(wf.get("transitions") or [])
               if isinstance(t.get("code"), str)}
    s_index = {s["code"]: i for i, s in enumerate(wf.get("states") or [])
               if isinstance(s.get("code"), str)}
    out: list[LintItem] = []

    def spath(code: str) -> str:
        return f"{prefix}.states[{s_index[code]}]"

    def tpath(code: str) -> str:
        return f"{prefix}.transitions[{t_index[code]}]"

    enabled = [t for t in transitions if t.get("enabled", True)]
    forward: dict[str, set[str]] = {}
    backward: dict[str, set[str]] = {}
    for t in enabled:
        forward.setdefault(t.get("from_state"), set()).add(t.get("to_state"))
        backward.setdefault(t.get("to_state"), set()).add(t.get("from_state"))
    finals = {s["code"] for s in states if s.get("is_final")}
    reachable = _closure({wf.get("initial_state")}, forward)
    every_edge: dict[str, set[str]] = {}
    for t in transitions:
        every_edge.setdefault(t.get("from_state"), set()).add(t.get("to_state"))
    reachable_if_enabled = _closure({wf.get("initial_state")}, every_edge)
    can_finish = _closure(finals, backward)
    leaving = {t.get("from_state") for t in enabled}

    for s in states:
        code = s["code"]
        if code not in reachable:
            hint = (" only through disabled transitions" if code in reachable_if_enabled
                    else " by any transition")
            out.append(LintItem("unreachable_state", f"state {code} cannot be reached from the "
                                f"initial state {wf.get('initial_state')}{hint}; no instance "
                                "gets there except by Reset to State", spath(code)))
        if s.get("is_final"):
            continue
        if code not in leaving:
            out.append(LintItem("stuck_state", f"state {code} is not final but no enabled "
                                "transition leaves it: an instance that gets there stays "
                                "forever", spath(code)))
        elif finals and code not in can_finish:
            out.append(LintItem("no_path_to_final", f"no path of enabled transitions leads "
                                f"from state {code} to a final state: its instances never "
                                "complete", spath(code)))
    if states and not finals:
        out.append(LintItem("no_final_state", "the workflow has no final state: no instance "
                            "ever completes (stops being active)", f"{prefix}.states"))

    by_code = {t["code"]: t for t in transitions}
    for s in states:
        name = s.get("on_timeout_transition")
        target = by_code.get(name) if name else None
        if target is not None and not target.get("enabled", True) and s.get("timeout_hours"):
            out.append(LintItem(
                "disabled_timeout", f"state {s['code']} times out into transition {name}, which "
                "is disabled: when the timer falls due the instance stays and history records "
                "'timeout transition disabled'", f"{spath(s['code'])}.on_timeout_transition"))

    out += _ambiguous_pairs(enabled, trigger_types, tpath)
    out += _unknown_event_fields(transitions, trigger_types, tpath)

    timed = {s["code"] for s in states if s.get("timeout_hours")}
    for t in transitions:
        if t.get("from_state") == t.get("to_state") and not t.get("capture") \
                and not t.get("actions"):
            if t.get("from_state") in timed:
                continue  # re-entering restarts the state's timer: that is its purpose
            out.append(LintItem(
                "idle_self_loop", f"transition {t['code']} leads from {t.get('from_state')} "
                "back to it, captures nothing and has no action: firing it changes nothing "
                "but the history, and it hides the transitions after it", tpath(t["code"])))
    return out


def _closure(start: Iterable[Any], edges: Mapping[Any, set[Any]]) -> set[Any]:
    """Every node reachable from `start` along `edges` (start included)."""
    seen = set(start)
    todo = list(seen)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _order(t: Mapping[str, Any]) -> tuple[int, str]:
    priority = t.get("priority", 0)
    return (priority if isinstance(priority, int) else 0, t["code"])


#: Pairs the ambiguity check compares at most (the check is quadratic in a state's fan-out).
MAX_PAIRS = 20_000


def _ambiguous_pairs(enabled: list[dict[str, Any]], trigger_types: Mapping[str, TriggerType],
                     tpath: Any) -> list[LintItem]:
    """Transitions that an earlier one (by priority) on the same trigger may shadow.

    One warning per shadowed transition, naming the first transition that may match the same
    event. Comparisons stop after MAX_PAIRS, with a warning that says so.
    """
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for t in enabled:
        groups.setdefault((t.get("from_state"), t.get("trigger_type")), []).append(t)
    out = []
    budget = MAX_PAIRS
    for (state, trigger_name), members in groups.items():
        trigger = trigger_types.get(trigger_name)
        if trigger is not None and trigger.manual:
            continue  # a person picks the manual transition by name: no event to share
        ordered = sorted(members, key=_order)
        prepared = [_prepare(t.get("conditions") or []) for t in ordered]
        for j in range(1, len(ordered)):
            second = ordered[j]
            for i in range(j):
                if budget == 0:
                    out.append(LintItem(
                        "ambiguity_check_incomplete", f"stopped comparing transitions after "
                        f"{MAX_PAIRS} pairs (state {state} has {len(ordered)} {trigger_name} "
                        "transitions); transitions after this one were not checked",
                        tpath(second["code"])))
                    return out
                budget -= 1
                first = ordered[i]
                if trigger is not None and configs_exclusive(
                        trigger, first.get("trigger_config"), second.get("trigger_config")):
                    continue
                if _exclusive(prepared[i], prepared[j]):
                    continue
                label = trigger.label if trigger is not None else trigger_name
                out.append(LintItem(
                    "ambiguous_transitions",
                    f"transitions {first['code']} and {second['code']} both leave {state} on "
                    f"{label} events, and no setting or condition rules out that one event "
                    f"matches both; {first['code']} fires (priority {_order(first)[0]}, then "
                    f"code), {second['code']} only when {first['code']} does not match. Add a "
                    "condition that tells them apart (such as event.status eq / ne the same "
                    "value) if that is not meant", tpath(second["code"])))
                break
    return out


def configs_exclusive(trigger: TriggerType, a: Any, b: Any) -> bool:
    """Whether the trigger configs of two transitions can never match the same event.

    Conservative: only choice and multichoice fields, and string fields the trigger type
    declares exclusive, count; anything else may match both.
    """
    a = a if isinstance(a, Mapping) else {}
    b = b if isinstance(b, Mapping) else {}
    for f in trigger.fields:
        x, y = a.get(f.name), b.get(f.name)
        if x in (None, "", []) or y in (None, "", []):
            continue  # an empty filter matches everything
        if f.type == "choice" and x != y:
            return True
        if f.type == "multichoice" and isinstance(x, list) and isinstance(y, list) \
                and not set(x) & set(y):
            return True
        if f.name in trigger.exclusive_fields and isinstance(x, str) and isinstance(y, str) \
                and "*" not in x + y and x.lower() != y.lower():
            return True
    return False


def _number(value: Any) -> float | None:
    """A finite number, as the engine reads one (numeric strings too, never bools)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _key(value: Any) -> tuple[str, Any] | None:
    """What `eq` compares a value by: a number, or an exact string; None when unsure.

    Booleans and the strings "true"/"false" compare loosely with each other, so they (and
    lists, objects, null) give no proof.
    """
    if isinstance(value, bool) or value is None:
        return None
    number = _number(value)
    if number is not None:
        return ("n", number)
    if isinstance(value, str) and value.lower() not in ("true", "false"):
        return ("s", value)
    return None


def _keys(values: Any) -> set[tuple[str, Any]] | None:
    if not isinstance(values, list):
        return None
    keys = set()
    for value in values:
        key = _key(value)
        if key is None:
            return None
        keys.add(key)
    return keys


@dataclass(frozen=True)
class _Prepared:
    """A condition with what the exclusivity proof needs computed once."""

    op: Any
    key: tuple[str, Any] | None
    keys: set[tuple[str, Any]] | None
    number: float | None


def _prepare(conditions: list[Mapping[str, Any]]) -> dict[str, list[_Prepared]]:
    """Conditions by field, prepared for `_exclusive`."""
    out: dict[str, list[_Prepared]] = {}
    for c in conditions:
        value = c.get("value")
        out.setdefault(str(c.get("field")), []).append(
            _Prepared(c.get("operator"), _key(value), _keys(value), _number(value)))
    return out


def conditions_exclusive(a: list[Mapping[str, Any]], b: list[Mapping[str, Any]]) -> bool:
    """Whether two condition lists (each an AND) can never both hold.

    Proven only for conditions on one field that contradict each other with plain values:
    exists / not_exists, eq of different values, eq against ne / in / not_in, disjoint `in`
    lists and disjoint number ranges. Anything else (patterns, strings compared by order,
    true/false) is assumed to overlap, so lint warns rather than stays silent.
    """
    return _exclusive(_prepare(a), _prepare(b))


def _exclusive(a: dict[str, list[_Prepared]], b: dict[str, list[_Prepared]]) -> bool:
    for field_name, mine in a.items():
        for d in b.get(field_name, ()):
            for c in mine:
                if _contradict(c, d) or _contradict(d, c):
                    return True
    return False


def _contradict(c: _Prepared, d: _Prepared) -> bool:
    """Whether `c` holding proves `d` false (checked both ways by the caller)."""
    op1, op2 = c.op, d.op
    if op1 == "exists" and op2 == "not_exists":
        return True
    if op2 == "not_exists" and op1 != "not_exists" and op1 not in ("ne", "not_in"):
        return True  # a missing path makes every operator but not_exists (and ne) false
    if op1 == "eq":
        k1 = c.key
        if k1 is None:
            return False
        if op2 == "eq":
            return d.key is not None and k1 != d.key
        if op2 == "ne":
            return d.key == k1
        if op2 == "in":
            return d.keys is not None and k1 not in d.keys
        if op2 == "not_in":
            return d.keys is not None and k1 in d.keys
        if op2 in _RANGE and k1[0] == "n" and d.number is not None:
            return not _RANGE[op2](k1[1], d.number)
        return False
    if op1 == "in" and op2 == "in":
        return c.keys is not None and d.keys is not None and not c.keys & d.keys
    n1, n2 = c.number, d.number
    if op1 in ("gt", "ge") and op2 in ("lt", "le") and n1 is not None and n2 is not None:
        return n1 > n2 or (n1 == n2 and (op1 == "gt" or op2 == "lt"))
    return False


_RANGE = {"gt": lambda x, y: x > y, "ge": lambda x, y: x >= y, "lt": lambda x, y: x < y,
          "le": lambda x, y: x <= y}


def _unknown_event_fields(transitions: list[dict[str, Any]],
                          trigger_types: Mapping[str, TriggerType], tpath: Any
                          ) -> list[LintItem]:
    """Conditions and captures reading `event.<name>` that the trigger type never provides."""
    out = []
    for t in transitions:
        trigger = trigger_types.get(t.get("trigger_type") or "")
        if trigger is None or trigger.event_fields is None:
            continue
        provided = set(trigger.event_fields)
        places = [(f"{tpath(t['code'])}.conditions[{i}].field", c.get("field"))
                  for i, c in enumerate(t.get("conditions") or [])]
        capture = t.get("capture")
        if not isinstance(capture, Mapping):
            capture = {}
        places += [(f"{tpath(t['code'])}.capture.{name}", source)
                   for name, source in capture.items()]
        for where, path in places:
            if not isinstance(path, str) or not path.startswith("event."):
                continue
            name = path.split(".")[1]
            if name not in provided:
                out.append(LintItem(
                    "unknown_event_field", f"transition {t['code']} reads {path}, but "
                    f"{trigger.label} events carry only {', '.join(sorted(provided))}: the "
                    "path is always missing", where))
    return out
