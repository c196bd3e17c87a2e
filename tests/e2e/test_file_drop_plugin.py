"""The example distribution, pip-installed, in a running wfapp: its trigger type in the
drop-downs, a dropped file moving an instance, its card panel and the /plugins page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import login
from tests.filedrop import drop, install_example, listing, workflow
from tests.services import start_server

pytestmark = pytest.mark.browser


@pytest.fixture
def server(app: Any, users: dict[str, Any], tmp_path: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """wfapp served with the example installed by pip and entry points on: (URL, drop root)."""
    site = install_example(tmp_path_factory.mktemp("file-drop-dist"))
    root = tmp_path / "drops"
    root.mkdir()
    url, proc = start_server(
        app.config, tmp_path / "server.log", PYTHONPATH=str(site),
        WFAPP_LOAD_ENTRY_POINTS="true", WFAPP_FILE_DROP_ROOT=str(root),
        WFAPP_FILE_DROP_INTERVAL="1", WFAPP_FILE_DROP_SETTLE_SECONDS="0")
    yield url, root
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def api(server: tuple[str, Path], users: dict[str, Any]) -> Any:
    """A requests session on the server's JSON API as the author."""
    from wfapp.services.users import create_token

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {create_token('author')}"
    base = server[0] + "/api/v1"

    class Api:
        def get(self, path: str) -> Any:
            return session.get(base + path, timeout=10)

        def post(self, path: str, body: Any) -> Any:
            return session.post(base + path, json=body, timeout=10)

    return Api()


def test_a_dropped_file_moves_an_instance(server, api, browser):
    url, root = server
    kinds = {t["name"]: t for t in api.get("/trigger-types").json()["items"]}
    assert kinds["on_file_drop"]["label"] == "On File Drop"
    assert [f["name"] for f in kinds["on_file_drop"]["fields"]] == ["pattern"]
    assert api.post("/workflows/import", workflow()).status_code == 201
    created = api.post("/integrations", {"code": "FILES", "workflow_code": "DROPS",
                                         "file_drop_folder": "orders",
                                         "file_drop_record_key_path": "id"})
    assert created.status_code == 201, created.text

    context = browser.new_context(base_url=url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        login(page, "author")
        # The trigger-type drop-down of a new transition offers the plugin's type ...
        page.goto("/workflows/DROPS/transitions/new")
        options = page.get_by_label("Trigger Type").locator("option").all_inner_texts()
        assert "On File Drop" in options
        page.get_by_label("Code").fill("AGAIN")
        page.get_by_label("From State").select_option("RECEIVED")
        page.get_by_label("To State").select_option("RECEIVED")
        page.get_by_label("Trigger Type").select_option("on_file_drop")
        page.get_by_role("button", name="Add").click()
        page.wait_for_url("**/transitions/AGAIN")
        # ... and its page shows the plugin's own field.
        page.get_by_label("File Name Pattern").fill("again-*.json")
        page.get_by_role("button", name="Save").click()
        page.wait_for_url("**/transitions/AGAIN")
        assert page.get_by_label("File Name Pattern").input_value() == "again-*.json"

        drop(root / "orders", "order-1.json", {"id": "E2E-1", "total": 9}, age=5)
        states: dict[str, str] = {}
        for _ in range(150):
            items = api.get("/instances?integration=FILES").json()["items"]
            states = {i["record_key"]: i["state"] for i in items}
            if states.get("E2E-1") == "RECEIVED":
                break
            time.sleep(0.2)
        assert states == {"E2E-1": "RECEIVED"}
        assert listing(root / "orders" / "processed") == {"order-1.json"}

        page.goto("/integrations/FILES")
        panel = page.locator("#panel-file-drop")
        assert "File Drop" in panel.inner_text()
        assert "watched" in panel.locator("#file-drop-folder").locator("..").inner_text()
        assert "1 file(s), 1 new event(s)" in panel.locator("#file-drop-last").inner_text()
        assert "E2E-1" in panel.locator("#file-drop-deliveries").inner_text()

        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/auth/login*")
        login(page, "admin")
        page.goto("/integrations/")
        page.get_by_role("link", name="Plugins").click()
        page.wait_for_url("**/plugins")
        detail = page.locator('section[data-plugin="file_drop"]')
        assert "wfapp-file-drop 0.1.0" in detail.locator(".plugin-distribution").inner_text()
        assert "on_file_drop" in detail.locator(".plugin-trigger-types").inner_text()
        assert "file-drop-pickup" in detail.locator(".plugin-schedules").inner_text()
        assert "File Drop" in detail.locator(".plugin-panels").inner_text()
    finally:
        context.close()
