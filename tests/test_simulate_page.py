"""The card's Lint and Scenarios panels, and the Simulate page, through the test client."""

from __future__ import annotations

import json

from wfapp.services import definitions

from .polls import parse_page
from .sim_factory import order_document

STEPS = "\n".join(json.dumps(s) for s in [
    {"event": {"trigger_type": "on_webhook", "type": "order.paid",
               "payload": {"total": 5, "number": "A-1"}}},
    {"advance_hours": 2}, {"fire": "CLOSE"}])


def _setup(document=None):
    document = document or order_document()
    definitions.import_document(document, replace=True)


def test_card_lint_panel_links_to_the_rows(app, client, auth):
    document = order_document()
    document["workflow"]["states"].append({"code": "LOST"})
    _setup(document)
    auth.login("viewer")
    page = client.get("/workflows/ORDER").get_data(as_text=True)
    parsed = parse_page(page)
    rows = parsed.tables["lint-table"][1:]
    assert rows[0][:2] == ["warning", "LOST"] and "cannot be reached" in rows[0][2]
    assert any(r[1] == "PAY" and r[3] == "ambiguous_transitions" for r in rows)
    assert 'href="#state-LOST"' in page and 'id="state-LOST"' in page
    assert 'href="#transition-PAY"' in page and 'id="transition-PAY"' in page
    assert "3 warning(s)" in parsed.ids["lint-warnings"]


def test_simulate_page_runs_and_writes_nothing(app, client, auth):
    _setup()
    auth.login("viewer")
    assert "Simulate" in client.get("/workflows/ORDER").get_data(as_text=True)
    answer = client.post("/workflows/ORDER/simulate", data={
        "record_key": "SO-9", "record_data": '{"ok": true}', "steps": STEPS})
    assert answer.status_code == 200
    parsed = parse_page(answer.get_data(as_text=True))
    rows = parsed.tables["steps-table"][1:]
    assert [(r[3], r[4]) for r in rows] == [("NEW", ""), ("PAID", "PAY"), ("LATE", "SLOW"),
                                             ("DONE", "CLOSE")]
    assert "BIG: condition event.total ge 1000 was false" in rows[1][5]
    assert parsed.ids["final-state"] == "DONE"
    assert "save-scenario-form" not in parsed.ids  # a viewer cannot save


def test_simulate_page_names_bad_lines(app, client, auth):
    _setup()
    auth.login("viewer")
    answer = client.post("/workflows/ORDER/simulate", data={
        "record_key": "", "record_data": "{", "steps": '{"fire": "X"}\nnot json\n{"jump": 1}'})
    assert answer.status_code == 422
    text = parse_page(answer.get_data(as_text=True)).ids["scenario-errors"]
    assert "record.data" in text and "steps[1]: line 2 is not valid JSON" in text
    answer = client.post("/workflows/ORDER/simulate", data={
        "record_key": "K", "record_data": "{}", "steps": '{"fire": "X"}\n\n{"jump": 1}'})
    assert "steps[1]: must be an object with exactly one of" in \
        parse_page(answer.get_data(as_text=True)).ids["scenario-errors"]


def test_save_a_scenario_then_break_it(app, client, auth):
    _setup()
    auth.login("author")
    saved = client.post("/workflows/ORDER/scenarios", data={
        "name": "closes", "record_key": "SO-9", "record_data": '{"ok": true}',
        "steps": STEPS})
    assert saved.status_code == 302
    card = parse_page(client.get("/workflows/ORDER").get_data(as_text=True))
    assert card.tables["scenarios-table"][1][:4] == ["closes", "3", "pass", "DONE"]
    assert definitions.export_document("ORDER")["scenarios"][0]["expect"] == {
        "state": "DONE", "vars": {"order_no": "A-1"}}
    opened = client.get("/workflows/ORDER/simulate?scenario=closes").get_data(as_text=True)
    assert "advance_hours" in opened and "SO-9" in opened
    # Make CLOSE lead elsewhere: the saved scenario now fails, on the card and in the flash.
    answer = client.post("/workflows/ORDER/transitions/CLOSE", data={
        "code": "CLOSE", "description": "", "from_state": "LATE", "to_state": "FAILED",
        "trigger_type": "manual", "enabled": "y", "priority": "0"}, follow_redirects=True)
    text = answer.get_data(as_text=True)
    assert "1 of 1 saved scenario(s) failing" in text, text[:3000]
    card = parse_page(client.get("/workflows/ORDER").get_data(as_text=True))
    assert card.tables["scenarios-table"][1][2].startswith("fail ends in FAILED, expected DONE")
    deleted = client.post("/workflows/ORDER/scenarios/delete", data={"name": "closes"})
    assert deleted.status_code == 302
    assert "scenarios" not in definitions.export_document("ORDER")


def test_saving_needs_a_name_and_a_runnable_scenario(app, client, auth):
    _setup()
    auth.login("author")
    answer = client.post("/workflows/ORDER/scenarios", data={
        "name": "", "record_key": "K", "record_data": "{}", "steps": STEPS})
    assert answer.status_code == 422
    answer = client.post("/workflows/ORDER/scenarios", data={
        "name": "x", "record_key": "K", "record_data": "{}", "steps": '{"advance_hours": 0}'})
    assert answer.status_code == 422
    assert "steps[0].advance_hours" in answer.get_data(as_text=True)
    assert "scenarios" not in definitions.export_document("ORDER")
