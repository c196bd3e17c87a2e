"""In Chromium: an author generates a webhook secret on the card, copies the curl example from
the page, runs it with bash, and sees the instance appear and move."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.conftest import login
from tests.e2e.test_webhooks_live import wait_for_state
from tests.webhooks import make_integration

pytestmark = pytest.mark.browser


def test_generate_a_secret_copy_the_curl_and_run_it(page, live_server):
    make_integration("SHOP", record_key_path="order.id", event_type_path="kind")
    login(page, "author")
    page.goto("/integrations/SHOP")
    panel = page.locator("#panel-webhook")
    assert "no secret" not in panel.inner_text()
    assert f"POST {live_server}/hooks/SHOP" in page.locator("#webhook-url").inner_text()
    page.get_by_role("button", name="Generate new secret").click()
    page.wait_for_url("**/integrations/SHOP/webhook-secret")
    secret = page.locator("#new-webhook-secret").input_value()
    assert secret.startswith("whsec_")
    page.get_by_role("button", name="Copy").first.click()
    snippet = page.locator("#webhook-curl").inner_text()
    assert f"SECRET={secret}" in snippet.replace("'", "")
    out = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "event_id" in json.loads(out.stdout)
    wait_for_state("EX-1001", "NEW")
    # The same example with the payload changed to what the workflow waits for moves it.
    paid = snippet.replace('"kind":"example.event"', '"kind":"order.paid","total":7')
    out = subprocess.run(["bash", "-c", paid], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "event_id" in out.stdout, out.stderr
    wait_for_state("EX-1001", "PAID")
    page.goto("/instances/?integration=SHOP&active=all")  # it is in a final state now
    assert "EX-1001" in page.locator("main").inner_text()
    # Back on the card the secret is gone for good; the deliveries show the two events.
    page.goto("/integrations/SHOP")
    assert secret not in page.content()
    assert page.locator("#webhook-deliveries tbody tr").count() == 2
