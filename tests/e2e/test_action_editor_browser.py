"""In a real browser: an author adds an http_request action with a header and a capture on the
transition page, saves it and finds it in the export; a bad URL puts focus on its input; axe
finds no serious or critical violation on the editor, with and without errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.action_flows import order_workflow, shop_integration
from tests.e2e.conftest import login
from tests.e2e.test_accessibility_browser import _violations

pytestmark = pytest.mark.browser
URL = "/workflows/ORDERS/transitions/CONFIRM"


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    """A page whose context bypasses CSP, so axe-core can be injected."""
    context = browser.new_context(base_url=live_server, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def _submit(page: Any, button: Any) -> None:
    with page.expect_navigation():
        button.click()


def test_add_an_http_request_with_a_header_and_a_capture(app, page):
    order_workflow("http://127.0.0.1:9")
    shop_integration()
    login(page, "author")
    page.goto(URL)
    assert page.locator("#actions-none").is_visible()
    page.get_by_label("New action of type").select_option("http_request")
    _submit(page, page.get_by_role("button", name="Add action"))
    assert page.locator("#action-0").is_visible()
    assert page.evaluate("document.activeElement.id") == "act-0-type"  # the new action

    # Nothing typed yet: Save shows every error at its input, focus on the first.
    _submit(page, page.locator("#transition-form button[type=submit]:not([hidden])",
                               has_text="Save"))
    url = page.locator("#act-0-f-url")
    assert url.get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "act-0-f-url"
    assert "actions[0].url" in page.locator("#action-errors").inner_text()
    assert _violations(page) == []

    page.get_by_label("Id", exact=True).fill("notify")
    url.fill("http://127.0.0.1:9/tickets/{record_key}")
    page.get_by_label("Headers row 1 name").fill("Authorization")
    page.get_by_label("Headers row 1 value").fill("Bearer {secret.api_key}")
    page.get_by_role("button", name="Add row to Headers").click()  # in place, by wfapp.js
    page.get_by_label("Headers row 2 name").fill("X-Order")
    page.get_by_label("Headers row 2 value").fill("{data.number}")
    page.get_by_label("Capture row 1 name").fill("ticket")
    page.get_by_label("Capture row 1 value").fill("data.id")
    page.get_by_label("Expected Status").fill("200\n201")
    page.locator("#act-0-f-body").fill('{"order": "{record_key}"}')
    _submit(page, page.locator("#transition-form button[type=submit]:not([hidden])",
                               has_text="Save"))
    assert "Transition CONFIRM saved." in page.content()
    assert _violations(page) == []

    answer = page.request.get("/workflows/ORDERS/export")
    assert answer.ok
    confirm = next(t for t in json.loads(answer.text())["workflow"]["transitions"]
                   if t["code"] == "CONFIRM")
    assert confirm["actions"] == [{"id": "notify", "type": "http_request", "config": {
        "method": "POST", "url": "http://127.0.0.1:9/tickets/{record_key}",
        "headers": {"Authorization": "Bearer {secret.api_key}", "X-Order": "{data.number}"},
        "body": {"order": "{record_key}"}, "timeout_seconds": 10, "max_attempts": 5,
        "expected_status": [200, 201], "capture": {"ticket": "data.id"}}}]
    assert "k-123" not in page.content()


def test_changing_an_action_type_shows_its_fields(app, page):
    order_workflow("http://127.0.0.1:9")
    login(page, "author")
    page.goto("/workflows/ORDERS/transitions/SUBMIT")
    assert page.locator("#act-1-f-url").is_visible()
    assert not page.locator("[data-refresh]").first.is_visible()  # the script submits instead
    with page.expect_navigation():
        page.locator("#act-1-type").select_option("send_email")
    assert page.locator("#act-1-f-to").is_visible()
    assert page.locator("#act-1-f-url").count() == 0
    _submit(page, page.get_by_role("button", name="Move action 2 up"))
    assert page.locator("#act-0-f-to").is_visible()
    assert page.locator("#act-1-f-values").is_visible()


def test_enter_in_a_field_saves_rather_than_pressing_an_action_button(app, page):
    order_workflow("http://127.0.0.1:9")
    login(page, "author")
    page.goto("/workflows/ORDERS/transitions/SUBMIT")
    page.locator("#act-1-f-url").fill("http://127.0.0.1:9/orders/{record_key}")
    with page.expect_navigation():
        page.locator("#act-1-f-url").press("Enter")
    assert "Transition SUBMIT saved." in page.content()
    assert page.locator("#act-1-f-url").input_value() == "http://127.0.0.1:9/orders/{record_key}"
    assert page.locator("li[data-action]").count() == 2  # no action moved or removed
