"""In a real browser: an author builds a workflow through the forms and exports it."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import login

pytestmark = pytest.mark.browser


def _add_state(page, code: str, description: str, final: bool = False) -> None:
    page.locator("#state-actions").get_by_role("link", name="New").click()
    page.get_by_label("Code").fill(code)
    page.get_by_label("Description").fill(description)
    if final:
        page.get_by_label("Is Final").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/workflows/PAYMENTS*")


def _add_transition(page, code: str, source: str, target: str, trigger: str) -> None:
    page.locator("#transition-actions").get_by_role("link", name="New").click()
    page.get_by_label("Code").fill(code)
    page.get_by_label("From State").select_option(source)
    page.get_by_label("To State").select_option(target)
    page.get_by_label("Trigger Type").select_option(trigger)
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(f"**/transitions/{code}")


def test_build_a_workflow_in_the_browser(page, tmp_path):
    login(page, "author")
    page.goto("/integrations/")
    page.locator("#integration-actions").get_by_role("link", name="Workflows").click()
    page.wait_for_url("**/workflows/")
    page.locator("#workflow-actions").get_by_role("link", name="New").click()
    page.get_by_label("Code", exact=True).fill("payments")
    page.get_by_label("Description", exact=True).fill("Incoming payments")
    page.get_by_label("Initial State", exact=True).fill("OPEN")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/workflows/PAYMENTS")

    _add_state(page, "MATCHED", "Matched to an invoice")
    _add_state(page, "DONE", "Booked", final=True)
    _add_transition(page, "MATCH", "OPEN", "MATCHED", "on_webhook")

    # The transition detail page: the webhook's own fields and a condition.
    page.get_by_label("Event Filter").fill("payment.*")
    page.get_by_role("button", name="Add condition").click()
    page.locator('input[name="cond-0-field"]').fill("event.amount")
    page.locator('select[name="cond-0-operator"]').select_option("gt")
    page.locator('input[name="cond-0-value"]').fill("0")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/transitions/MATCH")
    assert page.locator('input[name="cond-0-field"]').input_value() == "event.amount"

    page.get_by_role("link", name="PAYMENTS").first.click()
    _add_transition(page, "BOOK", "MATCHED", "DONE", "manual")
    page.get_by_label("Button Label").fill("Book it")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/transitions/BOOK")

    page.goto("/workflows/PAYMENTS")
    assert page.locator("svg.state-diagram").is_visible()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export").click()
    download = download_info.value
    assert download.suggested_filename == "PAYMENTS.workflow.json"
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    document = json.loads(target.read_text())
    wf = document["workflow"]
    assert [s["code"] for s in wf["states"]] == ["OPEN", "MATCHED", "DONE"]
    assert [t["code"] for t in wf["transitions"]] == ["MATCH", "BOOK"]
    assert wf["transitions"][0]["conditions"] == [
        {"field": "event.amount", "operator": "gt", "value": 0}]
    assert wf["transitions"][0]["trigger_config"] == {"event_filter": "payment.*"}

    page.goto("/workflows/")
    headers = page.locator("#workflows-table thead th").all_inner_texts()
    assert headers[1:5] == ["Code", "Description", "Initial State", "Active Instances"]
    row = page.locator("#workflows-table tbody tr", has_text="PAYMENTS")
    cells = row.locator("td").all_inner_texts()
    assert cells[1:5] == ["PAYMENTS", "Incoming payments", "OPEN", "0"]
    # Selecting the row enables Edit, which opens the card.
    row.click()
    page.locator("#workflow-actions").get_by_role("link", name="Edit").click()
    page.wait_for_url("**/workflows/PAYMENTS")
    page.screenshot(path=str(tmp_path / "card.png"), full_page=True)
