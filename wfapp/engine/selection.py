"""Transition selection: which transition an event fires, and why the others did not.

Definitions are compiled once into plain tuples and closures, so one decision is a dictionary
lookup and a few comparisons (hundreds of thousands per second in pure Python).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..paths import MISSING, resolve_path
from ..triggers import TriggerType
from .conditions import compare, explain_condition

Context = Mapping[str, Any]


_NUMBER = (int, float)
_ORDER = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def _fast_compare(op: str, expected: Any) -> Callable[[Any], bool]:
    """A comparison specialised for one operator and value; the common cases skip `compare`.

    Each shortcut returns only what `compare` would; everything else falls through to it.
    """
    if op == "eq" and type(expected) is str:
        return lambda actual: actual == expected or compare(op, actual, expected)
    if op in ("in", "not_in") and isinstance(expected, list):
        strings = frozenset(v for v in expected if type(v) is str)
        if op == "in":
            return lambda actual: (type(actual) is str and actual in strings) or compare(
                op, actual, expected)
        return lambda actual: compare(op, actual, expected)
    if op in _ORDER and type(expected) in _NUMBER:
        order = _ORDER[op]
        return lambda actual: order(actual, expected) if type(actual) in _NUMBER else compare(
            op, actual, expected)
    return lambda actual: compare(op, actual, expected)


@dataclass(frozen=True)
class CompiledCondition:
    """One condition with its path split once and its comparison specialised."""

    field: str
    operator: str
    value: Any
    parts: tuple[str, ...]
    check: Callable[[Any], bool] = lambda actual: False

    @classmethod
    def build(cls, field: str, op: str, value: Any) -> CompiledCondition:
        """Compile one condition."""
        return cls(field, op, value, tuple(field.split(".")), _fast_compare(op, value))

    def holds(self, context: Context) -> bool:
        """Whether the condition is true in `context`."""
        value: Any = context
        for part in self.parts:
            value = value.get(part, MISSING) if type(value) is dict else resolve_path(value, part)
            if value is MISSING:
                break
        return self.check(value)

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "operator": self.operator, "value": self.value}


@dataclass(frozen=True)
class CompiledTransition:
    """A transition ready for evaluation."""

    code: str
    description: str
    from_state: str
    to_state: str
    trigger_type: str
    enabled: bool
    priority: int
    config: Mapping[str, Any]
    conditions: tuple[CompiledCondition, ...]
    capture: Mapping[str, str]
    #: [{"id", "type", "config"}] in order: what the transition does when it fires.
    actions: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class StateInfo:
    """What the engine needs to know about a state."""

    code: str
    description: str
    is_final: bool
    timeout_hours: float | None
    on_timeout_transition: str | None


@dataclass(frozen=True)
class CompiledWorkflow:
    """A workflow definition indexed for decisions."""

    code: str
    enabled: bool
    initial_state: str
    states: Mapping[str, StateInfo]
    transitions: Mapping[str, CompiledTransition]
    # (from_state, trigger_type) -> enabled transitions by priority, then code
    candidates: Mapping[tuple[str, str], tuple[CompiledTransition, ...]]
    # from_state -> every transition leaving it, by priority then code (for explanations)
    outgoing: Mapping[str, tuple[CompiledTransition, ...]]
    # The workflow version this definition is (0 when compiled from a document outside one).
    version: int = 0


def compile_workflow(wf: Mapping[str, Any]) -> CompiledWorkflow:
    """Compile a normalized, valid definition (the export shape's `workflow`)."""
    states = {
        s["code"]: StateInfo(s["code"], s.get("description") or "", bool(s.get("is_final")),
                             s.get("timeout_hours"), s.get("on_timeout_transition"))
        for s in wf["states"]
    }
    transitions = {}
    for t in wf.get("transitions") or []:
        conditions = tuple(
            CompiledCondition.build(c["field"], c["operator"], c.get("value"))
            for c in t.get("conditions") or []
        )
        transitions[t["code"]] = CompiledTransition(
            t["code"], t.get("description") or "", t["from_state"], t["to_state"],
            t["trigger_type"], bool(t.get("enabled", True)), int(t.get("priority", 0)),
            dict(t.get("trigger_config") or {}), conditions, dict(t.get("capture") or {}),
            tuple(dict(a) for a in t.get("actions") or ()))
    ordered = sorted(transitions.values(), key=lambda t: (t.priority, t.code))
    candidates: dict[tuple[str, str], list[CompiledTransition]] = {}
    outgoing: dict[str, list[CompiledTransition]] = {}
    for t in ordered:
        outgoing.setdefault(t.from_state, []).append(t)
        if t.enabled:
            candidates.setdefault((t.from_state, t.trigger_type), []).append(t)
    return CompiledWorkflow(
        wf["code"], bool(wf.get("enabled", True)), wf["initial_state"], states, transitions,
        {k: tuple(v) for k, v in candidates.items()}, {k: tuple(v) for k, v in outgoing.items()})


def build_context(event: Mapping[str, Any] | None, record: Any, instance: Mapping[str, Any]
                  ) -> dict[str, Any]:
    """The condition context {event, record, instance}."""
    return {"event": event if event is not None else {},
            "record": record if record is not None else {},
            "instance": instance}


@dataclass(frozen=True)
class Decision:
    """The outcome of evaluating one event against one instance."""

    transition: CompiledTransition | None
    reason: str


def select_transition(
    workflow: CompiledWorkflow, state: str, source: str, event: Mapping[str, Any],
    context: Context, trigger_types: Mapping[str, TriggerType],
) -> Decision:
    """Fire the first transition (by priority) whose trigger matches and conditions hold."""
    info = workflow.states.get(state)
    if info is None:
        return Decision(None, f"state {state!r} is no longer in workflow {workflow.code}")
    if info.is_final:
        return Decision(None, f"instance is in final state {state}")
    candidates = workflow.candidates.get((state, source), ())
    if not candidates:
        return Decision(None, f"no enabled {source} transition leaves {state}")
    trigger = trigger_types.get(source)
    for transition in candidates:
        if trigger is not None and not trigger.matches(transition.config, event):
            continue
        if all(c.holds(context) for c in transition.conditions):
            return Decision(transition, f"fired {transition.code}")
    return Decision(None, f"no {source} transition from {state} matched")


@dataclass
class Verdict:
    """Why one outgoing transition did or did not fire."""

    code: str
    description: str
    to_state: str
    trigger_type: str
    fires: bool
    reason: str


def explain(
    workflow: CompiledWorkflow, state: str, source: str | None, event: Mapping[str, Any],
    context: Context, trigger_types: Mapping[str, TriggerType],
) -> list[Verdict]:
    """For each transition leaving `state`: the first reason it would not fire, or that it fires.

    Which one fires is what `select_transition` decides (the worker's own decision), so the
    explanation can never name another transition than the one the worker fires.
    """
    verdicts = []
    chosen = False
    info = workflow.states.get(state)
    decided = (select_transition(workflow, state, source, event, context, trigger_types)
               .transition if source is not None and workflow.enabled else None)
    for t in workflow.outgoing.get(state, ()):
        reason = ""
        if info is not None and info.is_final:
            reason = f"{state} is a final state"
        elif not workflow.enabled:
            reason = f"workflow {workflow.code} is disabled"
        elif not t.enabled:
            reason = "transition is disabled"
        elif source is None or t.trigger_type != source:
            label = _label(trigger_types, t.trigger_type)
            reason = (f"wrong trigger: it waits for {label}, the event came from "
                      f"{_label(trigger_types, source)}" if source else f"waits for {label}")
        else:
            trigger = trigger_types.get(source)
            mismatch = trigger.explain_mismatch(t.config, event) if trigger is not None else ""
            if mismatch:
                reason = mismatch
            else:
                failed = next((c for c in t.conditions if not c.holds(context)), None)
                if failed is not None:
                    reason = explain_condition(failed.as_dict(), context)
        fires = decided is not None and t.code == decided.code
        if not reason and not fires:
            reason = ("would match, but a transition with a lower priority number fires first"
                      if chosen or decided is not None else "does not match this event")
        chosen = chosen or fires
        verdicts.append(Verdict(t.code, t.description, t.to_state, t.trigger_type, fires,
                                reason or "fires"))
    return verdicts


def _label(trigger_types: Mapping[str, TriggerType], name: str) -> str:
    trigger = trigger_types.get(name)
    return trigger.label if trigger is not None else name


def capture_vars(transition: CompiledTransition, context: Context,
                 current: Mapping[str, Any]) -> dict[str, Any]:
    """The instance variables after a transition captured its values (missing paths skipped)."""
    if not transition.capture:
        return dict(current)
    out = dict(current)
    for name, path in transition.capture.items():
        value = resolve_path(context, path)
        if value is not MISSING:
            out[name] = value
    return out


def timeout_due(entered: datetime, state: StateInfo) -> datetime | None:
    """When the timer of `state` falls due for an instance that entered it at `entered`."""
    if state.timeout_hours is None or state.is_final:
        return None
    return entered + timedelta(hours=float(state.timeout_hours))



def event_view(source: str | None, event_type: str, payload: Mapping[str, Any],
               record_key: str | None, record: Any, status: Any = None) -> dict[str, Any]:
    """The event as a trigger type's `matches` sees it (the worker, explainer and simulator)."""
    return {"source": source, "type": event_type, "payload": payload,
            "record": {"key": record_key, "data": record, "status": status}
            if record is not None else None}


def timeout_transition(workflow: CompiledWorkflow, state: str
                       ) -> tuple[CompiledTransition | None, str]:
    """The transition a due timer of `state` fires, or None and why it fires nothing."""
    info = workflow.states.get(state)
    code = info.on_timeout_transition if info else None
    transition = workflow.transitions.get(code) if code else None
    if transition is None:
        return None, f"state {state} has no On Timeout Transition any more"
    if not transition.enabled:
        return None, "timeout transition disabled"
    return transition, ""


def manual_refusal(workflow: CompiledWorkflow, state: str, code: str, context: Context
                   ) -> tuple[CompiledTransition | None, str]:
    """The Manual transition `code` a person fires from `state`, or None and why it cannot."""
    transition = workflow.transitions.get(code)
    if transition is None:
        return None, f"transition {code!r} does not exist in this workflow"
    if transition.trigger_type != "manual":
        return None, f"transition {code} is not a Manual transition"
    if not workflow.enabled:
        return None, f"workflow {workflow.code} is disabled"
    if not transition.enabled:
        return None, f"transition {code} is disabled"
    if transition.from_state != state:
        return None, f"transition {code} leaves {transition.from_state}; the instance is in {state}"
    info = workflow.states.get(state)
    if info is None or info.is_final:
        return None, f"the instance is in final state {state}"
    failed = next((c for c in transition.conditions if not c.holds(context)), None)
    if failed is not None:
        reason = explain_condition(failed.as_dict(), context)
        return None, f"transition {code} cannot fire: {reason}"
    return transition, ""
