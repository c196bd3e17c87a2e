"""The engine's conditions: compare, evaluate_condition and explain_condition, every operator."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wfapp.engine import (
    OPERATORS,
    compare,
    evaluate_condition,
    explain_condition,
    first_failed_condition,
)
from wfapp.paths import MISSING

CONTEXT = {
    "event": {"total": 12.5, "status": "paid", "number": "SO-1001", "count": "10",
              "tags": ["rush", "gift", 3], "data": {"lines": [{"qty": 2}, {"qty": 0}]},
              "none": None, "flag": True, "empty": "", "zero": 0},
    "record": {"country": "DE", "email": "a@example.com"},
    "instance": {"state": "NEW", "record_key": "K1", "run_id": None,
                 "vars": {"order_no": "SO-1001"}},
}


@pytest.mark.parametrize(("field", "operator", "value", "expected"), [
    ("event.status", "eq", "paid", True), ("event.status", "eq", "PAID", False),
    ("event.status", "ne", "paid", False), ("event.status", "ne", "open", True),
    ("event.total", "eq", 12.5, True), ("event.total", "eq", "12.5", True),
    ("event.count", "eq", 10, True), ("event.count", "eq", 10.0, True),
    ("event.count", "ne", 10, False),
    ("event.total", "gt", 12, True), ("event.total", "gt", 12.5, False),
    ("event.total", "ge", 12.5, True), ("event.total", "lt", 13, True),
    ("event.total", "le", 12.4, False),
    ("event.count", "gt", 9, True), ("event.count", "gt", "9", True),  # numeric strings
    ("event.count", "lt", 100, True), ("event.count", "le", "10", True),
    ("event.status", "gt", "open", True), ("event.status", "lt", "open", False),  # strings
    ("event.status", "gt", 1, False), ("event.tags", "gt", 1, False),  # incomparable
    ("event.status", "in", ["open", "paid"], True), ("event.status", "in", [], False),
    ("event.count", "in", [10, 11], True), ("event.status", "not_in", ["open"], True),
    ("event.status", "not_in", ["paid"], False),
    ("event.tags", "contains", "gift", True), ("event.tags", "contains", "gi", False),
    ("event.tags", "contains", "3", True), ("event.number", "contains", "100", True),
    ("event.number", "contains", "x", False), ("event.data", "contains", "lines", True),
    ("event.total", "contains", 1, False), ("event.number", "contains", None, False),
    ("event.number", "starts_with", "SO-", True), ("event.number", "starts_with", "so-", False),
    ("event.total", "starts_with", "12", True), ("event.tags", "starts_with", "rush", False),
    ("event.number", "matches", r"SO-\d+", True), ("event.number", "matches", r"SO-\d", False),
    ("event.number", "matches", r"\d+", False), ("event.total", "matches", r"12\.5", True),
    ("record.email", "matches", r"[^@]+@example\.com", True),
    ("event.status", "exists", None, True), ("event.none", "exists", None, True),
    ("event.none", "not_exists", None, False), ("event.nope", "not_exists", None, True),
    ("event.none", "eq", None, True), ("event.empty", "eq", "", True),
    ("event.zero", "eq", False, False), ("event.flag", "eq", True, True),
    ("event.flag", "eq", "true", True), ("event.flag", "eq", 1, False),
    ("event.data.lines.0.qty", "eq", 2, True), ("event.data.lines.-1.qty", "eq", 0, True),
    ("event.data.lines.5.qty", "exists", None, False), ("event.tags.1", "eq", "gift", True),
    ("instance.vars.order_no", "eq", "SO-1001", True), ("instance.state", "ne", "NEW", False),
    ("instance.run_id", "exists", None, True), ("record.country", "in", ["DE", "AT"], True),
])
def test_evaluate_condition(field, operator, value, expected):
    condition = {"field": field, "operator": operator, "value": value}
    assert evaluate_condition(condition, CONTEXT) is expected


@pytest.mark.parametrize("operator", OPERATORS)
def test_a_missing_path_is_false_for_every_operator_but_not_exists(operator):
    value = {"in": ["x"], "not_in": ["x"]}.get(operator, "x")
    for field in ("event.nope", "event.status.deeper", "event.tags.9", "record.x.y",
                  "instance.vars.none"):
        condition = {"field": field, "operator": operator, "value": value}
        assert evaluate_condition(condition, CONTEXT) is (operator == "not_exists")
    assert compare(operator, MISSING, value) is (operator == "not_exists")


def test_unknown_operator_is_an_error():
    with pytest.raises(ValueError, match="unknown operator 'like'"):
        compare("like", "a", "a")


def test_explain_condition():
    assert explain_condition({"field": "event.total", "operator": "gt", "value": 100}, CONTEXT) \
        == "condition event.total gt 100 was false because event.total is 12.5"
    assert explain_condition({"field": "event.nope", "operator": "exists"}, CONTEXT) \
        == "condition event.nope exists was false because event.nope is missing"
    assert explain_condition({"field": "event.status", "operator": "in",
                              "value": ["open"]}, CONTEXT) \
        == "condition event.status in ['open'] was false because event.status is 'paid'"


def test_first_failed_condition():
    ok = {"field": "event.status", "operator": "eq", "value": "paid"}
    bad = {"field": "event.total", "operator": "lt", "value": 1}
    assert first_failed_condition([ok, ok], CONTEXT) is None
    assert first_failed_condition([ok, bad, ok], CONTEXT) is bad
    assert first_failed_condition([], CONTEXT) is None


SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) \
    | st.text(max_size=3) | st.sampled_from(["1", "1.0", "true", "x"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=2), inner, max_size=2), max_leaves=5)


@settings(max_examples=200, deadline=None)
@given(actual=VALUES, expected=SCALARS, options=st.lists(SCALARS, max_size=4))
def test_operator_pairs_are_complements(actual, expected, options):
    assert compare("ne", actual, expected) is not compare("eq", actual, expected)
    assert compare("not_in", actual, options) is not compare("in", actual, options)
    assert compare("exists", actual, None) is True
    assert compare("not_exists", actual, None) is False
    assert compare("in", actual, options) is any(compare("eq", actual, o) for o in options)
