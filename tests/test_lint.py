"""Lint: each warning on a definition built for it, and silence on a clean one."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wfapp.engine import compare
from wfapp.engine.lint import conditions_exclusive, lint_workflow
from wfapp.plugins import build_registry, get_plugin_manager

TRIGGERS = build_registry(get_plugin_manager()).trigger_types


def _state(code, **kw):
    return {"code": code, "description": "", "is_initial": False, "is_final": False,
            "timeout_hours": None, "on_timeout_transition": None, **kw}


def _t(code, a, b, trigger="manual", **kw):
    return {"code": code, "description": "", "from_state": a, "to_state": b,
            "trigger_type": trigger, "enabled": True, "priority": 0, "trigger_config": {},
            "conditions": [], "capture": {}, **kw}


def clean():
    """A small workflow lint finds nothing wrong with."""
    return {
        "code": "ORDER", "description": "", "initial_state": "NEW", "enabled": True,
        "states": [_state("NEW", is_initial=True, timeout_hours=24,
                          on_timeout_transition="EXPIRE"),
                   _state("PAID"), _state("DONE", is_final=True),
                   _state("EXPIRED", is_final=True)],
        "transitions": [
            _t("PAY", "NEW", "PAID", "on_webhook", trigger_config={"event_filter": "paid"},
               capture={"order_no": "event.number"}),
            _t("EXPIRE", "NEW", "EXPIRED"),
            _t("SHIP", "PAID", "DONE", "on_import",
               conditions=[{"field": "event.status", "operator": "eq", "value": "success"}]),
            _t("FAIL", "PAID", "EXPIRED", "on_import",
               conditions=[{"field": "event.status", "operator": "eq", "value": "error"}]),
        ],
    }


def codes(report):
    return sorted((w.code, w.path) for w in report.warnings)


def test_a_clean_workflow_has_no_findings():
    report = lint_workflow(clean(), TRIGGERS)
    assert report.errors == [] and report.warnings == []


def test_unreachable_stuck_and_no_path_to_final():
    wf = clean()
    wf["states"] += [_state("LOST"), _state("LOOP_A"), _state("LOOP_B")]
    wf["transitions"] += [_t("A2B", "LOOP_A", "LOOP_B"), _t("B2A", "LOOP_B", "LOOP_A"),
                          _t("TO_LOOP", "PAID", "LOOP_A", "manual")]
    report = lint_workflow(wf, TRIGGERS)
    found = codes(report)
    assert ("unreachable_state", "workflow.states[4]") in found  # LOST
    assert ("stuck_state", "workflow.states[4]") in found
    assert ("no_path_to_final", "workflow.states[5]") in found  # LOOP_A
    assert ("no_path_to_final", "workflow.states[6]") in found
    lost = next(w for w in report.warnings if w.code == "unreachable_state")
    assert "LOST" in lost.message and "Reset to State" in lost.message


def test_reachable_only_through_a_disabled_transition_says_so():
    wf = clean()
    wf["transitions"][0]["enabled"] = False  # PAY
    messages = [w.message for w in lint_workflow(wf, TRIGGERS).warnings
                if w.code == "unreachable_state"]
    assert messages and "only through disabled transitions" in messages[0]


def test_ambiguous_pair_names_the_one_priority_picks():
    wf = clean()
    wf["transitions"].append(_t("PAY_BIG", "NEW", "PAID", "on_webhook", priority=-5,
                                trigger_config={"event_filter": "paid"},
                                conditions=[{"field": "event.total", "operator": "gt",
                                             "value": 100}]))
    report = lint_workflow(wf, TRIGGERS)
    ambiguous = [w for w in report.warnings if w.code == "ambiguous_transitions"]
    assert len(ambiguous) == 1
    assert ambiguous[0].path == "workflow.transitions[0]"  # PAY loses to PAY_BIG
    assert "PAY_BIG fires (priority -5" in ambiguous[0].message


@pytest.mark.parametrize("config_a, config_b, conditions_b, ambiguous", [
    ({"event_filter": "paid"}, {"event_filter": "cancelled"}, [], False),
    ({"event_filter": "paid"}, {"event_filter": "pa*"}, [], True),
    ({"event_filter": "paid"}, {}, [], True),
    ({}, {}, [{"field": "event.x", "operator": "not_exists"}], False),
])
def test_trigger_settings_and_conditions_that_tell_transitions_apart(
        config_a, config_b, conditions_b, ambiguous):
    wf = clean()
    wf["transitions"][0]["trigger_config"] = config_a
    wf["transitions"][0]["conditions"] = [{"field": "event.x", "operator": "exists"}]
    wf["transitions"].append(_t("OTHER", "NEW", "DONE", "on_webhook", trigger_config=config_b,
                                conditions=conditions_b))
    found = [w for w in lint_workflow(wf, TRIGGERS).warnings
             if w.code == "ambiguous_transitions"]
    assert bool(found) is ambiguous


def test_record_status_choice_tells_import_transitions_apart():
    wf = clean()
    for t in wf["transitions"][2:]:
        t["conditions"] = []
    wf["transitions"][2]["trigger_config"] = {"record_status": "success"}
    wf["transitions"][3]["trigger_config"] = {"record_status": "error"}
    assert not [w for w in lint_workflow(wf, TRIGGERS).warnings
                if w.code == "ambiguous_transitions"]


def test_unknown_event_field_of_a_trigger_that_declares_its_fields():
    wf = clean()
    wf["transitions"][2]["conditions"].append(
        {"field": "event.data.sku", "operator": "exists"})   # on_import provides data: fine
    wf["transitions"][1]["conditions"] = [
        {"field": "event.reason", "operator": "exists"}]     # manual provides only comment
    wf["transitions"][0]["conditions"] = [
        {"field": "event.anything", "operator": "exists"}]   # webhooks declare nothing
    found = [w for w in lint_workflow(wf, TRIGGERS).warnings if w.code == "unknown_event_field"]
    assert [w.path for w in found] == ["workflow.transitions[1].conditions[0].field"]
    assert "comment" in found[0].message


def test_disabled_timeout_transition_and_idle_self_loop():
    wf = clean()
    wf["transitions"][1]["enabled"] = False  # EXPIRE, NEW's timeout transition
    wf["transitions"].append(_t("POKE", "PAID", "PAID"))
    wf["transitions"].append(_t("KEEP", "PAID", "PAID", capture={"n": "event.comment"}))
    wf["transitions"].append(_t("SEND", "PAID", "PAID", actions=[{"type": "send_email"}]))
    wf["transitions"].append(_t("RESTART", "NEW", "NEW"))  # restarts NEW's timer: useful
    found = codes(lint_workflow(wf, TRIGGERS))
    assert ("disabled_timeout", "workflow.states[0].on_timeout_transition") in found
    assert [p for c, p in found if c == "idle_self_loop"] == ["workflow.transitions[4]"]


def test_rule_errors_are_errors_and_warnings_still_come():
    wf = clean()
    wf["transitions"].append(_t("BAD", "NEW", "NOWHERE"))
    wf["states"].append(_state("LOST"))
    report = lint_workflow(wf, TRIGGERS)
    assert [(e.code, e.path) for e in report.errors] == [
        ("rule", "workflow.transitions[4].to_state")]
    assert ("unreachable_state", "workflow.states[4]") in codes(report)
    assert json.loads(json.dumps(report.as_dict()))["errors"][0]["message"]


def test_no_final_state_is_one_warning():
    wf = clean()
    for s in wf["states"]:
        s["is_final"] = False
    found = codes(lint_workflow(wf, TRIGGERS))
    assert ("no_final_state", "workflow.states") in found
    assert not [c for c, _ in found if c == "no_path_to_final"]


def test_lint_does_not_change_the_definition():
    wf = clean()
    before = copy.deepcopy(wf)
    lint_workflow(wf, TRIGGERS)
    assert wf == before


# Lint may only call two condition lists exclusive when no value satisfies both: checked
# against the engine's own comparison on generated values.
SCALARS = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "1", "2.0", "true", ""]),
                    st.booleans(), st.floats(-3, 3, allow_nan=False))
OPS = st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "exists",
                       "not_exists"])


@st.composite
def condition(draw):
    op = draw(OPS)
    if op in ("exists", "not_exists"):
        return {"field": "event.x", "operator": op}
    if op in ("in", "not_in"):
        return {"field": "event.x", "operator": op,
                "value": draw(st.lists(SCALARS, max_size=3))}
    return {"field": "event.x", "operator": op, "value": draw(SCALARS)}


@given(a=st.lists(condition(), min_size=1, max_size=2),
       b=st.lists(condition(), min_size=1, max_size=2),
       actual=st.one_of(SCALARS, st.just("MISSING")))
def test_exclusive_conditions_never_both_hold(a, b, actual):
    from wfapp.paths import MISSING

    value = MISSING if actual == "MISSING" else actual
    if conditions_exclusive(a, b):
        holds_a = all(compare(c["operator"], value, c.get("value")) for c in a)
        holds_b = all(compare(c["operator"], value, c.get("value")) for c in b)
        assert not (holds_a and holds_b), (a, b, value)


def test_the_ambiguity_check_stops_at_its_budget_and_says_so():
    wf = clean()
    wf["transitions"] += [_t(f"X{i}", "PAID", "DONE", "on_webhook", conditions=[
        {"field": "event.number", "operator": "eq", "value": f"N{i}"}]) for i in range(250)]
    found = [w for w in lint_workflow(wf, TRIGGERS).warnings
             if w.code.startswith("ambigu")]
    assert [w.code for w in found] == ["ambiguity_check_incomplete"]
    assert "20000 pairs" in found[0].message
