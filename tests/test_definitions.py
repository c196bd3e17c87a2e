"""Import and export (wfapp.workflow/v1): round trips, and invalid documents write nothing."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.strategies import workflows
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

FIXTURE = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])


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
