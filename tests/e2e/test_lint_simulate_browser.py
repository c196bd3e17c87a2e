"""In a real browser: Lint panel links, a 5-step simulation with a timeout, a saved scenario."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import login
from tests.sim_factory import order_document
from wfapp.services.definitions import import_document

pytestmark = pytest.mark.browser

STEPS = [
    {"event": {"trigger_type": "on_webhook", "type": "order.created", "payload": {"total": 5}}},
    {"event": {"trigger_type": "on_webhook", "type": "order.paid",
               "payload": {"total": 50, "number": "A-7"}}},
    {"advance_hours": 1},
    {"advance_hours": 1.5},
    {"fire": "CLOSE"},
]


def test_lint_links_and_a_simulated_scenario(app, page):
    document = order_document()
    document["workflow"]["states"].append({"code": "LOST", "description": "Never reached"})
    import_document(document)
    login(page, "author")
    page.goto("/workflows/ORDER")
    lint = page.locator("#lint-table")
    assert "cannot be reached" in lint.inner_text()
    assert "ambiguous_transitions" in lint.inner_text()
    lint.get_by_role("link", name="LOST").first.click()  # unreachable, and stuck
    page.wait_for_url("**/workflows/ORDER#state-LOST")
    assert page.locator("#state-LOST").is_visible()

    page.locator("#card-actions").get_by_role("link", name="Simulate").click()
    page.wait_for_url("**/workflows/ORDER/simulate")
    page.get_by_label("Record Data (JSON)").fill('{"ok": true}')
    page.get_by_label("Steps (one JSON object per line)").fill(
        "\n".join(json.dumps(s) for s in STEPS))
    page.get_by_role("button", name="Run").click()
    rows = page.locator("#steps-table tbody tr")
    assert rows.count() == 6
    cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(6)]
    assert [(c[3], c[4]) for c in cells] == [
        ("NEW", ""), ("NEW", "none"), ("PAID", "PAY"), ("PAID", "none"), ("LATE", "SLOW"),
        ("DONE", "CLOSE")]
    assert "timed out: PAID → LATE by SLOW" in cells[4][1]
    assert page.locator("#final-state").inner_text() == "DONE"

    page.get_by_label("Scenario Name").fill("paid, late, closed")
    page.get_by_role("button", name="Save as scenario").click()
    page.wait_for_url("**/workflows/ORDER#scenarios")
    row = page.locator("#scenarios-table tbody tr").first.locator("td").all_inner_texts()
    assert row[:4] == ["paid, late, closed", "5", "pass", "DONE"]
