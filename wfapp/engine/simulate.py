"""The simulator: run a scenario through a definition with the workers' decision code.

A scenario is a start record and steps (an event, a manual fire, a time jump, an action
outcome). Each step is decided by the functions the worker, the timeout sweep and the manual
fire use (`select_transition`, `capture_vars`, `timeout_transition`, `manual_refusal`,
`event_view`), on an in-memory instance. Nothing is stored; the clock is simulated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..triggers import TriggerType
from .rules import MAX_TIMEOUT_HOURS, RuleError
from .selection import (
    CompiledWorkflow,
    build_context,
    capture_vars,
    event_view,
    explain,
    manual_refusal,
    select_transition,
    timeout_due,
    timeout_transition,
)

MAX_STEPS = 200
#: Timeouts one time jump may fire in a row (a loop of short timers would never end).
MAX_TIMEOUTS_PER_STEP = 1000
ACTION_RESULT = "on_action_result"
STEP_KINDS = ("event", "fire", "advance_hours", "action_result")
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Scenario:
    """A checked scenario: the start record and the steps (each a one-key dict)."""

    record_key: str
    data: dict[str, Any]
    steps: list[dict[str, Any]]


@dataclass
class SimInstance:
    """The in-memory instance a scenario moves (the fields deciding and moving need)."""

    state: str
    record_key: str
    data: dict[str, Any]
    vars: dict[str, Any] = field(default_factory=dict)
    entered: datetime = _EPOCH
    due: datetime | None = None

    def context(self) -> dict[str, Any]:
        """The `instance` part of a condition context."""
        return {"state": self.state, "record_key": self.record_key, "run_id": None,
                "vars": self.vars}


@dataclass
class StepResult:
    """What one step did: the state after it, the transition fired, why others did not."""

    kind: str
    state: str
    fired: str | None
    why_not: list[dict[str, str]]
    vars: dict[str, Any]
    note: str = ""
    moves: list[dict[str, Any]] = field(default_factory=list)
    hours: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a step result."""
        return {"kind": self.kind, "state": self.state, "fired": self.fired,
                "why_not": self.why_not, "vars": self.vars, "note": self.note,
                "moves": self.moves, "hours": self.hours}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def check_scenario(value: Any, trigger_types: Mapping[str, TriggerType], prefix: str = ""
                   ) -> tuple[Scenario | None, list[RuleError]]:
    """Check a scenario's shape; every error names its field (`steps[2].event.payload`)."""
    errors: list[RuleError] = []

    def at(path: str) -> str:
        return f"{prefix}{path}" if not prefix or path.startswith("[") else f"{prefix}.{path}"

    if not isinstance(value, Mapping):
        return None, [RuleError(prefix or "body", "must be a JSON object")]
    known = {"version", "record", "steps", "name", "expect"}
    errors += [RuleError(at(str(k)), "unknown field") for k in value if k not in known]
    record = value.get("record", {})
    key, data = "SIM-1", {}
    if not isinstance(record, Mapping):
        errors.append(RuleError(at("record"), "must be an object with key and data"))
    else:
        errors += [RuleError(at(f"record.{k}"), "unknown field") for k in record
                   if k not in ("key", "data")]
        key = record.get("key", key)
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            errors.append(RuleError(at("record.key"), "must be text of 1-200 characters"))
        data = record.get("data", {})
        if not isinstance(data, Mapping):
            errors.append(RuleError(at("record.data"), "must be an object"))
    steps = value.get("steps")
    if not isinstance(steps, list):
        errors.append(RuleError(at("steps"), "is required: a list of steps"))
        steps = []
    elif len(steps) > MAX_STEPS:
        errors.append(RuleError(at("steps"), f"a scenario may have at most {MAX_STEPS} steps"))
        steps = []
    for i, step in enumerate(steps):
        errors += _check_step(step, at(f"steps[{i}]"), trigger_types)
    if errors:
        return None, errors
    return Scenario(key, dict(data), [dict(s) for s in steps]), []


def _check_step(step: Any, path: str, trigger_types: Mapping[str, TriggerType]
                ) -> list[RuleError]:
    if not isinstance(step, Mapping) or len(step) != 1 or next(iter(step)) not in STEP_KINDS:
        return [RuleError(path, "must be an object with exactly one of "
                                f"{', '.join(STEP_KINDS)}")]
    (kind, body), = step.items()
    where = f"{path}.{kind}"
    if kind == "fire":
        if not isinstance(body, str) or not body:
            return [RuleError(where, "must be a transition code")]
        return []
    if kind == "advance_hours":
        if not _is_number(body) or not 0 < body <= MAX_TIMEOUT_HOURS:
            return [RuleError(where, f"must be a number of hours above 0 and at most "
                                     f"{MAX_TIMEOUT_HOURS}")]
        return []
    if not isinstance(body, Mapping):
        return [RuleError(where, "must be an object")]
    if kind == "action_result":
        allowed = {"action", "outcome", "status_code", "response"}
        errors = [RuleError(f"{where}.{k}", "unknown field") for k in body if k not in allowed]
        if not isinstance(body.get("action"), str) or not body.get("action"):
            errors.append(RuleError(f"{where}.action", "is required: the action's type or id"))
        if body.get("outcome") not in ("succeeded", "failed"):
            errors.append(RuleError(f"{where}.outcome", "must be succeeded or failed"))
        code = body.get("status_code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            errors.append(RuleError(f"{where}.status_code", "must be a whole number"))
        return errors
    allowed = {"trigger_type", "type", "payload", "record"}
    errors = [RuleError(f"{where}.{k}", "unknown field") for k in body if k not in allowed]
    source = body.get("trigger_type")
    if source not in trigger_types and source != ACTION_RESULT:
        errors.append(RuleError(f"{where}.trigger_type", f"unknown trigger type {source!r}; "
                                f"known: {', '.join(trigger_types)}"))
    if not isinstance(body.get("type", ""), str):
        errors.append(RuleError(f"{where}.type", "must be a string"))
    if not isinstance(body.get("payload", {}), Mapping):
        errors.append(RuleError(f"{where}.payload", "must be an object"))
    if not isinstance(body.get("record", {}), Mapping):
        errors.append(RuleError(f"{where}.record", "must be an object (the record's data)"))
    return errors


def simulate(workflow: CompiledWorkflow, scenario: Scenario,
             trigger_types: Mapping[str, TriggerType]) -> tuple[SimInstance, list[StepResult]]:
    """Run a scenario from a new instance in the initial state; return it and each step.

    The workflow is decided as if enabled (a disabled workflow is often being prepared);
    the instance starts at the simulated clock's zero.
    """
    if not workflow.enabled:
        workflow = replace(workflow, enabled=True)
    start = workflow.states[workflow.initial_state]
    instance = SimInstance(start.code, scenario.record_key, dict(scenario.data),
                           entered=_EPOCH, due=timeout_due(_EPOCH, start))
    now = _EPOCH
    results = []
    for step in scenario.steps:
        (kind, body), = step.items()
        if kind == "advance_hours":
            now += timedelta(hours=float(body))
            results.append(_advance(workflow, instance, now))
        elif kind == "fire":
            results.append(_fire(workflow, instance, str(body).strip().upper(), now,
                                 trigger_types))
        elif kind == "action_result":
            payload = {"action": body["action"], "outcome": body["outcome"],
                       "status_code": body.get("status_code"),
                       "response": body.get("response")}
            results.append(_event(workflow, instance, ACTION_RESULT,
                                  f"{body['action']}.{body['outcome']}", payload, None, now,
                                  trigger_types, kind))
        else:
            record = body.get("record")
            results.append(_event(workflow, instance, body["trigger_type"],
                                  body.get("type") or "", dict(body.get("payload") or {}),
                                  dict(record) if record is not None else None, now,
                                  trigger_types, kind))
        results[-1].hours = (now - _EPOCH).total_seconds() / 3600
    return instance, results


def _enter(workflow: CompiledWorkflow, instance: SimInstance, state: str, at: datetime) -> None:
    """Enter a state as `firing.move` does: the timer (re)starts from the moment of entry."""
    instance.state = state
    instance.entered = at
    instance.due = timeout_due(at, workflow.states[state])


def _verdicts(workflow: CompiledWorkflow, state: str, source: str | None,
              view: Mapping[str, Any], context: Mapping[str, Any], fired: str | None,
              trigger_types: Mapping[str, TriggerType]) -> list[dict[str, str]]:
    return [{"transition": v.code, "reason": v.reason}
            for v in explain(workflow, state, source, view, context, trigger_types)
            if v.code != fired]


def _event(workflow: CompiledWorkflow, instance: SimInstance, source: str, event_type: str,
           payload: dict[str, Any], record: dict[str, Any] | None, now: datetime,
           trigger_types: Mapping[str, TriggerType], kind: str) -> StepResult:
    """One event, decided as `processing._process_one` decides it."""
    status = payload.get("status") if record is not None else None
    view = event_view(source, event_type, payload, instance.record_key, record, status)
    context = build_context(payload, record if record is not None else instance.data,
                            instance.context())
    decision = select_transition(workflow, instance.state, source, view, context, trigger_types)
    transition = decision.transition
    before = instance.state
    why_not = _verdicts(workflow, before, source, view, context,
                        transition.code if transition else None, trigger_types)
    if record is not None:
        instance.data = dict(record)
    if transition is None:
        return StepResult(kind, instance.state, None, why_not, dict(instance.vars),
                          decision.reason)
    instance.vars = capture_vars(transition, context, instance.vars)
    _enter(workflow, instance, transition.to_state, now)
    return StepResult(kind, instance.state, transition.code, why_not, dict(instance.vars),
                      f"fired {transition.code}: {before} → {transition.to_state}",
                      [{"transition": transition.code, "from_state": before,
                        "to_state": transition.to_state, "trigger_type": source}])


def _fire(workflow: CompiledWorkflow, instance: SimInstance, code: str, now: datetime,
          trigger_types: Mapping[str, TriggerType]) -> StepResult:
    """A person fires a Manual transition, checked as `instances.fire_manual` checks it."""
    context = build_context({"comment": ""}, instance.data, instance.context())
    transition, problem = manual_refusal(workflow, instance.state, code, context)
    before = instance.state
    others = [{"transition": t.code, "reason": "not the transition fired by hand"}
              for t in workflow.outgoing.get(before, ()) if t.code != code]
    if transition is None:
        return StepResult("fire", before, None, others, dict(instance.vars),
                          f"refused: {problem}")
    instance.vars = capture_vars(transition, context, instance.vars)
    _enter(workflow, instance, transition.to_state, now)
    return StepResult("fire", instance.state, transition.code, others, dict(instance.vars),
                      f"fired {code} by hand: {before} → {transition.to_state}",
                      [{"transition": code, "from_state": before,
                        "to_state": transition.to_state, "trigger_type": "manual"}])


def _advance(workflow: CompiledWorkflow, instance: SimInstance, now: datetime) -> StepResult:
    """Let time pass: every timer that falls due fires, as the sweep fires it, in order."""
    moves: list[dict[str, Any]] = []
    notes: list[str] = []
    fired = None
    while instance.due is not None and instance.due <= now:
        if len(moves) >= MAX_TIMEOUTS_PER_STEP:
            notes.append(f"stopped after {MAX_TIMEOUTS_PER_STEP} timeouts in one step: the "
                         "timeouts form a loop")
            break
        at = instance.due
        state = instance.state
        transition, note = timeout_transition(workflow, state)
        if transition is None:
            instance.due = None  # the sweep stops the timer and leaves the instance
            notes.append(f"{state} timed out: {note}; the instance stays")
            break
        _enter(workflow, instance, transition.to_state, at)
        fired = transition.code
        moves.append({"transition": transition.code, "from_state": state,
                      "to_state": transition.to_state, "trigger_type": "timeout",
                      "at_hours": (at - _EPOCH).total_seconds() / 3600})
    if not moves and not notes:
        if instance.due is None:
            notes.append(f"no timer runs in {instance.state}")
        else:
            left = (instance.due - now).total_seconds() / 3600
            notes.append(f"the timer of {instance.state} falls due in {left:g} more hour(s)")
    else:
        notes.insert(0, "; ".join(f"timed out: {m['from_state']} → {m['to_state']} by "
                                  f"{m['transition']}" for m in moves))
    return StepResult("advance_hours", instance.state, fired, [], dict(instance.vars),
                      "; ".join(n for n in notes if n), moves)


# --- saved scenarios (test cases) ---------------------------------------------------------------

MAX_NAME = 60


@dataclass
class SavedCase:
    """A saved scenario with what it must end in: a state and (some of) the variables."""

    name: str
    scenario: Scenario
    expect_state: str | None
    expect_vars: dict[str, Any]


@dataclass
class CaseResult:
    """The outcome of one saved scenario against a definition."""

    name: str
    passed: bool
    state: str
    vars: dict[str, Any]
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a result."""
        return {"name": self.name, "passed": self.passed, "state": self.state,
                "vars": self.vars, "problems": self.problems}


def check_saved_cases(value: Any, trigger_types: Mapping[str, TriggerType],
                     prefix: str = "scenarios") -> tuple[list[SavedCase], list[RuleError]]:
    """Check the `scenarios` list of a document: names unique, an `expect`, valid steps."""
    if not isinstance(value, list):
        return [], [RuleError(prefix, "must be a list of scenarios")]
    cases: list[SavedCase] = []
    errors: list[RuleError] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        where = f"{prefix}[{i}]"
        scenario, problems = check_scenario(item, trigger_types, where)
        errors += problems
        if not isinstance(item, Mapping):
            continue
        name = item.get("name")
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME:
            errors.append(RuleError(f"{where}.name", f"is required: 1-{MAX_NAME} characters"))
        elif name.strip() in names:
            errors.append(RuleError(f"{where}.name", f"duplicate scenario name {name!r}"))
        else:
            names.add(name.strip())
        expect = item.get("expect")
        state, variables = None, {}
        if not isinstance(expect, Mapping) or not expect:
            errors.append(RuleError(f"{where}.expect", "is required: an object with state "
                                                       "and/or vars"))
        else:
            errors += [RuleError(f"{where}.expect.{k}", "unknown field") for k in expect
                       if k not in ("state", "vars")]
            state = expect.get("state")
            if state is not None and not isinstance(state, str):
                errors.append(RuleError(f"{where}.expect.state", "must be a state code"))
            variables = expect.get("vars", {})
            if not isinstance(variables, Mapping):
                errors.append(RuleError(f"{where}.expect.vars", "must be an object"))
                variables = {}
        if scenario is not None and isinstance(name, str) and not errors:
            cases.append(SavedCase(name.strip(), scenario,
                                  state.strip().upper() if isinstance(state, str) else None,
                                  dict(variables)))
    return (cases if not errors else []), errors


def run_case(workflow: CompiledWorkflow, case: SavedCase,
             trigger_types: Mapping[str, TriggerType]) -> CaseResult:
    """Simulate a saved scenario and compare where it ends with what it expects."""
    instance, _steps = simulate(workflow, case.scenario, trigger_types)
    problems = []
    if case.expect_state is not None and instance.state != case.expect_state:
        problems.append(f"ends in {instance.state}, expected {case.expect_state}")
    for name, wanted in case.expect_vars.items():
        if name not in instance.vars:
            problems.append(f"variable {name} is not set, expected {wanted!r}")
        elif instance.vars[name] != wanted:
            problems.append(f"variable {name} is {instance.vars[name]!r}, expected {wanted!r}")
    return CaseResult(case.name, not problems, instance.state, dict(instance.vars), problems)


def case_document(name: str, scenario: Scenario, state: str,
                       variables: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario as saved in the document, expecting the given final state and variables."""
    return {"name": name, "record": {"key": scenario.record_key, "data": scenario.data},
            "steps": scenario.steps, "expect": {"state": state, "vars": dict(variables)}}
