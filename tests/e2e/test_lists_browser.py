"""In a real browser: find an instance by a captured variable, download the filtered list as
CSV, then advance every instance stuck in a state with one bulk action and watch its progress."""

from __future__ import annotations

import csv

import pytest

from tests.e2e.conftest import login
from tests.lists import make_stuck

pytestmark = pytest.mark.browser


@pytest.fixture
def live_env() -> dict[str, str]:
    # Short slices: the operation goes through several jobs, the bar moves in steps.
    return {"WFAPP_BULK_TIME_BUDGET": "0.3"}


def test_find_download_and_advance_all(page, app, tmp_path):
    keys = make_stuck(300)
    login(page, "operator")

    # Find an instance by a captured variable.
    page.goto("/instances/")
    page.get_by_label("Variable").fill("ref")
    page.get_by_label("Value").fill("REF-ORD00123")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#instances-table tbody tr")
    rows.first.wait_for()
    assert rows.count() == 1 and "ORD00123" in rows.first.inner_text()
    assert page.locator("#instance-count").inner_text() == "1 matching"

    # Download the filtered list (every matching row, not one page).
    page.goto("/instances/?state=HOLD&size=25")
    assert page.locator("#instance-count").inner_text() == "300 matching"
    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    path = tmp_path / "instances.csv"
    info.value.save_as(path)
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert len(lines) == 301 and sorted(r[3] for r in lines[1:]) == keys

    # Advance all 300 stuck in HOLD: the dry run, then the operation with its progress bar.
    page.get_by_role("link", name="Advance all").click()
    assert page.locator("#dry-matched").inner_text() == "300"
    page.get_by_label("Manual transition").select_option("RELEASE")
    page.get_by_label("Comment").fill("released in bulk")
    page.locator("#bulk-start").click()
    page.wait_for_url("**/operations/*")
    page.locator("#op-status", has_text="done").wait_for(timeout=120_000)
    assert page.locator("#op-done").inner_text() == "300"
    assert page.locator("#op-bar-fill").inner_text() == "100 %"
    assert page.locator("#op-cancel").count() == 0
    page.screenshot(path=str(tmp_path / "operation.png"), full_page=True)

    page.goto("/instances/?state=HOLD")
    assert page.locator("#instance-count").inner_text() == "0 matching"
    page.goto("/instances/?state=DONE&active=all")
    assert page.locator("#instance-count").inner_text() == "300 matching"
