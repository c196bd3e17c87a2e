"""The why-not explainer names exactly the transition the worker fires, or none when none fires."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.strategies import CONFIGS, DB_PROFILE, workflows
from wfapp.engine import (
    build_context,
    compile_workflow,
    event_view,
    explain,
    select_transition,
)
from wfapp.extensions import db
from wfapp.models import Event, HistoryEntry, utcnow
from wfapp.services.definitions import import_document
from wfapp.services.events import NewEvent, ingest
from wfapp.services.firing import compiled_workflow, create_instance
from wfapp.services.instances import get_instance, reset_instance, why_not
from wfapp.services.integrations import create_integration
from wfapp.services.processing import process_pending
from wfapp.services.registry import get_registry

SCALARS = st.one_of(st.integers(-5, 5), st.sampled_from(["paid", "SO-12", "abc", ""]),
                    st.none())
PAYLOADS = st.fixed_dictionaries({}, optional={
    "total": SCALARS, "number": SCALARS, "status": st.sampled_from(["success", "error"]),
    "data": st.fixed_dictionaries({}, optional={"status": SCALARS, "tracking": SCALARS})})
RECORDS = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "country": st.sampled_from(["NL", "DE"]), "total": SCALARS,
    "lines": st.lists(st.fixed_dictionaries({"qty": st.integers(0, 3)}), max_size=2)}))
TYPES = st.sampled_from(["order.paid", "order.shipped", "other", ""])


@settings(DB_PROFILE, max_examples=300)
@given(doc=workflows(), data=st.data())
def test_explainer_and_worker_decide_alike(app, doc, data):
    workflow = compile_workflow(doc["workflow"])
    state = data.draw(st.sampled_from(sorted(workflow.states)))
    source = data.draw(st.sampled_from(sorted(CONFIGS)))
    payload = data.draw(PAYLOADS)
    record = data.draw(RECORDS)
    instance = {"state": state, "record_key": "K", "run_id": None,
                "vars": data.draw(st.fixed_dictionaries({}, optional={"order_no": SCALARS}))}
    view = event_view(source, data.draw(TYPES), payload, "K", record, payload.get("status"))
    context = build_context(payload, record if record is not None else {"total": 1}, instance)
    trigger_types = get_registry().trigger_types
    verdicts = explain(workflow, state, source, view, context, trigger_types)
    firing = [v.code for v in verdicts if v.fires]
    decided = (select_transition(workflow, state, source, view, context, trigger_types)
               .transition if workflow.enabled else None)
    assert firing == ([decided.code] if decided is not None else [])
    # "fires" is said of the fired transition only; every other one gets a reason.
    assert all((v.reason == "fires") == v.fires for v in verdicts)


_serial = itertools.count(1)


@settings(DB_PROFILE, max_examples=max(40, DB_PROFILE.max_examples))
@given(doc=workflows(), data=st.data())
def test_why_not_names_what_the_worker_fires(app, doc, data):
    n = next(_serial)
    doc["workflow"]["code"] = f"PROP{n}"
    for t in doc["workflow"]["transitions"]:
        if data.draw(st.booleans()):  # plenty of webhook transitions, so some of them fire
            t["trigger_type"], t["trigger_config"] = "on_webhook", data.draw(
                CONFIGS["on_webhook"])
    import_document(doc)
    integration = create_integration({"code": f"PI{n}", "workflow_code": f"PROP{n}"})
    workflow = compiled_workflow(integration.workflow_id)
    row = create_instance(db.session.connection(), integration.workflow_id, workflow,
                          integration.id, "K", None, {"total": 1}, "test", "test", utcnow())
    db.session.commit()
    state = data.draw(st.sampled_from(sorted(workflow.states)))
    reset_instance(row.id, state, "property test", "test")
    payload, event_type = data.draw(PAYLOADS), data.draw(TYPES)
    _, verdicts = why_not(get_instance(row.id), payload, "on_webhook", event_type)
    named = [v.code for v in verdicts if v.fires]
    ingest(integration, [NewEvent("on_webhook", event_type, "K", None, payload)], kick=False)
    process_pending(time_budget=30)
    event = db.session.scalars(select(Event).where(Event.integration_id == integration.id,
                                                   Event.source == "on_webhook")).one()
    fired = db.session.scalars(select(HistoryEntry.transition).where(
        HistoryEntry.event_id == event.id, HistoryEntry.transition.is_not(None))).all()
    assert named == list(fired), event.result
