"""Lint and the simulator through the API and the CLI; saved scenarios in the document."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import AuditEntry, HistoryEntry, Instance
from wfapp.services import definitions

from .sim_factory import order_document

API = "/api/v1"
SCENARIO = {"record": {"key": "SO-1", "data": {"ok": True}}, "steps": [
    {"event": {"trigger_type": "on_webhook", "type": "order.paid",
               "payload": {"total": 5, "number": "A-1"}}},
    {"advance_hours": 2.5}, {"fire": "CLOSE"}]}


def _import(document):
    definitions.import_document(document, replace=True)


def test_lint_endpoint_lists_warnings_with_paths(app, client, tokens):
    document = order_document()
    document["workflow"]["states"].append({"code": "LOST"})
    _import(document)
    answer = client.get(f"{API}/workflows/order/lint", headers=tokens["viewer"])
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["errors"] == []
    assert {"code": "unreachable_state", "path": "workflow.states[6]"}.items() <= \
        next(w for w in body["warnings"] if w["code"] == "unreachable_state").items()
    ambiguous = [w for w in body["warnings"] if w["code"] == "ambiguous_transitions"]
    assert ambiguous and "BIG fires" in ambiguous[0]["message"]
    assert client.get(f"{API}/workflows/NOPE/lint", headers=tokens["viewer"]).status_code == 404


def test_simulate_answers_each_step_and_writes_nothing(app, client, tokens):
    _import(order_document())
    instances = db.session.scalar(select(func.count()).select_from(Instance))
    history = db.session.scalar(select(func.count()).select_from(HistoryEntry))
    audits = db.session.scalar(select(func.count()).select_from(AuditEntry))
    answer = client.post(f"{API}/workflows/ORDER/simulate", json=SCENARIO,
                         headers=tokens["viewer"])
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert [(s["state"], s["fired"]) for s in body["steps"]] == [
        ("PAID", "PAY"), ("LATE", "SLOW"), ("DONE", "CLOSE")]
    assert body["steps"][0]["vars"] == {"order_no": "A-1"}
    assert {w["transition"] for w in body["steps"][0]["why_not"]} == {"BIG"}
    assert body["final"] == {"state": "DONE", "vars": {"order_no": "A-1"}, "is_final": True}
    assert db.session.scalar(select(func.count()).select_from(Instance)) == instances
    assert db.session.scalar(select(func.count()).select_from(HistoryEntry)) == history
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)) == audits


def test_simulate_names_the_fields_of_a_bad_scenario(app, client, tokens):
    _import(order_document())
    answer = client.post(f"{API}/workflows/ORDER/simulate", headers=tokens["viewer"], json={
        "steps": [{"event": {"trigger_type": "on_nothing"}}, {"advance_hours": "soon"}],
        "version": 3})
    assert answer.status_code == 422
    places = [d["path"] for d in answer.get_json()["error"]["details"]]
    assert places == ["steps[0].event.trigger_type", "steps[1].advance_hours", "version"]
    for body in ([], {"steps": "x"}, {"steps": [{}]}, {"steps": [None]}):
        bad = client.post(f"{API}/workflows/ORDER/simulate", json=body,
                          headers=tokens["viewer"])
        assert bad.status_code == 422, body


def test_scenarios_travel_with_the_document_and_older_files_import(app, client, tokens):
    document = order_document()
    document["scenarios"] = [{"name": "pays and closes", **SCENARIO,
                              "expect": {"state": "DONE", "vars": {"order_no": "A-1"}}}]
    answer = client.post(f"{API}/workflows/import", json=document, headers=tokens["author"])
    assert answer.status_code == 201, answer.get_json()
    exported = client.get(f"{API}/workflows/ORDER/export", headers=tokens["viewer"]).get_json()
    assert exported["scenarios"] == document["scenarios"]
    older = order_document()  # no scenarios key: keeps the saved ones
    client.post(f"{API}/workflows/import?replace=true", json=older, headers=tokens["author"])
    assert definitions.export_document("ORDER")["scenarios"] == document["scenarios"]
    broken = order_document()
    broken["scenarios"] = [{"name": "x", "steps": [{"jump": 1}]}]
    refused = client.post(f"{API}/workflows/import?replace=true", json=broken,
                          headers=tokens["author"])
    assert refused.status_code == 422
    assert {d["path"] for d in refused.get_json()["error"]["details"]} == {
        "scenarios[0].steps[0]", "scenarios[0].expect"}


def _write(tmp_path, document):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_wf_lint_exit_status(runner, tmp_path):
    document = order_document()
    clean = runner.invoke(args=["wf", "lint", _write(tmp_path, document)])
    assert clean.exit_code == 0, clean.output
    assert "warning: workflow.transitions[1]:" in clean.output  # PAY after BIG: ambiguous
    document["workflow"]["transitions"][0]["to_state"] = "NOWHERE"
    broken = runner.invoke(args=["wf", "lint", _write(tmp_path, document)])
    assert broken.exit_code == 1
    assert "error: workflow.transitions[0].to_state: state 'NOWHERE' does not exist" in \
        broken.output
    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    assert runner.invoke(args=["wf", "lint", str(not_json)]).exit_code == 1
    schema = runner.invoke(args=["wf", "lint", _write(tmp_path, {"format": "other"})])
    assert schema.exit_code == 1 and "[schema]" in schema.output


def test_wf_test_runs_saved_scenarios(runner, tmp_path):
    document = order_document()
    document["scenarios"] = [
        {"name": "closes", **SCENARIO, "expect": {"state": "DONE"}},
        {"name": "expects too much", **SCENARIO, "expect": {"vars": {"order_no": "B"}}}]
    result = runner.invoke(args=["wf", "test", _write(tmp_path, document)])
    assert result.exit_code == 1
    assert "PASS closes: ends in DONE" in result.output
    assert "FAIL expects too much" in result.output and "'A-1', expected 'B'" in result.output
    document["scenarios"].pop()
    assert runner.invoke(args=["wf", "test", _write(tmp_path, document)]).exit_code == 0
