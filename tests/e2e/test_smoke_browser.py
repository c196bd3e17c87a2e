"""The browser reaches the app, logs in and finds the Workflows list through the search box."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import login

pytestmark = pytest.mark.browser


def test_login_and_search(page, demo):
    login(page, "viewer")
    page.get_by_label("Search pages and records").fill("Integration Workflows")
    page.locator("#header-search-results a").first.wait_for()
    page.keyboard.press("Enter")
    page.wait_for_url("**/workflows/")
    assert "ORDER_SYNC" in page.content()
