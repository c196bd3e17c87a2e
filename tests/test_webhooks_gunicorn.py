"""The deployment of README "Deployment on many machines": gunicorn serving the hooks, Redis, and
a real `flask --app wfapp worker` process applying the events. On PostgreSQL when the suite runs
there (WFAPP_TEST_DATABASE_URL), on the session's SQLite file otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_webhooks_live import wait_for_state
from tests.services import start_gunicorn, start_worker, stop
from tests.webhooks import GITHUB, SHOPIFY, github, make_integration, shopify, standard

pytestmark = pytest.mark.redis


@pytest.fixture
def gunicorn(rq_app: Any, app_config: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """`gunicorn -w 2 wsgi:app` on a free port, on the test database and Redis."""
    url, proc = start_gunicorn(app_config, tmp_path / "gunicorn.log")
    yield url
    stop(proc)


def test_gunicorn_and_a_worker_process_move_instances_in_three_styles(gunicorn, app_config):
    std = make_integration("STD")
    gh = make_integration("GH", secret="gh-secret", **GITHUB)
    shop = make_integration("SHOP", secret="shop-secret", **SHOPIFY)
    worker = start_worker(app_config, burst=False)
    try:
        sends = [("STD", *standard(std, {"type": "order.paid", "id": "G-1", "total": 3})),
                 ("GH", *github(gh, {"action": "order.paid", "pull_request": {"number": 8},
                                     "total": 4})),
                 ("SHOP", *shopify(shop, {"topic": "order.updated", "id": 9,
                                          "data": {"status": "cancelled"}}))]
        with requests.Session() as session:
            for code, body, headers in sends:
                response = session.post(f"{gunicorn}/hooks/{code}", data=body,
                                        headers=headers, timeout=10)
                assert response.status_code == 202, response.text
                again = session.post(f"{gunicorn}/hooks/{code}", data=body, headers=headers,
                                     timeout=10)
                assert again.status_code == 200, again.text
            bad = session.post(f"{gunicorn}/hooks/STD", data=b"{}",
                               headers={"webhook-id": "x", "webhook-timestamp": "1",
                                        "webhook-signature": "v1,AAAA"}, timeout=10)
            assert bad.status_code == 401
        assert wait_for_state("G-1", "PAID", timeout=40).vars == {"paid": 3}
        wait_for_state("8", "PAID", timeout=40)
        wait_for_state("9", "CANCELLED", timeout=40)
    finally:
        worker.terminate()
        worker.wait(timeout=20)


def test_a_change_counts_on_the_next_request_of_every_gunicorn_worker(gunicorn, app_config):
    """Each worker answers from its own copy of the integration; a change made here (another
    process) must count on each worker's next request: rotated secret, then webhooks off."""
    from wfapp import signing
    from wfapp.services.integrations import update_integration

    old = make_integration("STD", webhook_secret_grace_hours=0)

    def codes(secret: str, count: int = 8) -> set[int]:
        seen = set()
        with requests.Session() as session:
            for n in range(count):
                body, headers = standard(secret, {"type": "x", "id": f"R-{n}"})
                seen.add(session.post(f"{gunicorn}/hooks/STD", data=body, headers=headers,
                                      timeout=10).status_code)
        return seen

    assert codes(old, 12) == {202}  # every worker now holds a copy with the old secret
    new = signing.generate_secret()
    update_integration("STD", {"webhook_secret": new})
    assert codes(old) == {401}
    assert codes(new) == {202}
    update_integration("STD", {"webhook_enabled": False})
    assert codes(new) == {403}
