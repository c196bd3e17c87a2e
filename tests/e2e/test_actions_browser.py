"""In a real browser: a transition's HTTP call fails, the instance page shows the delivery, the
operator reopens the instance and clicks Retry now, and the call's success confirms it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.action_flows import order_workflow, shop_integration
from tests.action_server import ActionServer
from tests.e2e.conftest import login
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import get_integration

pytestmark = pytest.mark.browser


@pytest.fixture
def receiver() -> Iterator[ActionServer]:
    """A real HTTP receiver on 127.0.0.1: first a 500, then 200s."""
    with ActionServer() as server:
        server.script("/submit/W1", [500, 200])
        yield server


@pytest.fixture
def live_env() -> dict[str, str]:
    """Deliveries checked every half second by the live server."""
    return {"WFAPP_ACTION_INTERVAL": "0.5"}


def test_failed_action_is_retried_from_the_instance_page(app, receiver, page, tmp_path):
    order_workflow(receiver.url, max_attempts=1)
    shop_integration()
    ingest(get_integration("SHOP"), [NewEvent("on_webhook", "go", "W1", None, {},
                                              {"total": 3})])
    login(page, "operator")
    page.goto("/actions/?status=failed")
    row = page.locator("#deliveries-table tbody tr", has_text="submit")
    for _ in range(60):  # the live server's worker delivers it and records the failure
        if row.count():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert "HTTP 500" in row.inner_text()
    row.get_by_role("link").first.click()  # the instance
    page.wait_for_url("**/instances/*")
    assert page.locator("#current-state").inner_text() == "FAILED"
    page.get_by_role("button", name="REOPEN").click()
    page.wait_for_url("**/instances/*")
    assert page.locator("#current-state").inner_text() == "SUBMITTED"
    deliveries = page.locator("#deliveries")
    assert "failed" in deliveries.inner_text() and "1 / 1" in deliveries.inner_text()
    deliveries.get_by_role("button", name="Retry now").click()
    page.wait_for_url("**/instances/*")
    for _ in range(60):
        if page.locator("#current-state").inner_text() == "CONFIRMED":
            break
        page.wait_for_timeout(500)
        page.reload()
    assert page.locator("#current-state").inner_text() == "CONFIRMED"
    assert "succeeded" in page.locator("#deliveries").inner_text()
    assert len(receiver.requests("/submit/W1")) == 2
    page.screenshot(path=str(tmp_path / "actions.png"), full_page=True)
