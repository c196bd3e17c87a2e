"""In a real browser: edit a workflow with running instances, then migrate them after a dry run."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import select

from tests.e2e.conftest import login
from tests.test_versions import PARCEL
from wfapp.extensions import db
from wfapp.models import Instance
from wfapp.queue import get_queue
from wfapp.services.definitions import import_document
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.runs import start_run

pytestmark = pytest.mark.browser


def _start(*keys: str) -> None:
    start_run(get_integration("PARCELS"), "import", [{"key": k, "data": {}} for k in keys],
              "tester")
    get_queue().drain()


def _instances() -> dict[str, tuple[int, str, int]]:
    db.session.expire_all()
    return {i.record_key: (i.id, i.state, i.workflow_version)
            for i in db.session.scalars(select(Instance))}


def test_old_instances_stay_on_v1_new_start_on_v2_then_migrate(page, app):
    import_document(copy.deepcopy(PARCEL))
    create_integration({"code": "PARCELS", "description": "Parcels", "workflow_code": "PARCEL",
                        "instance_mode": "per_record", "enabled": True})
    _start("OLD1", "OLD2")
    login(page, "author")

    # Edit through the form: PACK now leads straight to SENT (a new version 2).
    page.goto("/workflows/PARCEL/transitions/PACK")
    page.get_by_label("To State").select_option("SENT")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/transitions/PACK")
    page.goto("/workflows/PARCEL")
    rows = page.locator("#versions-table tbody tr")
    assert rows.count() == 2
    assert "to_state 'PACKED' → 'SENT'" in rows.first.inner_text()
    page.locator("#diff-latest").click()
    page.wait_for_url("**/versions/diff*")
    changed = page.locator('.diff-row[data-code="PACK"]')
    assert "PACKED" in changed.inner_text() and "SENT" in changed.inner_text()

    _start("NEW1")
    ids = _instances()
    assert {k: v[2] for k, v in ids.items()} == {"OLD1": 1, "OLD2": 1, "NEW1": 2}
    page.goto(f"/instances/{ids['OLD1'][0]}")
    assert page.locator("#workflow-version").inner_text() == "version 1"
    page.goto(f"/instances/{ids['NEW1'][0]}")
    assert page.locator("#workflow-version").inner_text() == "version 2"

    # Plan the migration, dry-run it, then run it and watch it finish.
    page.goto("/workflows/PARCEL")
    page.locator("#versions").get_by_role("link", name="Migrate instances").click()
    page.wait_for_url("**/migrations/new")
    page.get_by_label("From version").select_option("1")
    page.get_by_label("To version").select_option("2")
    page.get_by_role("button", name="Dry run").click()
    page.wait_for_load_state()
    assert page.locator("#movable").inner_text() == "2"
    assert "NEW" in page.locator("#plan-table").inner_text()
    page.locator("#run-migration").click()
    page.wait_for_url("**/migrations/*")
    page.locator("#migration-status", has_text="completed").wait_for(timeout=20_000)
    assert page.locator("#migration-done").inner_text() == "2"
    assert {k: v[2] for k, v in _instances().items()} == {"OLD1": 2, "OLD2": 2, "NEW1": 2}
    page.goto(f"/instances/{ids['OLD1'][0]}")
    assert "migrated v1 → v2" in page.content()


def test_broken_scenario_shown_before_the_run_and_migrate_all_from_the_list(page, app):
    from wfapp.services.checks import save_scenario

    import_document(copy.deepcopy(PARCEL))
    create_integration({"code": "PARCELS", "description": "Parcels", "workflow_code": "PARCEL",
                        "instance_mode": "per_record", "enabled": True})
    save_scenario("PARCEL", "pack and send", {"record": {"key": "S", "data": {}},
                                              "steps": [{"fire": "PACK"}, {"fire": "SEND"}]})
    _start("OLD1", "OLD2")
    # Version 2: SEND now ends in EXPIRED, which the saved scenario does not expect.
    document = copy.deepcopy(PARCEL)
    document["workflow"]["transitions"][1]["to_state"] = "EXPIRED"
    import_document(document, replace=True)
    login(page, "author")

    page.goto("/workflows/PARCEL/migrations/new")
    page.get_by_label("From version").select_option("1")
    page.get_by_label("To version").select_option("2")
    page.get_by_role("button", name="Dry run").click()
    page.wait_for_load_state()
    failures = page.locator("#scenario-failures")
    assert failures.is_visible()
    row = failures.locator('tr[data-scenario="pack and send"]')
    assert "SENT" in row.inner_text() and "EXPIRED" in row.inner_text()
    assert failures.bounding_box()["y"] < page.locator("#run-migration").bounding_box()["y"]

    # Instead of the planner: Migrate all from the instances list filtered to PARCEL.
    page.goto("/instances/?workflow=PARCEL")
    page.locator("#bulk-migrate").click()
    page.wait_for_url("**/operations/new/instances*")
    assert page.locator("#dry-matched").inner_text() == "2"
    page.get_by_label("To version").select_option("2")
    page.locator("#bulk-start").click()
    page.wait_for_url("**/operations/*")
    page.locator("#op-status", has_text="done").wait_for(timeout=20_000)
    assert {k: v[2] for k, v in _instances().items()} == {"OLD1": 2, "OLD2": 2}
    page.goto(f"/instances/{_instances()['OLD1'][0]}")
    assert "migrated v1 → v2" in page.content()


def test_deleting_a_state_with_instances_leads_to_the_migration_planner(page, app):
    """The Delete of a state that instances of the latest version sit in says how many and
    goes on to the planner, pre-filled; the migration then moves them out of it."""
    from wfapp.services.instances import reset_instance

    document = copy.deepcopy(PARCEL)
    document["workflow"]["states"].append(
        {"code": "HOLD", "description": "On hold", "is_initial": False, "is_final": False,
         "timeout_hours": None, "on_timeout_transition": None})
    import_document(document)
    create_integration({"code": "PARCELS", "description": "Parcels", "workflow_code": "PARCEL",
                        "instance_mode": "per_record", "enabled": True})
    _start("H1", "H2", "N1")
    for key in ("H1", "H2"):
        reset_instance(_instances()[key][0], "HOLD", "waiting for stock", "tester")
    login(page, "author")

    page.goto("/workflows/PARCEL")
    page.get_by_label("Select state HOLD").check()
    page.locator("#state-actions").get_by_role("button", name="Delete").click()
    page.wait_for_url("**/states/HOLD/delete")
    assert page.locator("#in-use-count").inner_text() == "2"
    assert "2 on version 1" in page.locator("#state-in-use").inner_text()
    page.locator("#delete-and-plan").click()
    page.wait_for_url("**/migrations/new?*")
    assert page.get_by_label("From version").input_value() == "1"
    assert page.get_by_label("To version").input_value() == "2"
    assert page.locator("#state").input_value() == "HOLD"
    page.get_by_label("Target of HOLD").select_option("PACKED")
    page.get_by_role("button", name="Dry run").click()
    page.wait_for_load_state()
    assert page.locator("#movable").inner_text() == "2"
    page.locator("#run-migration").click()
    page.wait_for_url("**/migrations/*")
    page.locator("#migration-status", has_text="completed").wait_for(timeout=20_000)
    found = _instances()
    assert {k: v[1:] for k, v in found.items()} == {
        "H1": ("PACKED", 2), "H2": ("PACKED", 2), "N1": ("NEW", 1)}
