"""The simulator on its own: steps, timeouts, manual fires, action results, explanations."""

from __future__ import annotations

from wfapp.engine import compile_workflow
from wfapp.engine.simulate import (
    check_saved_cases,
    check_scenario,
    run_case,
    simulate,
)
from wfapp.plugins import build_registry, get_plugin_manager

from .sim_factory import order_workflow

TRIGGERS = build_registry(get_plugin_manager()).trigger_types


def run(steps, data=None, wf=None):
    scenario, errors = check_scenario({"record": {"key": "SO-1", "data": data or {}},
                                       "steps": steps}, TRIGGERS)
    assert errors == []
    return simulate(compile_workflow(wf or order_workflow()), scenario, TRIGGERS)


def test_five_steps_with_a_timeout():
    instance, steps = run([
        {"event": {"trigger_type": "on_webhook", "type": "order.created",
                   "payload": {"total": 5}}},
        {"event": {"trigger_type": "on_webhook", "type": "order.paid",
                   "payload": {"total": 50, "number": "A-7"}}},
        {"advance_hours": 1},
        {"advance_hours": 1.5},
        {"fire": "close"},
    ], data={"ok": True})
    assert [s.state for s in steps] == ["NEW", "PAID", "PAID", "LATE", "DONE"]
    assert [s.fired for s in steps] == [None, "PAY", None, "SLOW", "CLOSE"]
    first = {w["transition"]: w["reason"] for w in steps[0].why_not}
    assert "order.created" in first["PAY"] and "order.created" in first["BIG"]
    second = {w["transition"]: w["reason"] for w in steps[1].why_not}
    assert "event.total" in second["BIG"] and "PAY" not in second
    assert steps[1].vars == {"order_no": "A-7"}
    assert "falls due in 1 more hour" in steps[2].note
    assert steps[3].moves[0]["at_hours"] == 2
    assert instance.state == "DONE" and instance.vars == {"order_no": "A-7"}


def test_a_long_jump_fires_chained_timeouts_from_their_due_time():
    _, steps = run([{"event": {"trigger_type": "on_webhook", "type": "order.paid",
                               "payload": {"total": 1}}}, {"advance_hours": 10}])
    assert [(m["transition"], m["at_hours"]) for m in steps[1].moves] == [
        ("SLOW", 2), ("GIVE_UP", 3.5)]
    assert steps[1].state == "FAILED"


def test_disabled_timeout_transition_leaves_the_instance():
    wf = order_workflow()
    wf["transitions"][2]["enabled"] = False
    _, steps = run([{"event": {"trigger_type": "on_webhook", "type": "order.paid",
                               "payload": {"total": 1}}}, {"advance_hours": 3}], wf=wf)
    assert steps[1].state == "PAID" and steps[1].fired is None
    assert "timeout transition disabled" in steps[1].note


def test_manual_fire_refused_with_the_reason():
    _, steps = run([{"fire": "PAY"}, {"fire": "SHIP"}, {"fire": "NOPE"}])
    assert [s.fired for s in steps] == [None, None, None]
    assert "not a Manual transition" in steps[0].note
    assert "does not exist" in steps[2].note


def test_a_manual_condition_on_the_record():
    steps = run([{"event": {"trigger_type": "on_webhook", "type": "order.paid",
                            "payload": {"total": 1}}}, {"advance_hours": 2},
                 {"fire": "CLOSE"}], data={"ok": False})[1]
    assert steps[2].fired is None and "record.ok" in steps[2].note


def test_import_event_with_record_data_and_status():
    _, steps = run([
        {"event": {"trigger_type": "on_webhook", "type": "order.paid", "payload": {"total": 1}}},
        {"event": {"trigger_type": "on_import", "payload": {"status": "error"},
                   "record": {"qty": 1}}},
        {"event": {"trigger_type": "on_import", "payload": {"status": "success"},
                   "record": {"qty": 2}}},
    ])
    assert [s.fired for s in steps] == ["PAY", None, "SHIP"]
    assert "'error'" in next(w["reason"] for w in steps[1].why_not if w["transition"] == "SHIP")


def test_action_result_is_an_on_action_result_event():
    _, steps = run([{"action_result": {"action": "submit", "outcome": "failed",
                                       "status_code": 500}}])
    assert steps[0].fired is None and "on_action_result" in steps[0].note


def test_scenario_errors_name_their_fields():
    _, errors = check_scenario({"record": {"key": "", "data": []}, "steps": [
        {"event": {"trigger_type": "nope", "payload": "x"}},
        {"advance_hours": -1}, {"fire": "A", "advance_hours": 1},
        {"action_result": {"outcome": "maybe"}}], "extra": 1}, TRIGGERS)
    places = sorted(e.path for e in errors)
    assert places == sorted([
        "extra", "record.key", "record.data", "steps[0].event.trigger_type",
        "steps[0].event.payload", "steps[1].advance_hours", "steps[2]",
        "steps[3].action_result.action", "steps[3].action_result.outcome"])


def test_saved_cases_pass_and_fail():
    cases, errors = check_saved_cases([
        {"name": "pays", "steps": [{"event": {"trigger_type": "on_webhook",
                                              "type": "order.paid",
                                              "payload": {"total": 1, "number": "N"}}}],
         "expect": {"state": "paid", "vars": {"order_no": "N"}}},
        {"name": "wrong", "steps": [], "expect": {"state": "DONE", "vars": {"x": 1}}},
    ], TRIGGERS)
    assert errors == []
    compiled = compile_workflow(order_workflow())
    results = [run_case(compiled, c, TRIGGERS) for c in cases]
    assert [r.passed for r in results] == [True, False]
    assert results[1].problems == ["ends in NEW, expected DONE",
                                   "variable x is not set, expected 1"]
    _, errors = check_saved_cases([{"name": "a", "steps": [], "expect": {}},
                                   {"name": "a", "steps": [], "expect": {"state": "X"}}],
                                  TRIGGERS)
    assert [e.path for e in errors] == ["scenarios[0].expect", "scenarios[1].name"]
