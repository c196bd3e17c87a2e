"""Business Central with the many-machine setup: gunicorn serves the app, Redis queues the jobs
and a separate `flask --app wfapp worker` process registers, renews and expands — against the
stand-in, over real HTTP. (On PostgreSQL in the PostgreSQL run of the suite.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.bc_helpers import setup_in_app, wait_for
from tests.bc_standin import StandIn, now
from tests.conftest import PASSWORD
from tests.e2e.test_bc import API, Api
from tests.services import start_gunicorn, start_worker, stop

pytestmark = pytest.mark.redis


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The Business Central stand-in on a free port."""
    server = StandIn()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(rq_app: Any, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """gunicorn (2 workers) and one `flask --app wfapp worker` on the test database and Redis;
    yields the base URL and an author's API headers."""
    from wfapp.services.users import create_token, create_user

    create_user("author", PASSWORD, "author")
    headers = {"Authorization": f"Bearer {create_token('author')}"}
    config = dict(rq_app.config)
    url, web = start_gunicorn(config, tmp_path / "gunicorn.log")
    worker = start_worker(config, burst=False)
    try:
        yield url, headers
    finally:
        stop(web, worker)


def test_subscription_and_notifications_through_gunicorn_and_a_worker(served, standin):
    url, headers = served
    setup_in_app(**standin.settings())
    api = Api(url, headers)
    assert api("POST", API).status_code == 202
    active = api.wait(lambda s: s["status"] != "registering", "the registration", timeout=60)
    assert active["status"] == "active", active
    sub_id = active["subscription"]["id"]
    assert standin.subscriptions[sub_id]["notificationUrl"] == f"{url}/bc/BC_SALES/notifications"

    assert standin.notify(sub_id, [("created", "SO-1"), ("created", "SO-2")]).status == 202
    assert standin.notify(sub_id, [("deleted", "SO-2")]).status == 202
    wait_for(lambda: api.states() == {"SO-1": "OPEN", "SO-2": "DELETED"}, timeout=60,
             what="the worker to apply the events")

    standin.page_size = 10
    fresh = standin.add_records("salesOrders", 23, modified=now() - timedelta(minutes=5))
    assert standin.notify(sub_id, [("collection", None)],
                          since=now() - timedelta(minutes=10)).status == 202
    done = api.wait(lambda s: s["expansion"] and s["expansion"].get("finished_at"),
                    "the expansion", timeout=60)
    assert (done["expansion"]["pages"], done["expansion"]["stored"]) == (3, 23)
    wait_for(lambda: all(api.states().get(r["id"]) == "CHANGED" for r in fresh), timeout=60,
             what="the expanded records' transitions")

    etag = standin.subscriptions[sub_id]["@odata.etag"]
    assert api("POST", API + "/renew").status_code == 202
    api.wait(lambda s: (s["subscription"] or {}).get("renewals") == 1, "the renewal", timeout=60)
    assert standin.requests_to("PATCH")[-1]["if_match"] == etag

    assert api("DELETE", API).status_code == 202
    api.wait(lambda s: s["status"] == "not_registered", "the unregistration", timeout=60)
    assert standin.subscriptions == {}
