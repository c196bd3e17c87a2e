"""Workflow pages in depth: each rule's message on its field, typed trigger fields, conditions
and captures, type changes, copy/import refusals, the diagram, and the viewer's read-only view."""

from __future__ import annotations

import html
import io
import json
import re
from typing import Any

import pytest
from sqlalchemy import select

from wfapp.demo import ORDER_SYNC
from wfapp.extensions import db
from wfapp.models import Instance, Workflow
from wfapp.services.definitions import dumps, export_document, export_version
from wfapp.services.integrations import get_integration


def _field_errors(page: str, name: str) -> list[str]:
    """Messages shown under the input called `name` (rendered by Bootstrap-Flask)."""
    match = re.search(rf'<(?:input|select|textarea)[^>]*name="{re.escape(name)}"[^>]*>(.*?)'
                      r'(?=<(?:input|select|textarea|label|fieldset|/form)\b)', page, re.S)
    assert match, f"no field {name}"
    return [html.unescape(m.strip()) for m in re.findall(
        r'class="invalid-feedback[^"]*"[^>]*>\s*([^<]+?)\s*<', match.group(1))]


def _add_instance(state: str, active: bool = True, data: dict[str, Any] | None = None) -> None:
    workflow = db.session.scalar(select(Workflow).where(Workflow.code == "ORDER_SYNC"))
    db.session.add(Instance(workflow_id=workflow.id,
                            integration_id=get_integration("SHOP_ORDERS").id,
                            record_key=f"K-{state}", state=state, active=active,
                            data=data or {}))
    db.session.commit()


def _transition(code: str) -> dict[str, Any]:
    return next(t for t in export_document("ORDER_SYNC")["workflow"]["transitions"]
                if t["code"] == code)


def _post_transition(client, tcode: str, **extra: str):
    t = _transition(tcode)
    data = {"code": t["code"], "description": t["description"], "from_state": t["from_state"],
            "to_state": t["to_state"], "trigger_type": t["trigger_type"],
            "priority": str(t["priority"]), "enabled": "y", **extra}
    return client.post(f"/workflows/ORDER_SYNC/transitions/{tcode}", data=data)


@pytest.mark.parametrize("method,url", [
    ("get", "/workflows/new"), ("get", "/workflows/import"),
    ("get", "/workflows/ORDER_SYNC/states/new"), ("get", "/workflows/ORDER_SYNC/states/NEW/edit"),
    ("get", "/workflows/ORDER_SYNC/transitions/new"), ("post", "/workflows/import/confirm"),
])
def test_viewer_refused_on_every_editor(client, auth, demo, method, url):
    auth.login("viewer")
    assert getattr(client, method)(url).status_code == 403


def test_viewer_sees_no_working_edit_buttons(client, auth, demo):
    auth.login("viewer")
    listing = client.get("/workflows/").get_data(as_text=True)
    assert 'href="/workflows/new"' not in listing and "Needs the author role" in listing
    card = client.get("/workflows/ORDER_SYNC").get_data(as_text=True)
    assert "/workflows/ORDER_SYNC/states/new" not in card
    assert "/workflows/ORDER_SYNC/transitions/new" not in card
    assert 'data-requires-selection="deleteUrl"' not in card
    assert "/workflows/ORDER_SYNC/copy" not in card
    detail = client.get("/workflows/ORDER_SYNC/transitions/SUBMIT").get_data(as_text=True)
    assert "<fieldset disabled>" in detail and ">Save</button>" not in detail
    assert client.get("/workflows/ORDER_SYNC/export").status_code == 200  # reading is fine


def test_list_badge_and_active_count(client, auth, demo):
    _add_instance("PENDING")
    _add_instance("CONFIRMED", active=False)
    auth.login("author")
    page = client.get("/workflows/").get_data(as_text=True)
    assert ">Enabled</span>" in page
    assert 'href="/instances/?workflow=ORDER_SYNC&amp;active=yes"' in page
    assert re.search(r'title="Open the active instances">1</a>', page)


def test_new_workflow_errors_on_fields(client, auth, demo):
    auth.login("author")
    response = client.post("/workflows/new", data={"code": "order_sync", "initial_state": "NEW"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert _field_errors(page, "code") == ["workflow 'ORDER_SYNC' already exists"]
    assert "Nothing was saved" in page
    response = client.post("/workflows/new", data={"code": "OK", "initial_state": "bad state"})
    assert any("must be 1-20 characters" in e
               for e in _field_errors(response.get_data(as_text=True), "initial_state"))
    assert db.session.scalar(select(Workflow).where(Workflow.code == "OK")) is None


def test_state_timeout_rules_and_decimal_hours(client, auth, demo):
    auth.login("author")
    page = client.get("/workflows/ORDER_SYNC/states/PENDING/edit").get_data(as_text=True)
    select_html = page.split('name="on_timeout_transition"')[1].split("</select>")[0]
    options = re.findall(r'<option[^>]*value="([^"]*)"', select_html)
    assert options == ["", "CONFIRM", "POLL_STATUS", "EXPORT_FAILED", "BC_DELETED", "GIVE_UP"]
    response = client.post("/workflows/ORDER_SYNC/states/PENDING/edit", data={
        "code": "PENDING", "timeout_hours": "2", "on_timeout_transition": "EXPIRE"})
    assert _field_errors(response.get_data(as_text=True), "on_timeout_transition") == [
        "transition 'EXPIRE' leaves 'NEW', not 'PENDING'"]
    response = client.post("/workflows/ORDER_SYNC/states/PENDING/edit", data={
        "code": "PENDING", "timeout_hours": "0", "on_timeout_transition": "GIVE_UP"})
    assert _field_errors(response.get_data(as_text=True), "timeout_hours") == [
        "timeout must be a number of hours greater than 0"]
    response = client.post("/workflows/ORDER_SYNC/states/PENDING/edit", data={
        "code": "PENDING", "timeout_hours": "soon", "on_timeout_transition": "GIVE_UP"})
    assert _field_errors(response.get_data(as_text=True), "timeout_hours") == ["must be a number"]
    response = client.post("/workflows/ORDER_SYNC/states/CONFIRMED/edit", data={
        "code": "CONFIRMED", "is_final": "y", "timeout_hours": "1"})
    assert "a final state has no timeout" in _field_errors(response.get_data(as_text=True),
                                                           "timeout_hours")
    assert export_document("ORDER_SYNC") == ORDER_SYNC
    assert client.post("/workflows/ORDER_SYNC/states/PENDING/edit", data={
        "code": "PENDING", "description": "Waiting", "timeout_hours": "0.5",
        "on_timeout_transition": "GIVE_UP"}).status_code == 302
    state = export_document("ORDER_SYNC")["workflow"]["states"][1]
    assert (state["timeout_hours"], state["description"]) == (0.5, "Waiting")
    new_page = client.get("/workflows/ORDER_SYNC/states/new").get_data(as_text=True)
    assert re.findall(r'<option[^>]*value="([^"]*)"', new_page) == [""]


def test_states_in_use_are_not_renamed_or_deleted_without_a_word(client, auth, demo):
    _add_instance("FAILED", active=False)
    auth.login("author")
    response = client.post("/workflows/ORDER_SYNC/states/FAILED/edit", data={
        "code": "BROKEN", "is_final": "y"})
    assert response.status_code == 409
    assert _field_errors(response.get_data(as_text=True), "code") == [
        "state 'FAILED' has 1 instance(s) (1 on version 1, which edits of the latest version "
        "affect); rename it anyway and migrate them, or move them out of it first"]
    assert 'id="keep-instances"' in response.get_data(as_text=True)
    client.post("/workflows/ORDER_SYNC/transitions/REJECT/delete")
    flashed = client.get("/workflows/ORDER_SYNC").get_data(as_text=True)
    assert "Transition REJECT deleted." in flashed
    client.post("/workflows/ORDER_SYNC/states/FAILED/delete")
    page = html.unescape(client.get("/workflows/ORDER_SYNC").get_data(as_text=True))
    assert "State FAILED not deleted: state 'FAILED' is used by transitions" in page
    assert "workflow.states[" not in page  # a sentence for people, not a path


def test_new_transition_shows_required_trigger_fields(client, auth, demo):
    auth.login("author")
    form = {"code": "poll2", "from_state": "PENDING", "to_state": "CONFIRMED",
            "trigger_type": "on_scheduled_poll", "fields-for": "on_scheduled_poll",
            "priority": "5", "enabled": "y", "cfg-method": "GET", "cfg-interval_minutes": "5"}
    response = client.post("/workflows/ORDER_SYNC/transitions/new", data=form)
    assert response.status_code == 422
    assert _field_errors(response.get_data(as_text=True), "cfg-url") == ["is required"]
    assert "POLL2" not in [t["code"] for t in export_document("ORDER_SYNC")["workflow"]
                           ["transitions"]]
    response = client.post("/workflows/ORDER_SYNC/transitions/new",
                           data={**form, "cfg-url": "https://f.example/{record_key}",
                                 "cfg-interval_minutes": "0.5"})
    assert response.headers["Location"].endswith("/workflows/ORDER_SYNC/transitions/POLL2")
    assert _transition("POLL2")["trigger_config"] == {
        "url": "https://f.example/{record_key}", "method": "GET", "interval_minutes": 0.5}


def test_new_transition_type_change_without_scripts(client, auth, demo):
    auth.login("author")
    response = client.post("/workflows/ORDER_SYNC/transitions/new", data={
        "code": "X", "from_state": "NEW", "to_state": "PENDING", "trigger_type": "on_export",
        "fields-for": "on_import", "cfg-record_status": "error"})
    assert response.status_code == 200
    shown = response.get_data(as_text=True).split('id="trigger-fields"')[1].split("<template")[0]
    assert re.search(r'<option selected value="error">|<option value="error" selected', shown)
    assert "X" not in [t["code"] for t in export_document("ORDER_SYNC")["workflow"]["transitions"]]


def test_trigger_fields_are_typed(client, auth, demo):
    auth.login("author")
    response = _post_transition(client, "POLL_STATUS", **{
        "cfg-url": "https://f.example/{record_key}", "cfg-method": "POST",
        "cfg-headers": "{not json", "cfg-interval_minutes": "x"})
    page = response.get_data(as_text=True)
    assert _field_errors(page, "cfg-headers")[0].startswith("is not valid JSON")
    assert _field_errors(page, "cfg-interval_minutes") == ["must be a number"]
    assert _post_transition(client, "POLL_STATUS", **{
        "cfg-url": "https://f.example/{record_key}", "cfg-method": "POST",
        "cfg-headers": '{"X-Key": "k"}', "cfg-interval_minutes": "15",
        "cfg-response_path": "", "cfg-expected_value": "  "}).status_code == 302
    assert _transition("POLL_STATUS")["trigger_config"] == {
        "url": "https://f.example/{record_key}", "method": "POST", "headers": {"X-Key": "k"},
        "interval_minutes": 15}
    client.post("/workflows/ORDER_SYNC/transitions/BC_DELETED", data={
        "code": "BC_DELETED", "from_state": "PENDING", "to_state": "FAILED",
        "trigger_type": "on_bc_event", "priority": "40", "cfg-resource": "salesOrders",
        "cfg-change_types": ["deleted", "updated"]})
    assert _transition("BC_DELETED")["trigger_config"] == {
        "resource": "salesOrders", "change_types": ["deleted", "updated"]}
    response = _post_transition(client, "BC_DELETED", **{"cfg-resource": "sales orders!"})
    assert _field_errors(response.get_data(as_text=True), "cfg-resource") == [
        "must be an API entity set name such as salesOrders"]
    _post_transition(client, "EXPIRE", **{"cfg-button_label": "Expire"})
    assert _transition("EXPIRE")["trigger_config"] == {"button_label": "Expire", "confirm": False}


def test_conditions_captures_and_their_errors(client, auth, demo):
    auth.login("author")
    response = _post_transition(client, "CONFIRM", **{
        "cfg-event_filter": "order.confirmed",
        "cond-0-field": "event.ok", "cond-0-operator": "eq", "cond-0-value": "true",
        "cond-1-field": "total", "cond-1-operator": "gt", "cond-1-value": "1",
        "cond-2-field": "event.code", "cond-2-operator": "matches", "cond-2-value": "(",
        "cap-0-name": "1bad", "cap-0-path": "event.x"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert _field_errors(page, "cond-0-field") == []
    assert "must be a path starting with event." in _field_errors(page, "cond-1-field")[0]
    assert _field_errors(page, "cond-2-value")[0].startswith("invalid regular expression")
    assert _field_errors(page, "cap-0-name") == [
        "variable name must be a letter or _ then letters, digits, _"]
    assert 'value="1bad"' in page and 'value="event.ok"' in page  # what was typed stays
    assert _transition("CONFIRM") == ORDER_SYNC["workflow"]["transitions"][3]
    rows = {
        "cfg-event_filter": "order.confirmed",
        "conditions-0-field": "event.n", "conditions-0-operator": "ge",
        "conditions-0-value": "5",
        "conditions-1-field": "event.tags", "conditions-1-operator": "in",
        "conditions-1-value": '["a", "b"]',
        "conditions-2-field": "event.s", "conditions-2-operator": "eq",
        "conditions-2-value": "shipped",
        "conditions-3-field": "instance.vars.trk", "conditions-3-operator": "not_exists",
        "conditions-3-value": "5",
        "cap-0-name": "trk", "cap-0-path": "event.data.tracking"}
    # A value typed for an operator that takes none is an error, not silently dropped.
    refused = _post_transition(client, "CONFIRM", **rows)
    assert refused.status_code == 422
    assert "operator not_exists takes no value" in refused.get_data(as_text=True)
    rows["conditions-3-value"] = ""
    assert _post_transition(client, "CONFIRM", **rows).status_code == 302
    saved = _transition("CONFIRM")
    assert saved["conditions"] == [
        {"field": "event.n", "operator": "ge", "value": 5},
        {"field": "event.tags", "operator": "in", "value": ["a", "b"]},
        {"field": "event.s", "operator": "eq", "value": "shipped"},
        {"field": "instance.vars.trk", "operator": "not_exists"}]
    assert saved["capture"] == {"trk": "event.data.tracking"}
    page = client.get("/workflows/ORDER_SYNC/transitions/CONFIRM").get_data(as_text=True)
    assert '<option value="instance.vars.trk">' in page  # captured names are offered


def test_record_fields_are_suggested(client, auth, demo):
    _add_instance("NEW", data={"customer": "ACME", "total": 5})
    auth.login("author")
    page = client.get("/workflows/ORDER_SYNC/transitions/SUBMIT").get_data(as_text=True)
    assert '<option value="record.customer">' in page


def test_renaming_a_transition_follows_through(client, auth, demo):
    auth.login("author")
    response = _post_transition(client, "EXPIRE", code="expire_now",
                                **{"cfg-button_label": "Expire now", "cfg-confirm": "y"})
    assert response.headers["Location"].endswith("/transitions/EXPIRE_NOW")
    states = export_document("ORDER_SYNC")["workflow"]["states"]
    assert states[0]["on_timeout_transition"] == "EXPIRE_NOW"
    assert client.get("/workflows/ORDER_SYNC/transitions/EXPIRE").status_code == 302


def test_copy_refusals_on_the_field(client, auth, demo):
    auth.login("author")
    response = client.post("/workflows/ORDER_SYNC/copy", data={"new_code": "order_sync"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "already exists" in " ".join(_field_errors(page, "new_code"))
    assert 'id="copy-panel"' in page and "collapse mb-3 show" in page
    response = client.post("/workflows/ORDER_SYNC/copy", data={"new_code": "no spaces"})
    assert "must be 1-20 characters" in " ".join(
        _field_errors(response.get_data(as_text=True), "new_code"))
    assert client.post("/workflows/ORDER_SYNC/copy", data={"new_code": "copy_1"}).status_code \
        == 302
    copied = export_document("COPY_1")
    assert copied["workflow"] == dict(ORDER_SYNC["workflow"], code="COPY_1")


def test_export_content_is_the_export_document(client, auth, demo):
    auth.login("viewer")
    response = client.get("/workflows/order_sync/export")
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == \
        'attachment; filename="ORDER_SYNC.workflow.json"'
    assert response.get_data(as_text=True) == dumps(export_version("ORDER_SYNC"))
    assert json.loads(response.get_data(as_text=True))["version"] == 1


def _upload(client, content: bytes, name: str = "wf.workflow.json"):
    return client.post("/workflows/import", data={"file": (io.BytesIO(content), name)},
                       content_type="multipart/form-data")


def test_import_invalid_files_write_nothing(client, auth, demo):
    auth.login("author")
    duplicate = json.loads(json.dumps(ORDER_SYNC))
    duplicate["workflow"]["code"] = "DUP"
    duplicate["workflow"]["states"][2]["code"] = "NEW"
    page = html.unescape(_upload(client, json.dumps(duplicate).encode()).get_data(as_text=True))
    assert "workflow.states[2].code</code>: duplicate code 'NEW'" in page
    assert "Nothing was saved" in page
    page = _upload(client, b"{oops").get_data(as_text=True)
    assert "is not valid JSON" in page and "line 1" in page
    assert "Upload a .json file." in _upload(client, b"{}", "wf.txt").get_data(as_text=True)
    codes = list(db.session.scalars(select(Workflow.code)))
    assert codes == ["ORDER_SYNC"]


def test_import_confirm_validates_the_document_again(client, auth, demo):
    auth.login("author")
    changed = json.loads(json.dumps(ORDER_SYNC))
    changed["workflow"]["states"].append({"code": "ON_HOLD", "description": "Held"})
    page = _upload(client, json.dumps(changed).encode()).get_data(as_text=True)
    assert "state ON_HOLD added" in page and "Nothing has been written yet" in page
    tampered = json.loads(json.dumps(changed))
    tampered["workflow"]["initial_state"] = "NOPE"
    response = client.post("/workflows/import/confirm", data={"document": json.dumps(tampered)})
    assert response.status_code == 422
    assert "initial state 'NOPE' is not a state of this workflow" in \
        html.unescape(response.get_data(as_text=True))
    assert export_document("ORDER_SYNC") == ORDER_SYNC
    _add_instance("EXPIRED", active=False)
    gone = json.loads(json.dumps(ORDER_SYNC))
    gone["workflow"]["states"] = gone["workflow"]["states"][:4]
    gone["workflow"]["transitions"] = [t for t in gone["workflow"]["transitions"]
                                       if t["to_state"] != "EXPIRED"]
    gone["workflow"]["states"][0].update(timeout_hours=None, on_timeout_transition=None)
    # The instance in the removed state stays on version 1; the new definition is version 2.
    response = client.post("/workflows/import/confirm", data={"document": json.dumps(gone)})
    assert response.status_code == 302
    assert export_version("ORDER_SYNC", 1) == {**ORDER_SYNC, "version": 1}
    assert export_version("ORDER_SYNC")["version"] == 2


def test_delete_workflow_without_active_instances(client, auth, demo):
    _add_instance("CONFIRMED", active=False)
    auth.login("author")
    response = client.post("/workflows/ORDER_SYNC/delete", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "Workflow ORDER_SYNC deleted. Detached from integration(s) SHOP_ORDERS." in page
    assert db.session.scalar(select(Workflow)) is None


def test_diagram_marks_initial_final_and_groups_arrows(client, auth, demo):
    auth.login("viewer")
    page = client.get("/workflows/ORDER_SYNC").get_data(as_text=True)
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert "<script" not in svg and "http://" not in svg.replace("http://www.w3.org", "")
    assert svg.count('class="state"') == 5 and "<circle" in svg  # the initial state's entry
    assert svg.count('rx="6" fill="none"') == 3  # double border of the three final states
    arrow = re.search(r'data-from="PENDING" data-to="FAILED">(.*?)</g>', svg).group(1)
    assert all(code in arrow for code in ("EXPORT_FAILED", "BC_DELETED", "GIVE_UP"))
    assert "POLL_STATUS (off)" in svg  # a disabled transition says so
