"""Faults of the services: the database or Redis away answers clearly and recovers by itself."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import PASSWORD
from tests.services import TcpProxy
from wfapp import create_app
from wfapp.extensions import db


@pytest.mark.postgres
def test_database_away_answers_503_and_recovers(app_config: dict[str, Any], users, tokens):
    url = urlsplit(os.environ["WFAPP_TEST_DATABASE_URL"])
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    proxy.start()
    through = url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}")
    config = {**app_config, "SQLALCHEMY_DATABASE_URI": urlunsplit(through),
              "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True,
                                            "connect_args": {"connect_timeout": 2}}}
    app = create_app(config)
    try:
        client = app.test_client()
        assert client.post("/auth/login", data={"username": "admin", "password": PASSWORD}
                           ).status_code == 302
        assert client.get("/workflows/").status_code == 200
        proxy.stop()
        page = client.get("/workflows/", headers={"Accept": "text/html"})
        assert page.status_code == 503 and page.headers["Retry-After"] == "5"
        assert "database cannot be reached" in page.get_data(as_text=True)
        assert "Traceback" not in page.get_data(as_text=True)
        api = client.get("/api/v1/workflows", headers=tokens["viewer"])
        assert api.status_code == 503
        assert api.get_json()["error"]["code"] == "unavailable"
        proxy.start()
        assert client.get("/workflows/").status_code == 200  # no restart needed
        assert client.get("/api/v1/workflows", headers=tokens["viewer"]).status_code == 200
    finally:
        proxy.stop()
        with app.app_context():
            db.engine.dispose()


def test_redis_away_after_the_commit_still_answers_success(app_config, users, tokens):
    """The run and its events are committed: the client must not retry into a duplicate."""
    from sqlalchemy import func, select

    from wfapp.models import Event, Run

    app_config["REDIS_URL"] = "redis://127.0.0.1:9/0"  # nothing listens there
    app = create_app(app_config)
    with app.app_context():
        from wfapp.services.integrations import create_integration

        create_integration({"code": "FEED"})
        answer = app.test_client().post(
            "/api/v1/integrations/FEED/runs", headers=tokens["operator"],
            json={"direction": "import", "records": [{"key": "A", "data": {}}]})
        assert answer.status_code == 201, answer.get_data(as_text=True)
        assert db.session.scalar(select(func.count()).select_from(Run)) == 1
        assert db.session.scalar(select(func.count()).select_from(Event)) == 1
        db.session.remove()
        db.engine.dispose()


def test_redis_away_large_imports_go_on_without_announcements(app_config, tokens):
    """A large ingest announces itself through the queue (polls yield from its start); with
    Redis away it is stored all the same, and the process stops trying for a while instead of
    paying Redis's connect timeout on every large ingest and every look of an executor."""
    import time

    from sqlalchemy import func, select

    from wfapp.models import Event
    from wfapp.queue import get_queue
    from wfapp.services.events import waiting_other_than

    app_config["REDIS_URL"] = "redis://127.0.0.1:9/0"  # nothing listens there
    app = create_app(app_config)
    with app.app_context():
        from wfapp.services.integrations import create_integration

        create_integration({"code": "FEED"})
        paused = []
        for run in range(2):
            answer = app.test_client().post(
                "/api/v1/integrations/FEED/runs", headers=tokens["operator"],
                json={"direction": "import",
                      "records": [{"key": f"R{run}-{i}", "data": {}} for i in range(60)]})
            assert answer.status_code == 201, answer.get_data(as_text=True)
            paused.append(get_queue().announcements_paused_until)
        assert db.session.scalar(select(func.count()).select_from(Event)) == 120
        # The first import found Redis away; the second did not try again.
        assert paused[0] == paused[1] > time.monotonic() + 25
        # An executor's look: the inbox alone (nobody applies the imports here), Redis not asked.
        assert waiting_other_than("on_scheduled_poll", 500) == 120
        assert get_queue().announcements_paused_until == paused[0]
        db.session.remove()
        db.engine.dispose()


def test_nul_in_a_path_is_404_on_every_page(client, auth, demo):
    auth.login("admin")
    for path in ["/workflows/ORD%00", "/workflows/ORD%00/states/NEW",
                 "/workflows/ORDER_SYNC/transitions/SUB%00", "/workflows/ORD%00/export",
                 "/workflows/ORD%00/copy", "/workflows/ORD%00/edit", "/integrations/SH%00",
                 "/workflows/ORD%00/delete", "/instances/?workflow=ORD%00"]:
        answer = client.get(path)
        assert answer.status_code in (404, 400), (path, answer.status_code)


@pytest.mark.postgres
def test_webhook_fast_path_survives_a_database_restart(app_config: dict[str, Any]):
    """The inbox writer's own connection: 503 while the database is away, then 202 again."""
    from tests.webhooks import make_integration, standard

    url = urlsplit(os.environ["WFAPP_TEST_DATABASE_URL"])
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    proxy.start()
    through = url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}")
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": urlunsplit(through),
                      "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "connect_args": {
                          "connect_timeout": 2}}})
    try:
        with app.app_context():
            secret = make_integration()
        client = app.test_client()

        def deliver(n: int) -> int:
            body, headers = standard(secret, {"type": "x", "id": f"R{n}"})
            return client.post("/hooks/HOOKS", data=body, headers=headers).status_code

        assert deliver(1) == 202
        proxy.stop()
        assert deliver(2) == 503
        proxy.start()
        assert deliver(3) == 202
    finally:
        proxy.stop()
        with app.app_context():
            db.engine.dispose()


def test_config_changes_reach_the_webhook_at_once_in_this_process(app, client):
    """The endpoint's cached snapshot is dropped by every change made through the services."""
    from tests.webhooks import make_integration, standard
    from wfapp.services.integrations import update_integration

    secret = make_integration()
    body, headers = standard(secret, {"type": "x", "id": "R1"})
    assert client.post("/hooks/HOOKS", data=body, headers=headers).status_code == 202
    update_integration("HOOKS", {"webhook_enabled": False})
    body, headers = standard(secret, {"type": "x", "id": "R2"})
    assert client.post("/hooks/HOOKS", data=body, headers=headers).status_code == 403
