"""End-to-end fixtures: wfapp served by a real HTTP server, driven by Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_service
from tests.http_server import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture
def live_env() -> dict[str, str]:
    """Extra environment for the live server (a test overrides this fixture to add some)."""
    return {}


@pytest.fixture
def live_server(app: Any, users: dict[str, Any], tmp_path: Path, live_env: dict[str, str]
                ) -> Iterator[str]:
    """`flask --app wfapp run` on a free port, on the test database, with the embedded worker."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    env.update({
        "WFAPP_SECRET_KEY": app.config["SECRET_KEY"],
        "WFAPP_LOAD_ENTRY_POINTS": "false",
        "WFAPP_SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "WFAPP_EMBEDDED_WORKER": "true",
        "WFAPP_SWEEP_INTERVAL": "1",
    })
    env.update({k: v.replace("{port}", str(port)) for k, v in live_env.items()})
    flask = str(Path(sys.executable).parent / "flask")
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([flask, "--app", "wfapp", "run", "--port", str(port)],
                            cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/auth/login", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {(tmp_path / 'server.log').read_text()}")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright (never a downloaded browser)."""
    executable = _chromium()
    if executable is None:
        need_service("no chromium on this machine (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("the playwright package is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    """A fresh browser page with the live server as base URL; dialogs are accepted."""
    context = browser.new_context(base_url=live_server, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


def login(page: Any, role: str = "admin") -> None:
    """Log in through the login form as the user named `role`."""
    from tests.conftest import PASSWORD

    page.goto("/auth/login")
    page.get_by_label("User Name").fill(role)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log In").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
