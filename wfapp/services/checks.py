"""Checking definitions: lint, the simulator and saved scenarios, for the card, API and CLI.

Everything here reads; only `save_scenario` and `delete_scenario` write (audited), and the
simulator never touches an instance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..engine import RuleError, compile_workflow
from ..engine.lint import LintItem, LintReport, lint_workflow
from ..engine.simulate import (
    MAX_NAME,
    CaseResult,
    case_document,
    check_saved_cases,
    check_scenario,
    run_case,
    simulate,
)
from ..extensions import db
from ..inputs import InputError, parse_json
from ..models import Workflow
from . import audit
from .definitions import (
    check_document,
    definition_limits,
    get_workflow,
    normalize,
    schema_errors,
    workflow_to_dict,
)
from .errors import NotFound, ValidationFailed
from .registry import get_registry


@dataclass
class Checks:
    """What lint and the saved scenarios say about one definition."""

    lint: LintReport
    cases: list[CaseResult] = field(default_factory=list)
    #: Problems of the saved scenarios themselves (they cannot run), with their places.
    case_errors: list[LintItem] = field(default_factory=list)

    @property
    def failing(self) -> list[CaseResult]:
        """The saved scenarios that do not end as they expect."""
        return [c for c in self.cases if not c.passed]

    def summary(self) -> str:
        """One line for a flash message or a terminal ("" when all is well)."""
        parts = []
        if self.lint.errors:
            parts.append(f"{len(self.lint.errors)} lint error(s)")
        if self.lint.warnings:
            parts.append(f"{len(self.lint.warnings)} lint warning(s)")
        if self.failing:
            parts.append(f"{len(self.failing)} of {len(self.cases)} saved scenario(s) failing")
        if self.case_errors:
            parts.append(f"{len(self.case_errors)} problem(s) in saved scenarios")
        return ", ".join(parts)


def lint_definition(wf: dict[str, Any]) -> LintReport:
    """Lint a normalized definition with this app's trigger types and limits."""
    return lint_workflow(wf, get_registry().trigger_types, definition_limits())


def run_saved(wf: dict[str, Any], scenarios: Any) -> tuple[list[CaseResult], list[LintItem]]:
    """Run saved scenarios against a valid definition (errors when they cannot run)."""
    trigger_types = get_registry().trigger_types
    cases, errors = check_saved_cases(scenarios or [], trigger_types)
    if errors:
        return [], [LintItem("scenario", e.message, e.path) for e in errors]
    compiled = compile_workflow({**wf, "enabled": True})
    return [run_case(compiled, case, trigger_types) for case in cases], []


def check_definition(wf: dict[str, Any], scenarios: Any = None) -> Checks:
    """Lint a definition and, when it has no errors, run its saved scenarios."""
    report = lint_definition(wf)
    if report.errors:
        return Checks(report)
    cases, case_errors = run_saved(wf, scenarios)
    return Checks(report, cases, case_errors)


def workflow_checks(workflow: Workflow) -> Checks:
    """Lint and saved scenarios of a stored workflow (run on every save, shown on the card)."""
    return check_definition(workflow_to_dict(workflow), workflow.scenarios)


def lint_code(code: str) -> LintReport:
    """Lint the stored workflow `code`; NotFound when there is none."""
    return lint_definition(workflow_to_dict(get_workflow(code)))


def check_file_document(document: Any) -> Checks:
    """Lint a parsed workflow file (schema problems are errors too) and run its scenarios."""
    schema = schema_errors(document)
    if schema:
        return Checks(LintReport([LintItem("schema", e.message, e.path) for e in schema]))
    wf = normalize(document["workflow"])
    return check_definition(wf, document.get("scenarios"))


# --- the simulator ------------------------------------------------------------------------------


def simulate_code(code: str, body: Any) -> dict[str, Any]:
    """Run a scenario against the stored workflow `code`; writes nothing.

    The answer has a `start` (initial state), `steps` (state, fired, why_not, vars, note per
    step) and `final`. A scenario with mistakes is refused naming each field.
    """
    workflow = get_workflow(code)
    trigger_types = get_registry().trigger_types
    scenario, errors = check_scenario(body, trigger_types)
    if isinstance(body, dict) and body.get("version") is not None:
        # Versions are kept by the versions feature; until it is merged only the current
        # definition can be simulated, and saying so beats answering for the wrong one.
        errors.append(RuleError("version", "only the current definition can be simulated "
                                           "here; omit version"))
    if scenario is None or errors:
        raise ValidationFailed(errors)
    wf = workflow_to_dict(workflow)
    compiled = compile_workflow({**wf, "enabled": True})
    instance, steps = simulate(compiled, scenario, trigger_types)
    start = compiled.states[compiled.initial_state]
    return {"workflow": workflow.code,
            "start": {"state": start.code, "vars": {}},
            "steps": [s.as_dict() for s in steps],
            "final": {"state": instance.state, "vars": instance.vars,
                      "is_final": compiled.states[instance.state].is_final}}


def save_scenario(code: str, name: str, body: Any) -> Workflow:
    """Save a scenario as a test case expecting the final state and variables it ends with now."""
    workflow = get_workflow(code)
    name = (name or "").strip()
    errors: list[RuleError] = []
    if not 1 <= len(name) <= MAX_NAME:
        errors.append(RuleError("name", f"is required: 1-{MAX_NAME} characters"))
    result = simulate_code(code, body)  # refuses a broken scenario, naming its fields
    scenario, _ = check_scenario(body, get_registry().trigger_types)
    if errors or scenario is None:
        raise ValidationFailed(errors)
    saved = [s for s in workflow.scenarios or [] if s.get("name") != name]
    replaced = len(saved) != len(workflow.scenarios or [])
    saved.append(case_document(name, scenario, result["final"]["state"],
                               result["final"]["vars"]))
    check_document({"format": "wfapp.workflow/v1", "workflow": workflow_to_dict(workflow),
                    "scenarios": saved})
    workflow.scenarios = saved
    audit.record("update", "workflow", workflow.code,
                 {"changes": [f"scenario {name!r} {'replaced' if replaced else 'saved'}, "
                              f"expecting {result['final']['state']}"]})
    db.session.commit()
    return workflow


def delete_scenario(code: str, name: str) -> Workflow:
    """Remove a saved scenario by name; NotFound when there is none."""
    workflow = get_workflow(code)
    kept = [s for s in workflow.scenarios or [] if s.get("name") != name]
    if len(kept) == len(workflow.scenarios or []):
        raise NotFound(f"workflow {workflow.code} has no saved scenario {name!r}")
    workflow.scenarios = kept
    audit.record("update", "workflow", workflow.code,
                 {"changes": [f"scenario {name!r} deleted"]})
    db.session.commit()
    return workflow


def scenario_from_text(record_key: str, record_data: str, steps: str) -> dict[str, Any]:
    """A scenario from the Simulate form: record data as JSON, one JSON step per line.

    Refuses text that is not JSON naming the field (`steps[2]`, with its line number).
    """
    errors: list[RuleError] = []
    data: Any = {}
    if (record_data or "").strip():
        try:
            data = parse_json(record_data)
        except InputError as error:
            errors.append(RuleError("record.data", error.message))
    parsed: list[Any] = []
    for number, line in enumerate((steps or "").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append(parse_json(line))
        except InputError as error:
            errors.append(RuleError(f"steps[{len(parsed)}]", f"line {number} {error.message}"))
            parsed.append(None)
    if errors:
        raise ValidationFailed(errors)
    return {"record": {"key": (record_key or "").strip() or "SIM-1", "data": data},
            "steps": parsed}


def scenario_as_text(scenario: dict[str, Any]) -> dict[str, str]:
    """A saved scenario as the Simulate form shows it (the inverse of `scenario_from_text`)."""
    record = scenario.get("record") or {}
    return {"record_key": str(record.get("key") or "SIM-1"),
            "record_data": json.dumps(record.get("data") or {}, ensure_ascii=False),
            "steps": "\n".join(json.dumps(s, ensure_ascii=False)
                               for s in scenario.get("steps") or [])}


def saved_scenario(code: str, name: str) -> dict[str, Any]:
    """The saved scenario `name` of workflow `code`; NotFound when there is none."""
    workflow = get_workflow(code)
    found = next((s for s in workflow.scenarios or [] if s.get("name") == name), None)
    if found is None:
        raise NotFound(f"workflow {workflow.code} has no saved scenario {name!r}")
    return found
