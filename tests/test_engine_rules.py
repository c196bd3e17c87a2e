"""The engine's pure rules: definition validation, and every condition operator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from wfapp.engine import (
    OPERATORS,
    VALUELESS,
    RuleError,
    check_condition,
    normalize_code,
    validate_workflow,
)
from wfapp.engine.rules import MAX_PRIORITY, MAX_TIMEOUT_HOURS, MIN_PRIORITY
from wfapp.plugins import build_registry, get_plugin_manager
from wfapp.services.definitions import normalize

TRIGGERS = build_registry(get_plugin_manager()).trigger_types


def _workflow() -> dict[str, Any]:
    """A small valid, normalized workflow: NEW -(SEND)-> SENT -(DONE)-> CLOSED, NEW times out."""
    return {
        "code": "WF", "description": "", "initial_state": "NEW", "enabled": True,
        "states": [
            {"code": "NEW", "description": "", "is_initial": True, "is_final": False,
             "timeout_hours": 2, "on_timeout_transition": "EXPIRE"},
            {"code": "SENT", "description": "", "is_initial": False, "is_final": False,
             "timeout_hours": None, "on_timeout_transition": None},
            {"code": "CLOSED", "description": "", "is_initial": False, "is_final": True,
             "timeout_hours": None, "on_timeout_transition": None},
        ],
        "transitions": [
            {"code": "SEND", "description": "", "from_state": "NEW", "to_state": "SENT",
             "trigger_type": "on_webhook", "enabled": True, "priority": 0,
             "trigger_config": {"event_filter": "order.*"},
             "conditions": [{"field": "event.total", "operator": "gt", "value": 0}],
             "capture": {"order_no": "event.number"}},
            {"code": "DONE", "description": "", "from_state": "SENT", "to_state": "CLOSED",
             "trigger_type": "manual", "enabled": True, "priority": 0, "trigger_config": {},
             "conditions": [], "capture": {}},
            {"code": "EXPIRE", "description": "", "from_state": "NEW", "to_state": "CLOSED",
             "trigger_type": "manual", "enabled": True, "priority": 5, "trigger_config": {},
             "conditions": [], "capture": {}},
        ],
    }


def _errors(change: Callable[[dict[str, Any]], Any]) -> dict[str, str]:
    wf = _workflow()
    change(wf)
    return {e.path: e.message for e in validate_workflow(wf, TRIGGERS)}


def _state(wf: dict[str, Any], code: str) -> dict[str, Any]:
    return next(s for s in wf["states"] if s["code"] == code)


def _transition(wf: dict[str, Any], code: str) -> dict[str, Any]:
    return next(t for t in wf["transitions"] if t["code"] == code)


def test_the_base_workflow_is_valid():
    assert validate_workflow(_workflow(), TRIGGERS) == []


# --- states, codes and the initial state --------------------------------------------------------


@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda w: _state(w, "SENT").update(is_initial=True), "workflow.states",
     "exactly one state must be marked initial; 2 are (NEW, SENT)"),
    (lambda w: _state(w, "NEW").update(is_initial=False), "workflow.states",
     "exactly one state must be marked initial; 0 are"),
    (lambda w: w.update(initial_state="NOPE"), "workflow.initial_state",
     "initial state 'NOPE' is not a state of this workflow"),
    (lambda w: w.update(initial_state=None), "workflow.initial_state",
     "initial state is required"),
    (lambda w: w.update(initial_state="SENT"), "workflow.initial_state",
     "initial state 'SENT' differs from the state marked initial ('NEW')"),
    (lambda w: w.update(states=[], transitions=[]), "workflow.states",
     "a workflow needs at least one state"),
    (lambda w: _state(w, "SENT").update(code="NEW"), "workflow.states[1].code",
     "duplicate code 'NEW'"),
    (lambda w: _transition(w, "DONE").update(code="SEND"), "workflow.transitions[1].code",
     "duplicate code 'SEND'"),
    (lambda w: w.update(code="bad code"), "workflow.code",
     "code 'bad code' must be 1-20 characters of A-Z, 0-9, _ and -"),
    (lambda w: w.update(code="wf"), "workflow.code", "must be 1-20 characters"),
    (lambda w: w.update(code="X" * 21), "workflow.code", "must be 1-20 characters"),
    (lambda w: w.update(code=""), "workflow.code", "code is required"),
    (lambda w: w.update(code=5), "workflow.code", "code is required"),
    (lambda w: _state(w, "SENT").update(code="SENT!"), "workflow.states[1].code",
     "must be 1-20 characters"),
    (lambda w: _transition(w, "DONE").update(code="DONE NOW"), "workflow.transitions[1].code",
     "must be 1-20 characters"),
    (lambda w: w.update(description="d" * 101), "workflow.description",
     "must be at most 100 characters"),
    (lambda w: _state(w, "SENT").update(description="d" * 101),
     "workflow.states[1].description", "must be at most 100 characters"),
    (lambda w: _transition(w, "DONE").update(description="d" * 101),
     "workflow.transitions[1].description", "must be at most 100 characters"),
    (lambda w: w.update(description="a\x00b"), "workflow.description",
     "must not contain NUL characters"),
    (lambda w: _state(w, "SENT").update(description=5), "workflow.states[1].description",
     "must be a string"),
    (lambda w: _state(w, "NEW").update(is_final=True), "workflow.states[0].is_final",
     "the initial state cannot be final"),
])
def test_state_and_code_rules(change, path, message):
    errors = _errors(change)
    assert path in errors, errors
    assert message in errors[path]


def test_codes_are_well_formed_with_every_allowed_character():
    assert _errors(lambda w: w.update(code="A-Z_0-9")) == {}
    assert _errors(lambda w: w.update(code="X" * 20)) == {}


def test_normalize_upper_cases_every_code_and_fills_defaults():
    wf = {"code": " wf ", "initial_state": "new",
          "states": [{"code": "new", "is_initial": True, "on_timeout_transition": "expire",
                      "timeout_hours": 1},
                     {"code": "Done", "is_final": True}],
          "transitions": [{"code": "expire", "from_state": "new", "to_state": "done",
                           "trigger_type": "manual"}]}
    normalized = normalize(wf)
    assert normalized["code"] == "WF" and normalized["initial_state"] == "NEW"
    assert [s["code"] for s in normalized["states"]] == ["NEW", "DONE"]
    assert normalized["states"][0]["on_timeout_transition"] == "EXPIRE"
    transition = normalized["transitions"][0]
    assert (transition["code"], transition["from_state"], transition["to_state"]) == (
        "EXPIRE", "NEW", "DONE")
    assert transition["enabled"] is True and transition["priority"] == 0
    assert transition["trigger_config"] == {} and transition["conditions"] == []
    assert normalized["states"][1]["timeout_hours"] is None
    assert validate_workflow(normalized, TRIGGERS) == []
    # Without normalize, lower-case codes break the code rule.
    assert "workflow.code" in {e.path for e in validate_workflow(wf, TRIGGERS)}
    assert normalize_code(" ab-1 ") == "AB-1" and normalize_code(7) == 7


# --- timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda w: _state(w, "NEW").update(on_timeout_transition=None),
     "workflow.states[0].on_timeout_transition",
     "a state with a timeout needs an On Timeout Transition"),
    (lambda w: _state(w, "NEW").update(on_timeout_transition="DONE"),
     "workflow.states[0].on_timeout_transition", "transition 'DONE' leaves 'SENT', not 'NEW'"),
    (lambda w: _state(w, "NEW").update(on_timeout_transition="NOPE"),
     "workflow.states[0].on_timeout_transition", "transition 'NOPE' does not exist"),
    (lambda w: _state(w, "NEW").update(timeout_hours=None),
     "workflow.states[0].timeout_hours", "an On Timeout Transition needs a timeout"),
    (lambda w: _state(w, "CLOSED").update(timeout_hours=1),
     "workflow.states[2].timeout_hours", "a final state has no timeout"),
    (lambda w: _state(w, "NEW").update(timeout_hours=0), "workflow.states[0].timeout_hours",
     "greater than 0"),
    (lambda w: _state(w, "NEW").update(timeout_hours=-1.5), "workflow.states[0].timeout_hours",
     "greater than 0"),
    (lambda w: _state(w, "NEW").update(timeout_hours="2"), "workflow.states[0].timeout_hours",
     "greater than 0"),
    (lambda w: _state(w, "NEW").update(timeout_hours=True), "workflow.states[0].timeout_hours",
     "greater than 0"),
    (lambda w: _state(w, "NEW").update(timeout_hours=float("nan")),
     "workflow.states[0].timeout_hours", "greater than 0"),
    (lambda w: _state(w, "NEW").update(timeout_hours=float("inf")),
     "workflow.states[0].timeout_hours", f"at most {MAX_TIMEOUT_HOURS}"),
    (lambda w: _state(w, "NEW").update(timeout_hours=10**400),
     "workflow.states[0].timeout_hours", f"at most {MAX_TIMEOUT_HOURS}"),
])
def test_timeout_rules(change, path, message):
    errors = _errors(change)
    assert path in errors, errors
    assert message in errors[path]


@pytest.mark.parametrize("hours", [0.01, 0.25, 1, 1.5, 24, MAX_TIMEOUT_HOURS])
def test_fractional_and_whole_timeouts_are_fine(hours):
    assert _errors(lambda w: _state(w, "NEW").update(timeout_hours=hours)) == {}


# --- transitions --------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda w: _transition(w, "SEND").update(to_state="LIMBO"),
     "workflow.transitions[0].to_state", "state 'LIMBO' does not exist"),
    (lambda w: _transition(w, "SEND").update(from_state=None),
     "workflow.transitions[0].from_state", "from state is required"),
    (lambda w: _transition(w, "SEND").update(to_state=""),
     "workflow.transitions[0].to_state", "to state is required"),
    (lambda w: _transition(w, "DONE").update(from_state="CLOSED"),
     "workflow.transitions[1].from_state", "is final; nothing leaves a final state"),
    (lambda w: _transition(w, "SEND").update(trigger_type="on_fax"),
     "workflow.transitions[0].trigger_type", "unknown trigger type 'on_fax'; known: manual"),
    (lambda w: _transition(w, "SEND").update(trigger_type=None),
     "workflow.transitions[0].trigger_type", "unknown trigger type None"),
    (lambda w: _transition(w, "SEND").update(priority="1"), "workflow.transitions[0].priority",
     "priority must be a whole number"),
    (lambda w: _transition(w, "SEND").update(priority=1.5), "workflow.transitions[0].priority",
     "priority must be a whole number"),
    (lambda w: _transition(w, "SEND").update(priority=True), "workflow.transitions[0].priority",
     "priority must be a whole number"),
    (lambda w: _transition(w, "SEND").update(priority=MAX_PRIORITY + 1),
     "workflow.transitions[0].priority", "between"),
    (lambda w: _transition(w, "SEND").update(priority=-(2**63)),
     "workflow.transitions[0].priority", "between"),
    (lambda w: _transition(w, "SEND").update(trigger_config=["x"]),
     "workflow.transitions[0].trigger_config", "must be an object"),
    (lambda w: _transition(w, "SEND")["trigger_config"].update(colour="red"),
     "workflow.transitions[0].trigger_config.colour", "unknown field for trigger type"),
])
def test_transition_rules(change, path, message):
    errors = _errors(change)
    assert path in errors, errors
    assert message in errors[path]


def test_priority_bounds_are_inclusive():
    for priority in (MIN_PRIORITY, 0, MAX_PRIORITY):
        assert _errors(lambda w, p=priority: _transition(w, "SEND").update(priority=p)) == {}


def test_every_error_is_collected():
    def break_everything(w: dict[str, Any]) -> None:
        w["code"] = "bad code"
        _state(w, "SENT")["code"] = "NEW"
        _state(w, "CLOSED")["timeout_hours"] = 3
        _transition(w, "SEND")["trigger_type"] = "nope"
        _transition(w, "SEND")["conditions"][0]["operator"] = "like"
        _transition(w, "DONE")["priority"] = "x"

    errors = _errors(break_everything)
    assert {"workflow.code", "workflow.states[1].code", "workflow.states[2].timeout_hours",
            "workflow.transitions[0].trigger_type",
            "workflow.transitions[0].conditions[0].operator",
            "workflow.transitions[1].priority"} <= set(errors)
    assert str(RuleError("workflow.code", "x")) == "workflow.code: x"


# --- trigger config, validated by each built-in plugin --------------------------------------------

GOOD_AND_BAD_CONFIGS = [
    ("on_action_result", {"action": "submit", "outcome": "failed"},
     {"action": "submit", "outcome": "maybe"}, "outcome"),
    ("on_action_result", {"action": "http_request"}, {"outcome": "succeeded"}, "action"),
    ("manual", {}, {"confirm": "yes"}, "confirm"),
    ("manual", {"button_label": "Ship it", "confirm": True}, {"button_label": "x" * 61},
     "button_label"),
    ("on_import", {"record_status": "success"}, {"record_status": "partial"}, "record_status"),
    ("on_import", {}, {"record_status": 1}, "record_status"),
    ("on_export", {"record_status": "error"}, {"status": "error"}, "status"),
    ("on_webhook", {"event_filter": "order.*", "json_path": "data.status",
                    "expected_value": "paid"}, {"expected_value": "paid"}, "json_path"),
    ("on_webhook", {}, {"event_filter": ["a"]}, "event_filter"),
    ("on_scheduled_poll", {"url": "https://api.example/o/{record_key}?v={vars.no}",
                           "interval_minutes": 0.5, "method": "POST", "headers": {"A": "b"},
                           "response_path": "status", "expected_value": "shipped"},
     {"url": "https://api.example/{nope}", "interval_minutes": 5}, "url"),
    ("on_scheduled_poll", {"url": "http://h/x", "interval_minutes": 15},
     {"url": "ftp://h/x", "interval_minutes": 15}, "url"),
    ("on_scheduled_poll", {"url": "http://h/x", "interval_minutes": 1},
     {"url": "http://h/x"}, "interval_minutes"),
    ("on_scheduled_poll", {"url": "http://h/x", "interval_minutes": 1},
     {"url": "http://h/x", "interval_minutes": 0}, "interval_minutes"),
    ("on_scheduled_poll", {"url": "http://h/x", "interval_minutes": 1},
     {"url": "http://h/x", "interval_minutes": 1, "method": "FETCH"}, "method"),
    ("on_scheduled_poll", {"url": "http://h/x", "interval_minutes": 1},
     {"url": "http://h/x", "interval_minutes": 1, "headers": {"A": 1}}, "headers"),
    ("on_scheduled_poll", {"url": "http://h/x", "interval_minutes": 1},
     {"url": "http://h/x", "interval_minutes": 1, "expected_value": "x"}, "response_path"),
    ("on_bc_event", {"resource": "salesOrders", "change_types": ["created", "collection"]},
     {"resource": "sales orders"}, "resource"),
    ("on_bc_event", {"resource": "items"}, {"resource": "items", "change_types": ["renamed"]},
     "change_types"),
    ("on_bc_event", {"resource": "items"}, {}, "resource"),
]


@pytest.mark.parametrize(("trigger", "good", "bad", "field"), GOOD_AND_BAD_CONFIGS)
def test_trigger_config_is_validated_by_its_plugin(trigger, good, bad, field):
    def use(config: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        return lambda w: _transition(w, "DONE").update(trigger_type=trigger,
                                                       trigger_config=config)

    assert _errors(use(good)) == {}
    errors = _errors(use(bad))
    assert f"workflow.transitions[1].trigger_config.{field}" in errors, errors


def test_all_six_built_in_trigger_types_are_covered():
    assert {t for t, *_ in GOOD_AND_BAD_CONFIGS} == set(TRIGGERS)


# --- conditions: shape ----------------------------------------------------------------------------

GOOD_VALUES: dict[str, list[Any]] = {
    "eq": [1, "paid", None, True, 1.5, [1], {"a": 1}], "ne": [0, "x", None],
    "gt": [0, -1.5, "2024-01-01", "2024-01-01T10:00:00+02:00", "12.5"], "ge": [1],
    "lt": [100, "-3"], "le": [0.5],
    "in": [[], ["a", 1, None]], "not_in": [["x"]],
    "contains": ["abc", 3, True], "starts_with": ["SO-", ""],
    "matches": [r"SO-\d+", ".*", "(a|b)c"],
}
BAD_VALUES: dict[str, list[Any]] = {
    "gt": [None, True, [1], {}, "abc", "m", "2024-13"], "ge": [False], "lt": [[]],
    "le": [{"a": 1}],
    "in": ["a", 1, None, {"a": 1}, [[1]], [{"a": 1}], ["x" * 1001]], "not_in": ["x"],
    "eq": ["x" * 1001],
    "starts_with": [1, None, ["a"]], "matches": [1, None, "(", "[a-", "*"],
    "exists": [1, "x", False], "not_exists": [0, ""],
}


@pytest.mark.parametrize(("operator", "value"),
                         [(op, v) for op, values in GOOD_VALUES.items() for v in values])
def test_operator_accepts_a_proper_value(operator, value):
    assert check_condition({"field": "event.x", "operator": operator, "value": value}, "c") == []


@pytest.mark.parametrize("operator", sorted(VALUELESS))
def test_valueless_operators_take_no_value(operator):
    assert check_condition({"field": "event.x", "operator": operator}, "c") == []
    assert check_condition({"field": "event.x", "operator": operator, "value": None}, "c") == []


@pytest.mark.parametrize(("operator", "value"),
                         [(op, v) for op, values in BAD_VALUES.items() for v in values])
def test_operator_refuses_a_wrong_value(operator, value):
    errors = check_condition({"field": "event.x", "operator": operator, "value": value}, "c")
    assert [e.path for e in errors] == ["c.value"], errors


@pytest.mark.parametrize("operator", ["eq", "ne", "contains"])
def test_operators_with_a_value_need_one(operator):
    errors = check_condition({"field": "event.x", "operator": operator}, "c")
    assert errors == [RuleError("c.value", f"operator {operator} needs a value")]


def test_bad_regex_is_named():
    errors = check_condition({"field": "event.x", "operator": "matches", "value": "(a"}, "c")
    assert errors[0].path == "c.value"
    assert errors[0].message.startswith("invalid regular expression (RE2 syntax): missing )")


@pytest.mark.parametrize(("pattern", "why"), [
    (r"(a)\1", "invalid escape sequence"),            # backreferences: RE2 has none
    (r"(?=a)a", "invalid perl operator"),             # look-around likewise
    ("a" * 1001, "at most 1000 characters"),
    ("(" * 600 + ")" * 600, ""),                      # deep nesting: refused, not a crash
])
def test_patterns_re2_cannot_run_are_refused_on_save(pattern, why):
    errors = check_condition({"field": "event.x", "operator": "matches", "value": pattern}, "c")
    assert errors and errors[0].path == "c.value" and why in errors[0].message


def test_catastrophic_pattern_finishes_in_milliseconds():
    import time

    from wfapp.engine import compare

    start = time.perf_counter()
    for _ in range(100):
        assert compare("matches", "a" * 34 + "!", "(a+)+$") is False
        assert compare("matches", "a" * 5000 + "!", "(a|a)*(a|aa)*b") is False
    assert compare("matches", "a" * 34, "(a+)+$") is True
    assert time.perf_counter() - start < 5.0  # Python's re needs hours for the first one


def test_values_over_the_cap_never_match():
    from wfapp.engine import compare, explain_condition
    from wfapp.engine.patterns import MAX_VALUE_LENGTH

    long_value = "a" * (MAX_VALUE_LENGTH + 1)
    assert compare("matches", long_value, "a*") is False
    assert compare("matches", long_value[:-1], "a*") is True
    why = explain_condition({"field": "event.x", "operator": "matches", "value": "a*"},
                            {"event": {"x": long_value}})
    assert f"longer than {MAX_VALUE_LENGTH} characters" in why and len(why) < 400


def test_unknown_operator():
    errors = check_condition({"field": "event.x", "operator": "like", "value": "a"}, "c")
    assert errors == [RuleError("c.operator", "unknown operator 'like'; known: "
                                + " ".join(OPERATORS))]


@pytest.mark.parametrize("field", [
    "event.total", "event.data.lines.0.qty", "record.country", "record.a-b", "instance.state",
    "instance.record_key", "instance.run_id", "instance.vars.order_no", "event.0",
])
def test_good_field_paths(field):
    assert check_condition({"field": field, "operator": "exists"}, "c") == []


@pytest.mark.parametrize("field", [
    "total", "event", "event.", "event..x", ".event.x", "record", "instance", "instance.vars",
    "instance.vars.", "instance.data.x", "instance.states", "payload.x", "event.a b", "",
    None, 5, ["event.x"], "EVENT.x",
])
def test_bad_field_paths(field):
    errors = check_condition({"field": field, "operator": "exists"}, "c")
    assert [e.path for e in errors] == ["c.field"], errors


def test_condition_errors_name_their_place_in_the_workflow():
    def change(w: dict[str, Any]) -> None:
        _transition(w, "SEND")["conditions"] += [
            {"field": "total", "operator": "gt", "value": 1},
            {"field": "event.x", "operator": "in", "value": "a"}]

    errors = _errors(change)
    assert set(errors) == {"workflow.transitions[0].conditions[1].field",
                           "workflow.transitions[0].conditions[2].value"}


# --- captures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("capture", "bad"), [
    ({"tracking_no": "event.data.tracking", "_x": "record.a", "N2": "instance.vars.prev"}, None),
    ({"9bad": "event.x"}, "9bad"), ({"has space": "event.x"}, "has space"),
    ({"x" * 41: "event.x"}, "x" * 41), ({"ok": "total"}, "ok"), ({"ok": 5}, "ok"),
    ({"ok": "event."}, "ok"), ({"ok": "instance.vars"}, "ok"), ({"": "event.x"}, ""),
])
def test_capture_names_and_paths(capture, bad):
    errors = _errors(lambda w: _transition(w, "SEND").update(capture=capture))
    if bad is None:
        assert errors == {}
    else:
        assert list(errors) == [f"workflow.transitions[0].capture.{bad}"], errors


def test_capture_must_be_an_object():
    errors = _errors(lambda w: _transition(w, "SEND").update(capture=["event.x"]))
    assert errors == {"workflow.transitions[0].capture": "must be an object of names to paths"}


def test_workflow_validation_does_not_mutate_its_input():
    wf = _workflow()
    before = copy.deepcopy(wf)
    validate_workflow(wf, TRIGGERS)
    assert wf == before
