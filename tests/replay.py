"""A serial, in-memory replay of events through the pure engine: the reference for workers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wfapp.engine import build_context, capture_vars, compile_workflow, select_transition


def serial_replay(workflow: dict[str, Any], events: Iterable[Any], trigger_types: dict[str, Any]
                  ) -> dict[str, str]:
    """Final state per record key, applying events one by one in the order given."""
    compiled = compile_workflow(workflow)
    states: dict[str, str] = {}
    variables: dict[str, dict[str, Any]] = {}
    for event in events:
        key = event.record_key
        state = states.setdefault(key, compiled.initial_state)
        current = variables.setdefault(key, {})
        context = build_context(event.payload, {}, {"state": state, "record_key": key,
                                                    "run_id": None, "vars": current})
        view = {"source": event.source, "type": event.type, "payload": event.payload,
                "record": None}
        decision = select_transition(compiled, state, event.source, view, context,
                                     trigger_types)
        if decision.transition is not None:
            states[key] = decision.transition.to_state
            variables[key] = capture_vars(decision.transition, context, current)
    return states


def check_history_paths(workflow: dict[str, Any], histories: dict[int, list[Any]]) -> None:
    """Every instance's history is a valid path: each row leaves where the previous one ended,
    along a transition of the workflow (or a timeout/reset)."""
    transitions = {t["code"]: t for t in workflow["transitions"]}
    for instance_id, rows in histories.items():
        assert rows[0].from_state is None and rows[0].to_state == workflow["initial_state"]
        for before, row in zip(rows, rows[1:], strict=False):
            assert row.from_state == before.to_state, (instance_id, row.id)
            t = transitions[row.transition]
            assert (t["from_state"], t["to_state"]) == (row.from_state, row.to_state)
