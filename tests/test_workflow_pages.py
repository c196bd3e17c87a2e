"""The Workflows list, the Workflow Card, state and transition editors, import and export."""

from __future__ import annotations

import html
import io
import json
import re

from sqlalchemy import select

from wfapp.demo import ORDER_SYNC
from wfapp.extensions import db
from wfapp.models import Instance, Workflow
from wfapp.services.definitions import export_document
from wfapp.services.integrations import get_integration


def _errors(response) -> list[str]:
    return [html.unescape(e) for e in re.findall(
        r'class="invalid-feedback[^"]*"[^>]*>\s*([^<]+?)\s*<', response.get_data(as_text=True))]


def test_list_columns_and_counts(client, auth, demo):
    auth.login("viewer")
    page = client.get("/workflows/").get_data(as_text=True)
    for column in ("Code", "Description", "Initial State", "Active Instances"):
        assert f">{column}</th>" in page
    assert "ORDER_SYNC" in page and "Sales order to fulfilment" in page
    assert "/instances/?workflow=ORDER_SYNC" in page  # View Instances


def test_viewer_cannot_change_anything(client, auth, demo):
    auth.login("viewer")
    for url, data in [("/workflows/new", {"code": "X", "initial_state": "A"}),
                      ("/workflows/ORDER_SYNC", {"description": "x"}),
                      ("/workflows/ORDER_SYNC/delete", {}),
                      ("/workflows/ORDER_SYNC/copy", {"new_code": "C"}),
                      ("/workflows/ORDER_SYNC/states/new", {"code": "S"}),
                      ("/workflows/ORDER_SYNC/states/NEW/delete", {}),
                      ("/workflows/ORDER_SYNC/transitions/new", {"code": "T"}),
                      ("/workflows/ORDER_SYNC/transitions/SUBMIT", {"code": "T"}),
                      ("/workflows/ORDER_SYNC/transitions/SUBMIT/delete", {}),
                      ("/workflows/import", {})]:
        assert client.post(url, data=data).status_code == 403, url
    assert export_document("ORDER_SYNC") == ORDER_SYNC


def test_create_workflow_states_transitions(client, auth, users):
    auth.login("author")
    response = client.post("/workflows/new", data={"code": "inv", "description": "Invoices",
                                                   "initial_state": "open",
                                                   "initial_description": "Open"})
    assert response.headers["Location"].endswith("/workflows/INV")
    assert client.post("/workflows/INV/states/new", data={
        "code": "paid", "description": "Paid", "is_final": "y"}).status_code == 302
    assert client.post("/workflows/INV/transitions/new", data={
        "code": "pay", "from_state": "OPEN", "to_state": "PAID", "trigger_type": "on_webhook",
        "enabled": "y", "priority": "5"}).status_code == 302
    saved = client.post("/workflows/INV/transitions/PAY", data={
        "code": "PAY", "description": "Paid", "from_state": "OPEN", "to_state": "PAID",
        "trigger_type": "on_webhook", "enabled": "y", "priority": "5",
        "cfg-event_filter": "invoice.paid",
        "cond-0-field": "event.amount", "cond-0-operator": "gt", "cond-0-value": "0",
        "cond-1-field": "event.currency", "cond-1-operator": "in", "cond-1-value": "EUR, USD",
        "cond-2-field": "event.ref", "cond-2-operator": "exists", "cond-2-value": "",
        "cap-0-name": "ref", "cap-0-path": "event.ref"})
    assert saved.status_code == 302
    t = export_document("INV")["workflow"]["transitions"][0]
    assert t["trigger_config"] == {"event_filter": "invoice.paid"}
    assert t["conditions"] == [
        {"field": "event.amount", "operator": "gt", "value": 0},
        {"field": "event.currency", "operator": "in", "value": ["EUR", "USD"]},
        {"field": "event.ref", "operator": "exists"}]
    assert t["capture"] == {"ref": "event.ref"}
    card = client.get("/workflows/INV").get_data(as_text=True)
    assert "<svg" in card and "PAY" in card and "OPEN" in card


def test_rule_errors_land_on_their_fields(client, auth, demo):
    auth.login("author")
    response = client.post("/workflows/ORDER_SYNC/states/NEW/edit", data={
        "code": "NEW", "is_initial": "y", "is_final": "y", "timeout_hours": "24",
        "on_timeout_transition": "EXPIRE"})
    assert response.status_code == 422
    assert set(_errors(response)) >= {"the initial state cannot be final",
                                      "a final state has no timeout"}
    response = client.post("/workflows/ORDER_SYNC/states/PENDING/edit", data={
        "code": "PENDING", "timeout_hours": "5", "on_timeout_transition": ""})
    assert "a state with a timeout needs an On Timeout Transition" in _errors(response)
    response = client.post("/workflows/ORDER_SYNC/states/new", data={"code": "NEW"})
    assert "duplicate code 'NEW'" in _errors(response)
    response = client.post("/workflows/ORDER_SYNC/states/new", data={"code": "bad code!"})
    assert any("must be 1-20 characters" in e for e in _errors(response))
    response = client.post("/workflows/ORDER_SYNC/transitions/POLL_STATUS", data={
        "code": "POLL_STATUS", "from_state": "PENDING", "to_state": "CONFIRMED",
        "trigger_type": "on_scheduled_poll", "priority": "20",
        "cfg-url": "ftp://nowhere", "cfg-interval_minutes": "abc"})
    assert response.status_code == 422
    assert "must be a number" in _errors(response)
    response = client.post("/workflows/ORDER_SYNC/transitions/SUBMIT", data={
        "code": "SUBMIT", "from_state": "NEW", "to_state": "PENDING",
        "trigger_type": "on_import", "priority": "10",
        "cond-0-field": "total", "cond-0-operator": "gt", "cond-0-value": "1"})
    assert "must be a path starting" in response.get_data(as_text=True)
    assert export_document("ORDER_SYNC") == ORDER_SYNC  # nothing half-written


def test_delete_refusals(client, auth, demo):
    auth.login("author")
    client.post("/workflows/ORDER_SYNC/states/NEW/delete")
    client.post("/workflows/ORDER_SYNC/transitions/EXPIRE/delete")
    page = client.get("/workflows/ORDER_SYNC").get_data(as_text=True)
    assert "is the initial state" in page or "used by transitions" in page
    assert "On Timeout Transition of state(s) NEW" in page
    workflow = db.session.scalar(select(Workflow))
    db.session.add(Instance(workflow_id=workflow.id,
                            integration_id=get_integration("SHOP_ORDERS").id,
                            record_key="A", state="PENDING", active=True))
    db.session.commit()
    client.post("/workflows/ORDER_SYNC/delete")
    page = client.get("/workflows/").get_data(as_text=True)
    assert "1 active instance(s)" in page and "ORDER_SYNC" in page


def test_change_trigger_type_shows_its_fields(client, auth, demo):
    auth.login("author")
    response = client.post("/workflows/ORDER_SYNC/transitions/SUBMIT", data={
        "code": "SUBMIT", "from_state": "NEW", "to_state": "PENDING",
        "trigger_type": "on_bc_event", "priority": "10", "action": "change-type"})
    page = response.get_data(as_text=True)
    shown = page.split('id="trigger-fields"', 1)[1].split("<template", 1)[0]
    assert 'name="cfg-resource"' in shown and 'name="cfg-record_status"' not in shown
    assert export_document("ORDER_SYNC") == ORDER_SYNC


def test_copy_export_import(client, auth, demo):
    auth.login("author")
    assert client.post("/workflows/ORDER_SYNC/copy", data={"new_code": "order2"}
                       ).headers["Location"].endswith("/workflows/ORDER2")
    download = client.get("/workflows/ORDER_SYNC/export")
    assert download.headers["Content-Disposition"] == \
        'attachment; filename="ORDER_SYNC.workflow.json"'
    assert json.loads(download.data) == {**ORDER_SYNC, "version": 1}
    changed = json.loads(download.data)
    changed["workflow"]["description"] = "From file"
    upload = client.post("/workflows/import", data={
        "file": (io.BytesIO(json.dumps(changed).encode()), "ORDER_SYNC.workflow.json")},
        content_type="multipart/form-data")
    page = upload.get_data(as_text=True)
    assert "Replace workflow ORDER_SYNC?" in page and "From file" in page
    assert export_document("ORDER_SYNC") == ORDER_SYNC  # asked first, nothing written
    token = re.search(r'<textarea[^>]*name="document"[^>]*>\s*([^<]*)</textarea>', page)
    confirm = client.post("/workflows/import/confirm",
                          data={"document": html.unescape(token.group(1))})
    assert confirm.status_code == 302
    assert export_document("ORDER_SYNC")["workflow"]["description"] == "From file"
    broken = client.post("/workflows/import", data={
        "file": (io.BytesIO(b'{"format": "wfapp.workflow/v1", "workflow": {"code": "X"}}'),
                 "x.json")}, content_type="multipart/form-data")
    text = broken.get_data(as_text=True)
    assert "Nothing was saved" in text and "workflow.initial_state" in text
    fresh = dict(ORDER_SYNC, workflow=dict(ORDER_SYNC["workflow"], code="FRESH"))
    created = client.post("/workflows/import", data={
        "file": (io.BytesIO(json.dumps(fresh).encode()), "f.json")},
        content_type="multipart/form-data")
    assert created.headers["Location"].endswith("/workflows/FRESH")


def test_initial_state_dropdown_moves_the_mark(client, auth, demo):
    auth.login("author")
    client.post("/workflows/ORDER_SYNC/transitions/new", data={
        "code": "BACK", "from_state": "PENDING", "to_state": "NEW", "trigger_type": "manual",
        "enabled": "y", "priority": "0"})
    client.post("/workflows/ORDER_SYNC", data={"description": "d", "initial_state": "PENDING",
                                               "enabled": "y"})
    wf = export_document("ORDER_SYNC")["workflow"]
    assert wf["initial_state"] == "PENDING"
    assert [s["code"] for s in wf["states"] if s["is_initial"]] == ["PENDING"]
