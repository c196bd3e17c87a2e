"""Unit tests of the pure engine's decisions: selection, conditions, timers, explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wfapp.engine import (
    OPERATORS,
    build_context,
    capture_vars,
    compare,
    compile_workflow,
    explain,
    select_transition,
    timeout_due,
)
from wfapp.engine.selection import _fast_compare
from wfapp.paths import MISSING
from wfapp.plugins import build_registry, get_plugin_manager

TRIGGERS = build_registry(get_plugin_manager()).trigger_types


def _wf(**overrides):
    wf = {
        "code": "W", "enabled": True, "initial_state": "NEW",
        "states": [
            {"code": "NEW", "timeout_hours": 1.5, "on_timeout_transition": "EXPIRE"},
            {"code": "PAID"}, {"code": "BIG"}, {"code": "DONE", "is_final": True},
            {"code": "EXPIRED", "is_final": True},
        ],
        "transitions": [
            {"code": "PAY", "from_state": "NEW", "to_state": "PAID", "trigger_type": "on_webhook",
             "priority": 20, "trigger_config": {"event_filter": "order.*"},
             "conditions": [{"field": "event.total", "operator": "gt", "value": 0}],
             "capture": {"order_no": "event.number", "nothing": "event.absent"}},
            {"code": "BIG", "from_state": "NEW", "to_state": "BIG", "trigger_type": "on_webhook",
             "priority": 10, "trigger_config": {"event_filter": "order.paid"},
             "conditions": [{"field": "event.total", "operator": "ge", "value": 1000}]},
            {"code": "AAA", "from_state": "NEW", "to_state": "BIG", "trigger_type": "on_webhook",
             "priority": 20, "enabled": False, "trigger_config": {}},
            {"code": "EXPIRE", "from_state": "NEW", "to_state": "EXPIRED",
             "trigger_type": "manual"},
            {"code": "SHIP", "from_state": "PAID", "to_state": "DONE",
             "trigger_type": "on_import", "trigger_config": {"record_status": "success"}},
        ],
    }
    wf.update(overrides)
    return compile_workflow(wf)


def _decide(wf, state, source, etype, payload, record=None):
    context = build_context(payload, record or {}, {"state": state, "record_key": "k",
                                                    "run_id": None, "vars": {}})
    event = {"source": source, "type": etype, "payload": payload,
             "record": {"status": (payload or {}).get("status"), "data": record}}
    return select_transition(wf, state, source, event, context, TRIGGERS)


def test_lowest_priority_number_wins():
    assert _decide(_wf(), "NEW", "on_webhook", "order.paid", {"total": 5000}).transition.code \
        == "BIG"
    assert _decide(_wf(), "NEW", "on_webhook", "order.paid", {"total": 5}).transition.code \
        == "PAY"


def test_ties_break_by_code_and_disabled_never_fire():
    # AAA has PAY's priority and sorts first by code, but it is disabled.
    assert _decide(_wf(), "NEW", "on_webhook", "order.x", {"total": 1}).transition.code == "PAY"


def test_trigger_type_and_plugin_must_match():
    assert _decide(_wf(), "NEW", "on_import", "order.paid", {"total": 5}).transition is None
    assert _decide(_wf(), "NEW", "on_webhook", "invoice.paid", {"total": 5}).transition is None


def test_missing_path_is_false():
    decision = _decide(_wf(), "NEW", "on_webhook", "order.paid", {})
    assert decision.transition is None


def test_final_state_fires_nothing():
    decision = _decide(_wf(), "DONE", "on_webhook", "order.paid", {"total": 5})
    assert decision.transition is None and "final" in decision.reason


def test_unknown_state_is_reported():
    assert "no longer" in _decide(_wf(), "GONE", "manual", "", {}).reason


def test_record_status_filter():
    assert _decide(_wf(), "PAID", "on_import", "", {"status": "success"}).transition.code \
        == "SHIP"
    assert _decide(_wf(), "PAID", "on_import", "", {"status": "error"}).transition is None


def test_capture_skips_missing_paths():
    wf = _wf()
    context = build_context({"number": "SO-1"}, {}, {"vars": {"kept": 1}})
    assert capture_vars(wf.transitions["PAY"], context, {"kept": 1}) == {
        "kept": 1, "order_no": "SO-1"}


def test_timeout_rules():
    wf = _wf()
    entered = datetime(2026, 1, 1, tzinfo=UTC)
    assert timeout_due(entered, wf.states["NEW"]) == entered + timedelta(hours=1.5)
    assert timeout_due(entered, wf.states["PAID"]) is None
    assert timeout_due(entered, wf.states["DONE"]) is None


def test_explain_names_first_reason():
    wf = _wf()
    payload = {"total": 0}
    context = build_context(payload, {}, {"state": "NEW", "vars": {}})
    event = {"source": "on_webhook", "type": "order.paid", "payload": payload}
    verdicts = {v.code: v for v in explain(wf, "NEW", "on_webhook", event, context, TRIGGERS)}
    assert verdicts["BIG"].reason == ("condition event.total ge 1000 was false because "
                                      "event.total is 0")
    assert verdicts["AAA"].reason == "transition is disabled"
    assert "Manual" in verdicts["EXPIRE"].reason
    assert not any(v.fires for v in verdicts.values())
    payload = {"total": 5}
    context = build_context(payload, {}, {"state": "NEW", "vars": {}})
    verdicts = {v.code: v for v in explain(wf, "NEW", "on_webhook",
                                          {**event, "payload": payload}, context, TRIGGERS)}
    assert verdicts["PAY"].fires and verdicts["PAY"].reason == "fires"
    verdicts = explain(wf, "NEW", "on_webhook", {**event, "type": "invoice.x"}, context,
                       TRIGGERS)
    assert "does not match the filter" in {v.code: v for v in verdicts}["PAY"].reason


def test_explain_disabled_workflow():
    wf = _wf(enabled=False)
    context = build_context({}, {}, {"state": "NEW", "vars": {}})
    verdicts = explain(wf, "NEW", "manual", {}, context, TRIGGERS)
    assert all("disabled" in v.reason for v in verdicts)


@pytest.mark.parametrize(("op", "actual", "expected", "result"), [
    ("eq", "paid", "paid", True), ("eq", 5, "5", True), ("eq", "5.0", 5, True),
    ("eq", True, "true", True), ("eq", 1, True, False), ("ne", "a", "b", True),
    ("ne", MISSING, "b", False), ("gt", 5, 3, True), ("gt", "10", 9, True),
    ("gt", "b", "a", True), ("gt", "b", 1, False), ("ge", 3, 3, True), ("lt", 1, 2, True),
    ("le", 2, 2, True), ("in", "a", ["a", "b"], True), ("in", 2, ["1", "2"], True),
    ("in", "c", ["a"], False), ("not_in", "c", ["a"], True), ("not_in", MISSING, ["a"], False),
    ("contains", "hello", "ell", True), ("contains", ["x", 1], 1, True),
    ("contains", {"k": 1}, "k", True), ("contains", 5, "5", False),
    ("starts_with", "SO-1", "SO-", True), ("starts_with", None, "x", False),
    ("exists", None, None, True), ("exists", MISSING, None, False),
    ("not_exists", MISSING, None, True), ("not_exists", 0, None, False),
    ("matches", "SO-123", r"SO-\d+", True), ("matches", "xSO-1", r"SO-\d+", False),
    ("matches", 123, r"\d+", True),
])
def test_operators(op, actual, expected, result):
    assert compare(op, actual, expected) is result


@pytest.mark.parametrize("op", [o for o in OPERATORS if o != "not_exists"])
def test_missing_path_false_for_every_operator(op):
    assert compare(op, MISSING, ["x"] if op in ("in", "not_in") else "x") is False


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5)
                    | st.sampled_from(["", "a", "5", "5.0", "true", "x"]),
                    lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@given(op=st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains"]),
       actual=JSON | st.just(MISSING), expected=JSON)
def test_fast_comparisons_agree_with_compare(op, actual, expected):
    assert _fast_compare(op, expected)(actual) is compare(op, actual, expected)
