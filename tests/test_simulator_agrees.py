"""Property: the simulator and the real event path agree, step by step.

Generated workflows (webhook and manual transitions, conditions, captures, timeouts, disabled
transitions) and generated steps run twice: through the simulator, and for real — events stored
in the inbox and processed by the worker's `process_pending`, manual fires through
`fire_manual`, time jumps by moving the instance's clock back and running the timeout sweep at
each moment a timer falls due (as a sweep running all along would). After every step both must
be in the same state with the same variables.
"""

from __future__ import annotations

import contextlib
import itertools
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from wfapp.engine import compile_workflow
from wfapp.engine.simulate import check_scenario, simulate
from wfapp.extensions import db
from wfapp.models import Instance, utcnow
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.errors import Conflict
from wfapp.services.events import NewEvent, ingest
from wfapp.services.instances import fire_manual
from wfapp.services.integrations import create_integration
from wfapp.services.processing import process_pending
from wfapp.services.registry import get_registry
from wfapp.services.timeouts import fire_due_timeouts

COUNTER = itertools.count(1)
VALUES = st.integers(0, 3)


@st.composite
def conditions(draw: Any) -> dict[str, Any]:
    op = draw(st.sampled_from(["eq", "ne", "gt", "lt", "exists", "not_exists"]))
    field = draw(st.sampled_from(["event.n", "event.n", "instance.vars.last", "record.x"]))
    if op in ("exists", "not_exists"):
        return {"field": field, "operator": op}
    return {"field": field, "operator": op, "value": draw(VALUES)}


@st.composite
def workflows(draw: Any) -> dict[str, Any]:
    codes = [f"S{i}" for i in range(draw(st.integers(2, 5)))]
    finals = set(draw(st.lists(st.sampled_from(codes[1:]), max_size=2, unique=True)))
    movable = [c for c in codes if c not in finals]
    transitions = []
    for i in range(draw(st.integers(1, 8))):
        trigger = draw(st.sampled_from(["on_webhook", "on_webhook", "manual", "on_import"]))
        config = {}
        if trigger == "on_webhook":
            pattern = draw(st.sampled_from([None, "a", "b", "*"]))
            config = {"event_filter": pattern} if pattern else {}
        elif trigger == "on_import":
            status = draw(st.sampled_from([None, "success", "error"]))
            config = {"record_status": status} if status else {}
        transitions.append({
            # Half of them leave the initial state, so most examples move at all.
            "code": f"T{i}", "from_state": "S0" if i % 2 == 0 else draw(st.sampled_from(movable)),
            "to_state": draw(st.sampled_from(codes)), "trigger_type": trigger,
            "enabled": draw(st.sampled_from([True, True, True, False])),
            "priority": draw(st.integers(0, 3)), "trigger_config": config,
            "conditions": draw(st.lists(conditions(), max_size=2).filter(lambda c: len(c) < 2)
                               if i % 3 else st.lists(conditions(), max_size=2)),
            "capture": draw(st.sampled_from([{}, {"last": "event.n"}, {"kind": "event.kind"}]))})
    states = []
    for code in codes:
        state: dict[str, Any] = {"code": code, "is_initial": code == "S0",
                                 "is_final": code in finals}
        leaving = [t["code"] for t in transitions if t["from_state"] == code]
        if leaving and draw(st.booleans()):
            state["timeout_hours"] = draw(st.sampled_from([0.5, 1, 2, 3]))
            state["on_timeout_transition"] = draw(st.sampled_from(leaving))
        states.append(state)
    return {"code": "", "enabled": True, "initial_state": "S0", "states": states,
            "transitions": transitions}


STEP = st.one_of(
    st.builds(lambda kind, n, with_n: {"event": {
        "trigger_type": "on_webhook", "type": kind,
        "payload": {"n": n, "kind": kind} if with_n else {"kind": kind}}},
        st.sampled_from(["a", "b", "c"]), VALUES, st.booleans()),
    st.builds(lambda status, x: {"event": {
        "trigger_type": "on_import", "type": "import.record", "payload": {"status": status},
        "record": {"x": x}}}, st.sampled_from(["success", "error"]), VALUES),
    st.builds(lambda i: {"fire": f"T{i}"}, st.integers(0, 7)),
    st.builds(lambda h: {"advance_hours": h / 2}, st.integers(1, 12)),
)


def _instance(integration_id: int) -> Instance:
    db.session.rollback()
    return db.session.scalar(select(Instance).where(Instance.integration_id == integration_id))


def _shift(instance_id: int, hours: float) -> None:
    """Move an instance's clock `hours` into the past (as if that much time had passed)."""
    instance = db.session.get(Instance, instance_id)
    delta = timedelta(hours=hours)
    instance.entered_state_at -= delta
    if instance.timeout_due_at is not None:
        instance.timeout_due_at -= delta
    db.session.commit()


def _advance(integration_id: int, hours: float) -> None:
    """Let `hours` pass: the sweep runs at each moment the instance's timer falls due."""
    remaining = hours
    for _ in range(100):
        instance = _instance(integration_id)
        due = instance.timeout_due_at
        gap = (due - utcnow()).total_seconds() / 3600 if due is not None else None
        if gap is None or gap > remaining:
            _shift(instance.id, remaining)
            return
        step = max(gap, 0.0)
        _shift(instance.id, step)
        remaining -= step
        fire_due_timeouts()
    raise AssertionError("timeouts kept firing")


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(wf=workflows(), steps=st.lists(STEP, min_size=2, max_size=10))
def test_simulator_agrees_with_the_workers(app, wf, steps):
    n = next(COUNTER)
    wf["code"] = f"PROP{n}"
    import_document({"format": FORMAT, "workflow": wf})
    integration = create_integration({"code": f"PROP{n}", "workflow_code": wf["code"]})
    data = {"x": n % 3}
    trigger_types = get_registry().trigger_types
    scenario, errors = check_scenario({"record": {"key": "K", "data": data}, "steps": steps},
                                      trigger_types)
    assert errors == []
    _, expected = simulate(compile_workflow(wf), scenario, trigger_types)
    # The record data each step leaves (an event with a record replaces it).
    simulated_data, current = [], data
    for step in steps:
        record = step.get("event", {}).get("record")
        current = record if record is not None else current
        simulated_data.append(current)

    # The instance is created by an export event no transition reacts to (none is on_export).
    ingest(integration, [NewEvent("on_export", "export.record", "K", None, {"status": "success"},
                                  data)], kick=False)
    process_pending(time_budget=30)
    for i, (step, result) in enumerate(zip(steps, expected, strict=True)):
        (kind, body), = step.items()
        instance = _instance(integration.id)
        if kind == "event":
            ingest(integration, [NewEvent(body["trigger_type"], body["type"], "K", None,
                                          body["payload"], body.get("record"))], kick=False)
            process_pending(time_budget=30)
        elif kind == "fire":
            with contextlib.suppress(Conflict):  # refused: the simulator must refuse it too
                fire_manual(instance.id, body, "", "tester")
        else:
            _advance(integration.id, body)
        instance = _instance(integration.id)
        assert (instance.state, instance.vars, instance.data) == \
            (result.state, result.vars, simulated_data[i]), \
            f"step {i} {step}: workers {instance.state} {instance.vars}, simulator " \
            f"{result.state} {result.vars} ({result.note})"
