"""Workflow versions and migrations: instances follow their version; migrations move them."""

from __future__ import annotations

import copy
import html
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from wfapp.extensions import db
from wfapp.models import (
    AuditEntry,
    BulkOperation,
    HistoryEntry,
    Instance,
    Workflow,
    WorkflowMigration,
    WorkflowVersion,
    utcnow,
)
from wfapp.queue import get_queue
from wfapp.services import versions
from wfapp.services.checks import save_scenario
from wfapp.services.definitions import export_version, get_workflow, import_document
from wfapp.services.errors import Conflict, ValidationFailed
from wfapp.services.instances import fire_manual
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.migrations import plan_migration, start_migration
from wfapp.services.runs import start_run
from wfapp.services.timeouts import fire_due_timeouts
from wfapp.services.workflows import delete_version as delete_version_service
from wfapp.services.workflows import pin_version, save_state, set_enabled

API = "/api/v1"

PARCEL = {"format": "wfapp.workflow/v1", "workflow": {
    "code": "PARCEL", "description": "Parcels", "initial_state": "NEW", "enabled": True,
    "states": [
        {"code": "NEW", "description": "New", "is_initial": True, "is_final": False,
         "timeout_hours": 24, "on_timeout_transition": "EXPIRE"},
        {"code": "PACKED", "description": "Packed", "is_initial": False, "is_final": False,
         "timeout_hours": None, "on_timeout_transition": None},
        {"code": "SENT", "description": "Sent", "is_initial": False, "is_final": True,
         "timeout_hours": None, "on_timeout_transition": None},
        {"code": "EXPIRED", "description": "Expired", "is_initial": False, "is_final": True,
         "timeout_hours": None, "on_timeout_transition": None}],
    "transitions": [
        {"code": "PACK", "description": "Pack", "from_state": "NEW", "to_state": "PACKED",
         "trigger_type": "manual", "enabled": True, "priority": 0, "trigger_config": {},
         "conditions": [], "capture": {}},
        {"code": "SEND", "description": "Send", "from_state": "PACKED", "to_state": "SENT",
         "trigger_type": "manual", "enabled": True, "priority": 0, "trigger_config": {},
         "conditions": [], "capture": {}},
        {"code": "EXPIRE", "description": "Expire", "from_state": "NEW", "to_state": "EXPIRED",
         "trigger_type": "manual", "enabled": True, "priority": 0, "trigger_config": {},
         "conditions": [], "capture": {}}]}}


@pytest.fixture
def parcel(app):
    """The PARCEL workflow (version 1) attached to a per-record integration PARCELS."""
    document = copy.deepcopy(PARCEL)
    import_document(document)
    create_integration({"code": "PARCELS", "description": "Parcels", "workflow_code": "PARCEL",
                        "instance_mode": "per_record", "enabled": True})
    return document


def _start(*keys: str) -> None:
    start_run(get_integration("PARCELS"), "import",
              [{"key": k, "data": {"n": k}} for k in keys], "tester")
    get_queue().drain()


def _instance(key: str) -> Instance:
    return db.session.scalar(select(Instance).where(Instance.record_key == key)
                             .execution_options(populate_existing=True))


def _history(instance: Instance) -> list[HistoryEntry]:
    return list(db.session.scalars(select(HistoryEntry).where(
        HistoryEntry.instance_id == instance.id).order_by(HistoryEntry.id)))


def _renamed() -> dict:
    """PARCEL with its state PACKED renamed READY."""
    document = json.loads(json.dumps(PARCEL).replace('"PACKED"', '"READY"'))
    document["workflow"]["states"][1]["description"] = "Ready"
    return document


def _v2_without_packed() -> None:
    """Version 2: PACKED is renamed READY (an import replacing the definition)."""
    import_document(_renamed(), replace=True)


def test_saves_make_versions_only_when_the_document_changed(app, parcel):
    workflow = get_workflow("PARCEL")
    assert workflow.latest_version == 1
    import_document(copy.deepcopy(parcel), replace=True)  # identical: no version
    set_enabled("PARCEL", False)  # the live switch is no version either
    assert get_workflow("PARCEL").latest_version == 1
    set_enabled("PARCEL", True, "Parcels to customers")
    rows = versions.list_versions(get_workflow("PARCEL"))
    assert [(r.number, r.labels) for r in rows] == [
        (2, ["latest", "new instances"]), (1, [])]
    assert rows[0].summary == "description: 'Parcels' → 'Parcels to customers'"
    assert rows[0].created_by.startswith("cli") and rows[1].summary.startswith("created with")
    assert export_version("PARCEL", 1)["workflow"]["description"] == "Parcels"
    assert export_version("PARCEL")["version"] == 2
    audit = db.session.scalars(select(AuditEntry).where(AuditEntry.object_key == "PARCEL")
                               .order_by(AuditEntry.id)).all()
    assert audit[-1].details["version"] == 2


def test_old_instances_stay_on_their_version_and_new_ones_start_on_the_latest(app, parcel):
    _start("A")
    _v2_without_packed()
    _start("B")
    a, b = _instance("A"), _instance("B")
    assert (a.workflow_version, b.workflow_version) == (1, 2)
    # A follows version 1: PACK still leads to PACKED there; B's PACK leads to READY.
    assert fire_manual(a.id, "PACK", "", "tester").state == "PACKED"
    assert fire_manual(b.id, "PACK", "", "tester").state == "READY"
    assert fire_manual(a.id, "SEND", "", "tester").state == "SENT"
    # Pinning sends new instances back to version 1 without migrating anything.
    pin_version("PARCEL", 1)
    _start("C")
    assert _instance("C").workflow_version == 1
    pin_version("PARCEL", None)
    _start("D")
    assert _instance("D").workflow_version == 2
    with pytest.raises(ValidationFailed) as refused:
        pin_version("PARCEL", 7)
    assert refused.value.errors[0].path == "pinned_version"


def test_timeouts_fire_by_the_version_the_instance_follows(app, parcel):
    _start("T1")
    save_state("PARCEL", "NEW", {"code": "NEW", "description": "New", "is_initial": True,
                                 "timeout_hours": None, "on_timeout_transition": None})
    _start("T2")
    assert _instance("T2").timeout_due_at is None
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=25)) == 1
    assert _instance("T1").state == "EXPIRED"


def test_versions_with_instances_cannot_be_deleted(app, parcel):
    _start("A")
    _v2_without_packed()
    workflow = get_workflow("PARCEL")
    with pytest.raises(Conflict, match="still has 1 instance"):
        delete_version_service("PARCEL", 1)
    with pytest.raises(Conflict, match="latest version"):
        delete_version_service("PARCEL", 2)
    db.session.execute(Instance.__table__.delete())
    db.session.commit()
    delete_version_service("PARCEL", 1)
    assert [r.number for r in versions.list_versions(workflow)] == [2]


def test_diff_is_per_state_and_per_transition(app, parcel):
    _v2_without_packed()
    workflow = get_workflow("PARCEL")
    diff = versions.diff_versions(workflow, 1, workflow.latest_version)
    changes = {(r.kind, r.code): r for r in diff.rows}
    assert changes[("state", "READY")].change == "added"
    assert ("to_state", "PACKED", "READY") in changes[("transition", "PACK")].fields
    assert versions.diff_versions(workflow, 2, 2).empty


def test_dry_run_lists_where_each_state_goes_and_what_cannot_move(app, parcel):
    _start("A", "B", "C")
    for key in ("A", "B"):
        fire_manual(_instance(key).id, "PACK", "", "tester")
    _v2_without_packed()
    latest = 2
    plan = plan_migration("PARCEL", {"from_version": 1, "to_version": latest})
    assert [(r.source, r.target, r.count) for r in plan.rows] == [
        ("NEW", "NEW", 1), ("PACKED", None, 2)]
    assert "has no state PACKED" in plan.rows[1].reason
    plan = plan_migration("PARCEL", {"from_version": 1, "to_version": latest,
                                     "state_map": {"packed": "ready"}})
    assert (plan.movable, plan.blocked) == (3, 0)
    with pytest.raises(ValidationFailed) as refused:
        plan_migration("PARCEL", {"from_version": 1, "to_version": 9,
                                  "state_map": {"NOPE": "NEW"}})
    assert [e.path for e in refused.value.errors] == ["to_version"]
    with pytest.raises(ValidationFailed) as refused:
        plan_migration("PARCEL", {"from_version": 1, "to_version": latest,
                                  "state_map": {"NOPE": "GONE"}, "integration": "X"})
    assert {e.path for e in refused.value.errors} == {"integration"}
    assert db.session.scalar(select(func.count()).select_from(WorkflowMigration)) == 0


def _bulk_instances(count: int, version: int, state: str) -> None:
    workflow = get_workflow("PARCEL")
    integration = get_integration("PARCELS")
    now = utcnow()
    rows = [{"workflow_id": workflow.id, "integration_id": integration.id,
             "record_key": f"K{i:06d}", "state": state, "active": True,
             "entered_state_at": now, "data": {}, "vars": {}, "version": 1,
             "workflow_version": version, "created_at": now} for i in range(count)]
    db.session.execute(insert(Instance.__table__), rows)
    db.session.commit()


def test_migrating_ten_thousand_instances_in_chunks(app, parcel):
    _bulk_instances(10_000, 1, "PACKED")
    _v2_without_packed()
    migration = start_migration("PARCEL", {"from_version": 1, "to_version": 2,
                                           "state_map": {"PACKED": "READY"}}, "alice")
    assert migration.total == 10_000 and migration.status == "queued"
    get_queue().drain()
    migration = db.session.get(WorkflowMigration, migration.id, populate_existing=True)
    assert (migration.status, migration.done, migration.skipped) == ("completed", 10_000, 0)
    counts = db.session.execute(select(Instance.workflow_version, Instance.state, func.count())
                                .group_by(Instance.workflow_version, Instance.state)).all()
    assert counts == [(2, "READY", 10_000)]
    notes = db.session.execute(select(HistoryEntry.notes, HistoryEntry.trigger_type,
                                      HistoryEntry.actor, func.count())
                               .group_by(HistoryEntry.notes, HistoryEntry.trigger_type,
                                         HistoryEntry.actor)).all()
    assert notes == [("migrated v1 → v2", "migration", "alice", 10_000)]
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "migrate"))
    assert audit.actor == "alice" and audit.details["instances"] == 10_000
    # The migrated instances now follow version 2: SEND fires from READY.
    one = _instance("K000001")
    assert fire_manual(one.id, "SEND", "", "tester").state == "SENT"
    with pytest.raises(Conflict, match="no instance of version 1"):
        start_migration("PARCEL", {"from_version": 1, "to_version": 2}, "alice")


def test_migration_filters_by_state_and_integration(app, parcel):
    _start("A", "B")
    fire_manual(_instance("A").id, "PACK", "", "tester")
    set_enabled("PARCEL", True, "v2")
    start_migration("PARCEL", {"from_version": 1, "to_version": 2, "state": "new"}, "bob")
    get_queue().drain()
    assert (_instance("A").workflow_version, _instance("B").workflow_version) == (1, 2)
    b = _instance("B")
    assert [h.notes for h in _history(b)][-1] == "migrated v1 → v2"
    assert b.timeout_due_at is not None  # same state, same timeout: the timer is kept


def test_api_versions_and_migrations(client, tokens, parcel):
    _start("A")
    h = tokens["author"]
    assert client.post(f"{API}/workflows/import?replace=true", headers=h,
                       json=_renamed()).status_code == 200
    listed = client.get(f"{API}/workflows/PARCEL/versions", headers=tokens["viewer"]).get_json()
    assert [v["version"] for v in listed["items"]] == [2, 1]
    assert listed["items"][1]["instances"] == 1
    one = client.get(f"{API}/workflows/PARCEL/versions/1", headers=tokens["viewer"])
    assert one.get_json()["version"] == 1
    assert one.get_json()["workflow"]["states"][1]["code"] == "PACKED"
    assert client.get(f"{API}/workflows/PARCEL/versions/5", headers=h).status_code == 404
    assert client.get(f"{API}/workflows/PARCEL/export?version=1",
                      headers=h).get_json()["version"] == 1
    assert client.get(f"{API}/workflows/PARCEL/export?version=x", headers=h).status_code == 422
    instance = client.get(f"{API}/instances?workflow=PARCEL", headers=h).get_json()["items"][0]
    assert instance["workflow_version"] == 1
    pinned = client.patch(f"{API}/workflows/PARCEL", headers=h, json={"pinned_version": 1})
    assert pinned.status_code == 200
    rows = client.get(f"{API}/workflows", headers=h).get_json()["items"]
    assert [(r["latest_version"], r["pinned_version"]) for r in rows] == [(2, 1)]
    bad = client.patch(f"{API}/workflows/PARCEL", headers=h, json={"pinned_version": "1"})
    assert bad.status_code == 422
    assert bad.get_json()["error"]["details"][0]["path"] == "pinned_version"
    dry = client.post(f"{API}/workflows/PARCEL/migrations", headers=h, json={
        "from_version": 1, "to_version": 2, "dry_run": True})
    assert dry.status_code == 200
    assert dry.get_json()["moves"] == [
        {"from_state": "NEW", "to_state": "NEW", "count": 1, "reason": None}]
    wrong = client.post(f"{API}/workflows/PARCEL/migrations", headers=h, json={
        "from_version": 1, "to_version": 2, "state_map": {"NEW": "NOWHERE"}})
    assert wrong.status_code == 422
    assert wrong.get_json()["error"]["details"][0]["path"] == "state_map.NEW"
    assert client.post(f"{API}/workflows/PARCEL/migrations", headers=tokens["operator"],
                       json={"from_version": 1, "to_version": 2}).status_code == 403
    started = client.post(f"{API}/workflows/PARCEL/migrations", headers=h, json={
        "from_version": 1, "to_version": 2})
    assert started.status_code == 202
    get_queue().drain()
    progress = client.get(f"{API}/workflows/PARCEL/migrations/{started.get_json()['id']}",
                          headers=tokens["viewer"]).get_json()
    assert (progress["status"], progress["done"], progress["total"]) == ("completed", 1, 1)
    assert client.delete(f"{API}/workflows/PARCEL/versions/1", headers=h).status_code == 409
    assert client.patch(f"{API}/workflows/PARCEL", headers=h,
                        json={"pinned_version": None}).status_code == 200
    assert client.delete(f"{API}/workflows/PARCEL/versions/1", headers=h).status_code == 200


def test_card_versions_diff_and_migration_pages(client, auth, parcel):
    _start("A")
    _v2_without_packed()
    auth.login("author")
    card = client.get("/workflows/PARCEL").get_data(as_text=True)
    assert 'id="versions-table"' in card and 'data-version="2"' in card
    diff = client.get("/workflows/PARCEL/versions/diff?old=1&new=2").get_data(as_text=True)
    assert 'data-code="READY" data-change="added"' in diff
    assert client.get("/workflows/PARCEL/versions/diff?old=1&new=9").status_code == 404
    download = client.get("/workflows/PARCEL/export?version=1")
    assert 'filename="PARCEL.v1.workflow.json"' in download.headers["Content-Disposition"]
    assert json.loads(download.data)["version"] == 1
    dry = client.post("/workflows/PARCEL/migrations/new", data={
        "from_version": "1", "to_version": "2", "action": "dry_run",
        "map_PACKED": "READY"})
    page = dry.get_data(as_text=True)
    assert dry.status_code == 200 and 'id="dry-run-result"' in page and 'id="run-migration"' in page
    run = client.post("/workflows/PARCEL/migrations/new", data={
        "from_version": "1", "to_version": "2", "action": "run"})
    assert run.status_code == 302 and "/migrations/" in run.headers["Location"]
    get_queue().drain()
    progress = client.get(run.headers["Location"]).get_data(as_text=True)
    assert 'id="migration-status">completed' in progress
    assert client.post("/workflows/PARCEL/pin", data={"version": "1"}).status_code == 302
    assert get_workflow("PARCEL").pinned_version == 1
    client.post("/workflows/PARCEL/versions/1/delete")
    page = client.get("/workflows/PARCEL").get_data(as_text=True)
    assert "Version 1 not deleted: new instances are pinned to version 1" in html.unescape(page)
    client.post("/workflows/PARCEL/pin", data={"version": ""})
    assert client.post("/workflows/PARCEL/versions/1/delete").status_code == 302
    assert [r.number for r in versions.list_versions(get_workflow("PARCEL"))] == [2]


def test_import_preview_counts_instances_in_removed_states(client, auth, parcel):
    _start("A")
    fire_manual(_instance("A").id, "PACK", "", "tester")
    auth.login("author")
    doc = copy.deepcopy(parcel)
    doc["workflow"]["states"] = [s for s in doc["workflow"]["states"] if s["code"] != "PACKED"]
    doc["workflow"]["transitions"] = [t for t in doc["workflow"]["transitions"]
                                      if "PACKED" not in (t["from_state"], t["to_state"])]
    from io import BytesIO

    page = client.post("/workflows/import", data={"file": (BytesIO(json.dumps(doc).encode()),
                                                           "p.json")},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert 'id="import-stranded"' in page and "<strong>PACKED</strong>: 1 active" in page
    done = client.post("/workflows/import/confirm", data={"document": json.dumps(doc),
                                                           "then": "migrate"})
    assert done.status_code == 302
    assert "/workflows/PARCEL/migrations/new?from_version=1&to_version=2" in \
        done.headers["Location"]
    assert _instance("A").workflow_version == 1 and _instance("A").state == "PACKED"
    assert db.session.scalar(select(func.count()).select_from(WorkflowVersion)) == 2
    assert db.session.scalar(select(Workflow.latest_version)) == 2


def test_migration_runs_on_rq_workers_over_several_jobs(rq_app):
    from tests.services import start_worker

    import_document(copy.deepcopy(PARCEL))
    create_integration({"code": "PARCELS", "description": "Parcels", "workflow_code": "PARCEL",
                        "instance_mode": "per_record", "enabled": True})
    _bulk_instances(3_000, 1, "PACKED")
    _v2_without_packed()
    migration = start_migration("PARCEL", {"from_version": 1, "to_version": 2,
                                           "state_map": {"PACKED": "READY"}}, "carol")
    # Chunks of 500 and a budget that ends each job after one chunk: the job queues itself
    # again until the last chunk is done.
    worker = start_worker(rq_app.config, WFAPP_MIGRATION_CHUNK="500",
                          WFAPP_JOB_TIME_BUDGET="0.001")
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    db.session.rollback()
    done = db.session.get(WorkflowMigration, migration.id)
    assert (done.status, done.done) == ("completed", 3_000)
    assert db.session.scalar(select(func.count()).where(Instance.workflow_version == 2)) == 3_000


def _v2_send_expires() -> None:
    """Version 2: SEND now ends in EXPIRED, which breaks a scenario expecting SENT."""
    document = copy.deepcopy(PARCEL)
    document["workflow"]["transitions"][1]["to_state"] = "EXPIRED"
    import_document(document, replace=True)


def test_dry_run_runs_the_saved_scenarios_against_the_target_version(client, tokens, parcel):
    save_scenario("PARCEL", "pack and send", {"record": {"key": "S1", "data": {}},
                                              "steps": [{"fire": "PACK"}, {"fire": "SEND"}]})
    save_scenario("PARCEL", "pack only", {"record": {"key": "S2", "data": {}},
                                          "steps": [{"fire": "PACK"}]})
    _start("A")
    _v2_send_expires()
    plan = plan_migration("PARCEL", {"from_version": 1, "to_version": 2})
    assert (plan.scenarios["saved"], plan.scenarios["run"], plan.scenarios["passed"]) == \
        (2, 2, 1)
    [failing] = plan.scenarios["failing"]
    assert failing["name"] == "pack and send"
    assert failing["expected"]["state"] == "SENT" and failing["got"]["state"] == "EXPIRED"
    assert failing["problems"] == ["ends in EXPIRED, expected SENT"]
    # Back to version 1 every scenario passes again.
    back = plan_migration("PARCEL", {"from_version": 2, "to_version": 1})
    assert (back.scenarios["passed"], back.scenarios["failing"]) == (2, [])
    dry = client.post(f"{API}/workflows/PARCEL/migrations", headers=tokens["author"], json={
        "from_version": 1, "to_version": 2, "dry_run": True})
    assert dry.status_code == 200
    assert [f["name"] for f in dry.get_json()["scenarios"]["failing"]] == ["pack and send"]
    # The run still proceeds: the author decides.
    started = client.post(f"{API}/workflows/PARCEL/migrations", headers=tokens["author"],
                          json={"from_version": 1, "to_version": 2})
    assert started.status_code == 202
    get_queue().drain()
    assert _instance("A").workflow_version == 2


def test_planner_page_shows_failing_scenarios_before_the_run_button(client, auth, parcel):
    save_scenario("PARCEL", "pack and send", {"record": {"key": "S1", "data": {}},
                                              "steps": [{"fire": "PACK"}, {"fire": "SEND"}]})
    _start("A")
    _v2_send_expires()
    auth.login("author")
    page = client.post("/workflows/PARCEL/migrations/new", data={
        "from_version": "1", "to_version": "2", "action": "dry_run"}).get_data(as_text=True)
    assert 'id="scenario-failures"' in page and 'data-scenario="pack and send"' in page
    assert page.index('id="scenario-failures"') < page.index('id="run-migration"')
    back = client.post("/workflows/PARCEL/migrations/new", data={
        "from_version": "2", "to_version": "1", "action": "dry_run"}).get_data(as_text=True)
    assert 'id="scenario-failures"' not in back and 'id="scenarios-pass"' in back


def test_bulk_migrate_by_filter_with_refusals_history_and_audit(client, tokens, parcel):
    _start("A", "B", "C")
    for key in ("A", "B"):
        fire_manual(_instance(key).id, "PACK", "", "tester")
    _v2_without_packed()
    _start("D")  # new instances start on version 2
    h = tokens["author"]
    body = {"filter": {"workflow": "PARCEL"}, "action": "migrate", "to_version": 2,
            "dry_run": True}
    dry = client.post(f"{API}/instances/bulk", headers=h, json=body)
    assert dry.status_code == 200, dry.get_json()
    assert dry.get_json()["matched"] == 4
    assert sorted((r["state"], r["count"], r["reason"]) for r in dry.get_json()["refused"]) == [
        ("NEW", 1, "already on version 2"),
        ("PACKED", 2, "version 2 has no state PACKED; map PACKED to one of its states")]
    mapped = client.post(f"{API}/instances/bulk", headers=h,
                         json={**body, "state_map": {"packed": "ready"}}).get_json()
    assert [r["reason"] for r in mapped["refused"]] == ["already on version 2"]
    for wrong, path in (({"to_version": "2"}, "to_version"), ({"to_version": 9}, "to_version"),
                        ({"state_map": {"PACKED": "NOPE"}}, "state_map.PACKED"),
                        ({"state_map": ["x"]}, "state_map"),
                        ({"filter": {"workflow": "NOPE"}}, "filter.workflow")):
        bad = client.post(f"{API}/instances/bulk", headers=h, json={**body, **wrong})
        assert bad.status_code == 422, (wrong, bad.get_json())
        assert bad.get_json()["error"]["details"][0]["path"] == path
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action == "migrate")) == 0
    started = client.post(f"{API}/instances/bulk", headers=h, json={
        **body, "state_map": {"PACKED": "READY"}, "dry_run": False})
    assert started.status_code == 202, started.get_json()
    get_queue().drain()
    progress = client.get(f"{API}/operations/{started.get_json()['operation_id']}",
                          headers=h).get_json()
    assert (progress["status"], progress["done"], progress["failed"]) == ("done", 3, 1)
    assert "already on version 2" in progress["errors"][0]["message"]
    assert [(k, _instance(k).workflow_version, _instance(k).state) for k in "ABCD"] == [
        ("A", 2, "READY"), ("B", 2, "READY"), ("C", 2, "NEW"), ("D", 2, "NEW")]
    last = _history(_instance("A"))[-1]
    assert (last.from_state, last.to_state, last.notes, last.trigger_type) == (
        "PACKED", "READY", "migrated v1 → v2", "migration")
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action == "migrate",
                                    AuditEntry.object_type == "instance")) == 3


def test_migrate_all_from_the_instances_page(client, auth, parcel):
    _start("A", "B")
    fire_manual(_instance("A").id, "PACK", "", "tester")
    _v2_without_packed()
    auth.login("operator")
    assert 'id="bulk-migrate"' not in client.get("/instances/?workflow=PARCEL").get_data(
        as_text=True)
    assert client.get("/operations/new/instances?action=migrate&workflow=PARCEL"
                      ).status_code == 403
    auth.logout()
    auth.login("author")
    assert 'id="bulk-migrate"' not in client.get("/instances/").get_data(as_text=True)
    listing = client.get("/instances/?workflow=PARCEL").get_data(as_text=True)
    assert 'id="bulk-migrate"' in listing
    assert client.get("/operations/new/instances?action=migrate").status_code == 302
    start = "/operations/new/instances?action=migrate&workflow=PARCEL"
    page = client.get(start).get_data(as_text=True)
    assert 'id="dry-matched">2<' in page and 'id="dry-refused">1<' in page
    assert "version 2 has no state PACKED" in page and 'name="map_PACKED"' in page
    checked = client.post(start, data={"to_version": "2", "map_PACKED": "READY",
                                       "check": "1"}).get_data(as_text=True)
    assert 'id="dry-refused"' not in checked and "None would be refused" in checked
    assert db.session.scalar(select(func.count()).select_from(BulkOperation)) == 0
    assert client.post(start, data={"to_version": "7"}).status_code == 400
    response = client.post(start, data={"to_version": "2", "map_PACKED": "READY"})
    assert response.status_code == 302 and "/operations/" in response.headers["Location"]
    get_queue().drain()
    assert [(k, _instance(k).workflow_version, _instance(k).state) for k in "AB"] == [
        ("A", 2, "READY"), ("B", 2, "NEW")]


def _v2_renamed_and_redescribed() -> None:
    """Version 2: PACKED renamed READY, and NEW described "Just in"."""
    document = _renamed()
    document["workflow"]["states"][0]["description"] = "Just in"
    import_document(document, replace=True)


def _rows_html(page: str) -> list[str]:
    """The HTML of each row of the instance list's table body."""
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    return ["<tr" + part.split("</tr>")[0] for part in body.split("<tr")[1:]]


def _svg_states(page: str) -> dict[str, set[str]]:
    """State code → the classes of its box in the page's diagram."""
    from tests.pages import svg_of

    return {g.get("data-state"): set((g.get("class") or "").split())
            for g in svg_of(page).iter("{http://www.w3.org/2000/svg}g")
            if "state" in (g.get("class") or "").split()}


def test_list_and_instance_page_describe_the_state_by_the_instances_version(
        client, auth, parcel):
    from tests.pages import find, find_all, svg_of
    from wfapp.services.instance_list import filter_choices

    _start("OLD", "OLDPACKED")
    fire_manual(_instance("OLDPACKED").id, "PACK", "", "tester")
    _v2_renamed_and_redescribed()
    _start("NEW")
    fire_manual(_instance("NEW").id, "PACK", "", "tester")
    _start("FRESH")
    auth.login("author")
    page = client.get("/instances/?workflow=PARCEL&sort=record_key").get_data(as_text=True)
    rows = {find(str_row, "a").text.strip(): find(str_row, "td", "state-description").text
            for str_row in _rows_html(page)}
    assert rows == {"OLD": "New", "OLDPACKED": "Packed", "NEW": "Ready", "FRESH": "Just in"}
    # The state filter offers the states of every version (PACKED only exists in version 1).
    assert {"PACKED", "READY", "NEW"} <= set(filter_choices("PARCEL")["state"])

    old = client.get(f"/instances/{_instance('OLDPACKED').id}").get_data(as_text=True)
    assert find(old, id="state-description").text.startswith("Packed")
    boxes = _svg_states(old)
    assert set(boxes) == {"NEW", "PACKED", "SENT", "EXPIRED"}  # version 1's states
    assert "current" in boxes["PACKED"] and "visited" in boxes["NEW"]
    taken = {(g.get("data-from"), g.get("data-to"))
             for g in svg_of(old).iter("{http://www.w3.org/2000/svg}g")
             if "taken" in (g.get("class") or "").split()}
    assert taken == {("NEW", "PACKED")}

    new = client.get(f"/instances/{_instance('NEW').id}").get_data(as_text=True)
    assert find(new, id="state-description").text.startswith("Ready")
    boxes = _svg_states(new)
    assert set(boxes) == {"NEW", "READY", "SENT", "EXPIRED"}
    assert "current" in boxes["READY"]

    # Reset to State offers the states of the instance's own version.
    reset = client.get(f"/instances/reset?id={_instance('OLD').id}").get_data(as_text=True)
    offered = {o.attrs["value"] for o in find_all(reset, "option") if o.attrs.get("value")}
    assert offered == {"NEW", "PACKED", "SENT", "EXPIRED"}


def test_state_forms_refuse_only_for_instances_on_the_edited_versions(client, auth, parcel):
    """Instances on an older version do not stop a rename or delete; those on the latest (or
    pinned) version do, with how many, and the way on opens the migration planner pre-filled."""
    from tests.pages import find
    from wfapp.services.instances import reset_instance
    from wfapp.services.workflows import StateInUse, delete_state, edited_version_counts

    _start("A")
    fire_manual(_instance("A").id, "PACK", "", "tester")  # version 1, in PACKED
    set_enabled("PARCEL", True, "Parcels, v2")  # version 2: nobody on it
    auth.login("author")
    renamed = client.post("/workflows/PARCEL/states/PACKED/edit",
                          data={"code": "READY", "description": "Ready"})
    assert renamed.status_code == 302  # A is on version 1: unaffected by the edit
    assert get_workflow("PARCEL").latest_version == 3
    assert (_instance("A").workflow_version, _instance("A").state) == (1, "PACKED")

    # An instance on the latest version in the state: refused, with the count.
    _start("B")
    page = client.post("/workflows/PARCEL/states/NEW/edit",
                       data={"code": "FRESH", "description": "Fresh", "is_initial": "y",
                             "timeout_hours": "24", "on_timeout_transition": "EXPIRE"})
    assert page.status_code == 409
    text = html.unescape(page.get_data(as_text=True))
    assert "state 'NEW' has 1 instance(s) (1 on version 3" in text
    assert find(text, id="keep-instances").attrs["value"] == "1"
    assert get_workflow("PARCEL").latest_version == 3  # nothing saved
    # Going ahead saves version 4 and opens the planner: 3 → 4, NEW mapped to FRESH.
    ahead = client.post("/workflows/PARCEL/states/NEW/edit",
                        data={"code": "FRESH", "description": "Fresh", "is_initial": "y",
                              "timeout_hours": "24", "on_timeout_transition": "EXPIRE",
                              "keep_instances": "1"})
    assert ahead.status_code == 302
    location = ahead.headers["Location"]
    assert "/workflows/PARCEL/migrations/new?" in location
    for part in ("from_version=3", "to_version=4", "state=NEW", "map_NEW=FRESH"):
        assert part in location
    planner = client.get(location).get_data(as_text=True)
    assert find(planner, "select", id="from_version") and 'value="3" selected' in planner
    assert 'value="4" selected' in planner
    assert (_instance("B").workflow_version, _instance("B").state) == (3, "NEW")

    # Delete: a state holding an instance of the latest version gets the confirmation page.
    save_state("PARCEL", None, {"code": "HOLD", "description": "On hold"})
    _start("C")
    reset_instance(_instance("C").id, "HOLD", "waiting for stock", "tester")
    latest = get_workflow("PARCEL").latest_version
    with pytest.raises(StateInUse) as refused:
        delete_state("PARCEL", "HOLD")
    assert refused.value.counts == {latest: 1}
    page = client.post("/workflows/PARCEL/states/HOLD/delete")
    text = page.get_data(as_text=True)
    assert page.status_code == 409 and find(text, id="in-use-count").text == "1"
    assert get_workflow("PARCEL").latest_version == latest  # not deleted
    ahead = client.post("/workflows/PARCEL/states/HOLD/delete", data={"keep_instances": "1"})
    location = ahead.headers["Location"]
    for part in (f"from_version={latest}", f"to_version={latest + 1}", "state=HOLD"):
        assert part in location
    assert "HOLD" not in {s["code"] for s in export_version("PARCEL")["workflow"]["states"]}
    assert (_instance("C").workflow_version, _instance("C").state) == (latest, "HOLD")

    # The pinned version counts too: new instances start there.
    assert edited_version_counts(get_workflow("PARCEL"), "PACKED") == {}
    pin_version("PARCEL", 1)
    assert edited_version_counts(get_workflow("PARCEL"), "PACKED") == {1: 1}


def test_bulk_dry_run_decides_each_instance_by_its_version(client, tokens, parcel):
    """SEND leaves PACKED in version 1 and READY in version 2: a bulk Advance over instances
    of both versions refuses none of them, and Reset to a state only version 2 has refuses the
    version-1 ones, saying which version."""
    _start("A")
    fire_manual(_instance("A").id, "PACK", "", "tester")
    _v2_without_packed()
    _start("B")
    fire_manual(_instance("B").id, "PACK", "", "tester")
    headers = {**tokens["operator"], "Content-Type": "application/json"}
    advance = client.post(f"{API}/instances/bulk", headers=headers, json={
        "filter": {"workflow": "PARCEL", "active": True}, "action": "advance",
        "transition": "SEND", "dry_run": True}).get_json()
    assert (advance["matched"], advance["refused"]) == (2, [])
    reset = client.post(f"{API}/instances/bulk", headers=headers, json={
        "filter": {"workflow": "PARCEL", "active": True}, "action": "reset",
        "state": "READY", "note": "x", "dry_run": True}).get_json()
    assert [(r["count"], r["reason"]) for r in reset["refused"]] == [
        (1, "state READY is not a state of workflow PARCEL version 1")]
