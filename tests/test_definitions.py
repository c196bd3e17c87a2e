"""Import and export (wfapp.workflow/v1): round trips, and invalid documents write nothing."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.strategies import DB_PROFILE, workflows
from wfapp.demo import ORDER_SYNC
from wfapp.extensions import db
from wfapp.models import State, Transition, Workflow
from wfapp.services.definitions import (
    dumps,
    export_document,
    import_document,
    parse_file,
    preview_import,
)
from wfapp.services.errors import Conflict, ValidationFailed

FIXTURE = settings(DB_PROFILE)


def _counts() -> tuple[int, int, int]:
    return tuple(db.session.scalar(select(func.count()).select_from(m))
                 for m in (Workflow, State, Transition))


def _wipe() -> None:
    for workflow in db.session.scalars(select(Workflow)):
        db.session.delete(workflow)
    db.session.commit()


def test_demo_round_trip(app):
    import_document(ORDER_SYNC)
    first = export_document("ORDER_SYNC")
    assert first == ORDER_SYNC
    import_document(json.loads(dumps(first)), replace=True)
    assert export_document("ORDER_SYNC") == first


@FIXTURE
@given(document=workflows())
def test_generated_round_trip(app, document):
    _wipe()
    workflow = import_document(document)
    exported = export_document(workflow.code)
    _wipe()
    import_document(json.loads(dumps(exported)))
    assert export_document(workflow.code) == exported
    # Replacing with itself changes nothing either.
    import_document(exported, replace=True)
    assert export_document(workflow.code) == exported


@FIXTURE
@given(document=workflows(), other=st.from_regex(r"[A-Z][A-Z0-9_-]{0,19}", fullmatch=True))
def test_generated_round_trip_under_another_code(app, document, other):
    _wipe()
    exported = export_document(import_document(document).code)
    _wipe()  # a fresh database: nothing of the first import is left
    copy_doc = copy.deepcopy(exported)
    copy_doc["workflow"]["code"] = other.lower()  # codes are upper-cased on import
    assert import_document(copy_doc).code == other
    again = export_document(other)
    assert again["workflow"].pop("code") == other
    exported["workflow"].pop("code")
    assert again == exported


def test_lower_case_codes_are_stored_upper_case(app):
    doc = json.loads(json.dumps(ORDER_SYNC).replace('"NEW"', '"new"')
                     .replace('"EXPIRE"', '"expire"'))
    doc["workflow"]["code"] = "order_sync"
    import_document(doc)
    assert export_document("order_sync") == ORDER_SYNC


def test_missing_optional_fields_get_their_defaults(app):
    doc = {"format": "wfapp.workflow/v1", "workflow": {
        "code": "MIN", "initial_state": "A",
        "states": [{"code": "A", "is_initial": True}, {"code": "B", "is_final": True}],
        "transitions": [{"code": "GO", "from_state": "A", "to_state": "B",
                         "trigger_type": "manual"}]}}
    import_document(doc)
    assert export_document("MIN") == {"format": "wfapp.workflow/v1", "workflow": {
        "code": "MIN", "description": "", "initial_state": "A", "enabled": True,
        "states": [{"code": "A", "description": "", "is_initial": True, "is_final": False,
                    "timeout_hours": None, "on_timeout_transition": None},
                   {"code": "B", "description": "", "is_initial": False, "is_final": True,
                    "timeout_hours": None, "on_timeout_transition": None}],
        "transitions": [{"code": "GO", "description": "", "from_state": "A", "to_state": "B",
                         "trigger_type": "manual", "enabled": True, "priority": 0,
                         "trigger_config": {}, "conditions": [], "capture": {}}]}}


@pytest.mark.parametrize(("document", "path"), [
    (None, "document"), ([], "document"), ("x", "document"), ({}, "format"),
    ({"format": "wfapp.workflow/v2", "workflow": {}}, "format"),
    ({"format": "wfapp.workflow/v1", "workflow": []}, "workflow"),
    ({"format": "wfapp.workflow/v1", "workflow": ORDER_SYNC["workflow"], "extra": 1}, "extra"),
])
def test_documents_of_the_wrong_shape(app, document, path):
    with pytest.raises(ValidationFailed) as caught:
        import_document(document)
    assert path in [e.path for e in caught.value.errors]
    assert _counts() == (0, 0, 0)


def test_schema_and_rule_errors_come_back_together(app):
    def change(w):
        w["states"][0]["timeout_hours"] = "soon"  # schema
        w["transitions"][1]["to_state"] = "LIMBO"  # rule
        w["transitions"][2]["trigger_type"] = "on_fax"  # rule

    with pytest.raises(ValidationFailed) as caught:
        import_document(_broken(change))
    paths = [e.path for e in caught.value.errors]
    assert paths[0] == "workflow.states[0].timeout_hours"
    assert {"workflow.transitions[1].to_state", "workflow.transitions[2].trigger_type"} <= set(
        paths)
    # The rule about the same place is not repeated beside the schema's.
    assert paths.count("workflow.states[0].timeout_hours") == 1


def _broken(change) -> dict[str, Any]:
    doc = copy.deepcopy(ORDER_SYNC)
    change(doc["workflow"])
    return doc


RULES = [
    (lambda w: w["states"][2].update(code="NEW"), "workflow.states[2].code",
     "duplicate code 'NEW'"),
    (lambda w: w.update(code="bad code"), "workflow.code", "must be 1-20 characters"),
    (lambda w: w.update(initial_state="NOPE"), "workflow.initial_state", "is not a state"),
    (lambda w: w["states"][1].update(is_initial=True), "workflow.states",
     "exactly one state must be marked initial"),
    (lambda w: w["states"][0].update(is_initial=False), "workflow.states",
     "exactly one state must be marked initial; 0"),
    (lambda w: w["states"][0].update(on_timeout_transition=None), "workflow.states[0]."
     "on_timeout_transition", "needs an On Timeout Transition"),
    (lambda w: w["states"][0].update(on_timeout_transition="CONFIRM"),
     "workflow.states[0].on_timeout_transition", "leaves 'PENDING', not 'NEW'"),
    (lambda w: w["states"][2].update(timeout_hours=2, on_timeout_transition=None),
     "workflow.states[2].timeout_hours", "a final state has no timeout"),
    (lambda w: w["transitions"][0].update(to_state="LIMBO"), "workflow.transitions[0].to_state",
     "does not exist"),
    (lambda w: w["transitions"][0].update(from_state="CONFIRMED"),
     "workflow.transitions[0].from_state", "is final"),
    (lambda w: w["transitions"][1].update(trigger_type="on_fax"),
     "workflow.transitions[1].trigger_type", "unknown trigger type"),
    (lambda w: w["transitions"][0]["trigger_config"].update(record_status="maybe"),
     "workflow.transitions[0].trigger_config.record_status", "must be one of"),
    (lambda w: w["transitions"][4]["trigger_config"].update(url="ftp://x"),
     "workflow.transitions[4].trigger_config.url", "http"),
    (lambda w: w["transitions"][0]["conditions"].append({"field": "total", "operator": "gt",
                                                         "value": 1}),
     "workflow.transitions[0].conditions[1].field", "must be a path"),
    (lambda w: w["transitions"][0]["conditions"].append({"field": "event.x",
                                                         "operator": "matches",
                                                         "value": "("}),
     "workflow.transitions[0].conditions[1].value", "invalid regular expression"),
    (lambda w: w["transitions"][0]["capture"].update({"9bad": "event.x"}),
     "workflow.transitions[0].capture.9bad", "variable name"),
    (lambda w: w["states"][0].update(colour="red"), "workflow.states[0].colour",
     "unknown field"),
    (lambda w: w["transitions"][0].update(priority="high"), "workflow.transitions[0].priority",
     "must be of type integer"),
    (lambda w: w.pop("states"), "workflow.states", "is required"),
    (lambda w: w.update(states=[]), "workflow.states", "should be non-empty"),
    (lambda w: w.update(enabled="yes"), "workflow.enabled", "must be of type boolean"),
    (lambda w: w.update(transitions={}), "workflow.transitions", "must be of type array"),
    (lambda w: w.update(initial_state="PENDING"), "workflow.initial_state",
     "differs from the state marked initial ('NEW')"),
    (lambda w: w["states"][0].update(is_final=True, timeout_hours=None,
                                     on_timeout_transition=None),
     "workflow.states[0].is_final", "the initial state cannot be final"),
    (lambda w: w["states"][3].update(on_timeout_transition="EXPIRE", timeout_hours=None),
     "workflow.states[3].on_timeout_transition", "leaves 'NEW', not 'FAILED'"),
    (lambda w: w["states"][0].update(on_timeout_transition="NOPE"),
     "workflow.states[0].on_timeout_transition", "transition 'NOPE' does not exist"),
    (lambda w: w["states"][0].update(timeout_hours=0), "workflow.states[0].timeout_hours",
     "less than or equal to the minimum of 0"),
    (lambda w: w["states"][0].update(timeout_hours=10**6), "workflow.states[0].timeout_hours",
     "at most 87600 hours"),
    (lambda w: w["transitions"][1].update(code="SUBMIT"), "workflow.transitions[1].code",
     "duplicate code 'SUBMIT'"),
    (lambda w: w["transitions"][1].update(priority=2**31), "workflow.transitions[1].priority",
     "between"),
    (lambda w: w["transitions"][1].update(trigger_config=[]),
     "workflow.transitions[1].trigger_config", "must be of type object"),
    (lambda w: w["transitions"][1]["trigger_config"].update(colour="red"),
     "workflow.transitions[1].trigger_config.colour", "unknown field"),
    (lambda w: w["transitions"][0]["conditions"].append({"field": "event.x",
                                                         "operator": "like", "value": 1}),
     "workflow.transitions[0].conditions[1].operator", "unknown operator 'like'"),
    (lambda w: w["transitions"][0]["conditions"].append({"field": "event.x",
                                                         "operator": "in", "value": "a"}),
     "workflow.transitions[0].conditions[1].value", "needs a list value"),
    (lambda w: w["transitions"][0]["conditions"].append({"field": "event.x",
                                                         "operator": "exists", "value": 1}),
     "workflow.transitions[0].conditions[1].value", "takes no value"),
    (lambda w: w["transitions"][0]["capture"].update({"ok": "total"}),
     "workflow.transitions[0].capture.ok", "must start with event., record."),
    (lambda w: w["transitions"][0]["capture"].update({"ok": 5}),
     "workflow.transitions[0].capture.ok", "must be of type string"),
    (lambda w: w.update(description="x\x00"), "workflow.description", "NUL"),
    (lambda w: w["states"][1].update(description="d" * 101), "workflow.states[1].description",
     "is too long"),
]


@pytest.mark.parametrize(("change", "path", "message"), RULES)
def test_each_rule_names_its_place_and_writes_nothing(app, change, path, message):
    with pytest.raises(ValidationFailed) as caught:
        import_document(_broken(change))
    found = {e.path: e.message for e in caught.value.errors}
    assert path in found, found
    assert message in found[path]
    assert _counts() == (0, 0, 0)


def test_all_errors_are_collected(app):
    def many(w):
        w["states"][2]["code"] = "NEW"
        w["transitions"][0]["to_state"] = "LIMBO"
        w["transitions"][3]["trigger_type"] = "nope"

    with pytest.raises(ValidationFailed) as caught:
        import_document(_broken(many))
    assert len(caught.value.errors) >= 3
    assert str(caught.value.errors[0]).startswith("workflow.")


def test_conflict_and_preview(app):
    import_document(ORDER_SYNC)
    with pytest.raises(Conflict):
        import_document(ORDER_SYNC)
    def change(w):
        w["description"] = "Other"
        del w["transitions"][4]
        w["states"].append({"code": "HOLD", "description": "On hold"})

    changed = _broken(change)
    preview = preview_import(changed)
    assert preview.exists
    assert "description: 'Sales order to fulfilment' → 'Other'" in preview.changes
    assert "state HOLD added" in preview.changes
    assert "transition POLL_STATUS removed" in preview.changes
    assert export_document("ORDER_SYNC") == ORDER_SYNC  # a preview writes nothing


def test_parse_file_errors():
    with pytest.raises(ValidationFailed, match="line 1 column 2"):
        parse_file(b"{x")
    with pytest.raises(ValidationFailed, match="UTF-8"):
        parse_file(b"\xff\xfe")


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                       lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                       max_leaves=12)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every dict and list inside a document."""
    found = [path] if isinstance(value, dict | list) else []
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        found += _containers(item, (*path, key))
    return found


@st.composite
def mutated(draw: Any) -> dict[str, Any]:
    """A valid document (the demo or a generated one) with one to three random changes."""
    doc = copy.deepcopy(draw(st.one_of(st.just(ORDER_SYNC), workflows())))
    for _ in range(draw(st.integers(1, 3))):
        target: Any = doc
        for key in draw(st.sampled_from(_containers(doc))):
            target = target[key]
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = draw(st.sampled_from([*keys, "code", "extra"] if isinstance(target, dict)
                                   else [*keys, len(keys)]))
        if keys and draw(st.booleans()) and key in keys:
            del target[key]
        elif isinstance(target, list) and key == len(keys):
            target.append(draw(JSONISH))
        else:
            target[key] = draw(JSONISH)
    return doc


@FIXTURE
@given(document=mutated())
def test_mutated_documents_write_nothing_or_round_trip(app, document):
    _wipe()
    import_document(ORDER_SYNC)
    before = export_document("ORDER_SYNC"), _counts()
    try:
        workflow = import_document(document, replace=True)
    except (ValidationFailed, Conflict) as error:
        db.session.rollback()
        assert error.errors if isinstance(error, ValidationFailed) else True
        for e in getattr(error, "errors", []):
            head = e.path.split(".")[0].split("[")[0]
            assert head in ("workflow", "format", "document") or head in document, e
            assert e.message
        assert (export_document("ORDER_SYNC"), _counts()) == before
    else:
        exported = export_document(workflow.code)
        import_document(json.loads(dumps(exported)), replace=True)
        assert export_document(workflow.code) == exported


@FIXTURE
@given(mutation=st.tuples(st.sampled_from(["states", "transitions"]), st.integers(0, 7),
                          st.text(max_size=12), JSONISH))
def test_mutated_documents_fail_cleanly(app, mutation):
    where, index, key, value = mutation
    doc = copy.deepcopy(ORDER_SYNC)
    rows = doc["workflow"][where]
    rows[index % len(rows)][key or "code"] = value
    before = _counts()
    try:
        workflow = import_document(doc, replace=True)
    except (ValidationFailed, Conflict):
        assert _counts() == before
    else:
        assert export_document(workflow.code)["format"] == "wfapp.workflow/v1"
    db.session.rollback()
    _wipe()
