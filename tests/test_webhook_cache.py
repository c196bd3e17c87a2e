"""The webhook endpoint answers from a per-process copy of the integration (settings, secret);
a change made by another process takes effect on that process's very next request.

Two apps on one database stand for two processes: `app` is where people change the
integration, `web` answers the webhooks (each app has its own copies). tests/
test_webhooks_gunicorn.py does the same across real gunicorn worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.webhooks import make_integration, standard
from wfapp import create_app, signing
from wfapp.extensions import db
from wfapp.models import Event, Integration
from wfapp.services.integrations import update_integration

ORDER = {"type": "order.paid", "id": "SO-1", "total": 12.5}


@pytest.fixture
def web(app: Flask, app_config: dict[str, Any]) -> Iterator[Any]:
    """A second app on the same database: the process that serves the webhooks."""
    other = create_app(app_config)
    yield other.test_client()
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


def events() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Event))


def send(client: Any, secret: str, payload: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    body, headers = standard(secret, payload or ORDER, **kwargs)
    return client.post("/hooks/HOOKS", data=body, headers=headers)


def version() -> int:
    db.session.expire_all()
    return db.session.scalar(select(Integration.config_version).where(
        Integration.code == "HOOKS"))


def test_every_change_bumps_the_version(app):
    make_integration()
    seen = [version()]
    update_integration("HOOKS", {"description": "x"})
    seen.append(version())
    update_integration("HOOKS", {"webhook_secret": signing.generate_secret()})
    seen.append(version())
    update_integration("HOOKS", {}, clear=["webhook_secret"])
    seen.append(version())
    assert seen == sorted(set(seen))  # each change a higher version


def test_a_rotated_secret_counts_on_the_next_request_of_another_process(app, web):
    old = make_integration(webhook_secret_grace_hours=0)
    assert send(web, old).status_code == 202  # `web` now holds a copy with the old secret
    new = signing.generate_secret()
    update_integration("HOOKS", {"webhook_secret": new})
    # Signed with the new secret: the copy refuses it, a fresh read has a newer version, and
    # the checks run again on it.
    assert send(web, new).status_code == 202
    newer = signing.generate_secret()
    update_integration("HOOKS", {"webhook_secret": newer})
    # Signed with the secret just replaced (no grace): the copy accepts it, the store sees
    # the version changed and stores nothing; checked again, it is refused.
    response = send(web, new)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert events() == 2
    assert send(web, newer).status_code == 202


def test_rotation_keeps_the_grace_period(app, web):
    old = make_integration(webhook_secret_grace_hours=24)
    assert send(web, old).status_code == 202
    new = signing.generate_secret()
    update_integration("HOOKS", {"webhook_secret": new})
    assert send(web, old).status_code == 202
    assert send(web, new).status_code == 202


@pytest.mark.parametrize(("change", "code"), [
    ({"webhook_enabled": False}, "disabled"),
    ({"enabled": False}, "disabled"),
    ({"webhook_allowed_ips": "203.0.113.0/24"}, "ip_not_allowed"),
])
def test_disabling_counts_on_the_next_request_of_another_process(app, web, change, code):
    secret = make_integration()
    assert send(web, secret).status_code == 202
    update_integration("HOOKS", change)
    response = send(web, secret)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code
    assert events() == 1


def test_a_removed_secret_counts_on_the_next_request(app, web):
    secret = make_integration()
    assert send(web, secret).status_code == 202
    update_integration("HOOKS", {}, clear=["webhook_secret"])
    response = send(web, secret)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "no_secret"


def test_a_changed_size_limit_counts_either_way(app, web):
    secret = make_integration()
    assert send(web, secret).status_code == 202
    update_integration("HOOKS", {"webhook_max_bytes": 20})
    assert send(web, secret).status_code == 413  # the copy allowed 1 MiB
    assert events() == 1
    assert send(web, secret).status_code == 413  # now from the fresh copy
    update_integration("HOOKS", {"webhook_max_bytes": 10_000})
    # The copy refuses (20 bytes); the fresh one allows it, and the body read so far is kept.
    assert send(web, secret).status_code == 202
    assert events() == 2


def test_a_changed_record_key_path_counts_on_the_next_request(app, web):
    secret = make_integration()
    assert send(web, secret).status_code == 202
    update_integration("HOOKS", {"record_key_path": "data.key"})
    response = send(web, secret, {"type": "order.paid", "id": "SO-2", "data": {"key": "K-9"}})
    assert response.status_code == 202
    event = db.session.get(Event, response.get_json()["event_id"])
    assert event.record_key == "K-9"


def test_a_redelivery_from_the_copy_is_200(app, web):
    secret = make_integration()
    body, headers = standard(secret, ORDER, msg_id="msg_same")
    assert web.post("/hooks/HOOKS", data=body, headers=headers).status_code == 202
    again = web.post("/hooks/HOOKS", data=body, headers=headers)
    assert again.status_code == 200 and again.get_json() == {"duplicate": True}
    assert events() == 1


def test_an_integration_created_again_under_the_same_code(app, web):
    secret = make_integration()
    assert send(web, secret).status_code == 202
    db.session.execute(Integration.__table__.delete())  # as another process would
    db.session.commit()
    response = send(web, secret)
    assert response.status_code == 404
    other = make_integration()
    assert send(web, other).status_code == 202


def test_hooks_open_no_session_and_skip_the_page_hooks(app, web):
    secret = make_integration()
    body, headers = standard(secret, ORDER)
    response = web.post("/hooks/HOOKS", data=body, headers=headers)
    assert response.status_code == 202
    assert "Set-Cookie" not in response.headers and "Cookie" not in response.headers.get(
        "Vary", "")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; frame-ancestors 'none'")
    # The page hooks still run for pages.
    page = web.get("/")
    assert page.status_code == 302 and "Content-Security-Policy" in page.headers
    assert "script-src" in page.headers["Content-Security-Policy"]
