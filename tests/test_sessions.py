"""Sessions end on the server, cookies and headers are safe, log-ins are throttled."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import PASSWORD

LOGIN = "/auth/login"


def _login(client: FlaskClient, name: str = "admin", password: str = PASSWORD) -> Any:
    return client.post(LOGIN, data={"username": name, "password": password})


def _cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _replay(app: Any, value: str) -> int:
    """Open a page with a saved session cookie in a fresh client (and a fresh app context, as
    every request of a real server has)."""
    other = app.test_client()
    other.set_cookie("session", value)
    with app.app_context():
        return other.get("/workflows/").status_code


@pytest.mark.parametrize("ending", ["logout", "password", "role", "deactivate"])
def test_a_saved_cookie_stops_working(app, client, users, ending):
    from wfapp.services.users import set_password, update_user

    _login(client, "operator")
    saved = _cookie(client)
    assert _replay(app, saved) == 200
    if ending == "logout":
        client.post("/auth/logout")
    elif ending == "password":
        set_password("operator", "a-brand-new-one")
    elif ending == "role":
        update_user("operator", "viewer", True)
    else:
        update_user("operator", "operator", False)
    assert _replay(app, saved) == 302  # back to the login page


def test_logout_ends_the_other_browsers_sessions_too(app, users):
    first, second = app.test_client(), app.test_client()
    _login(first, "author")
    _login(second, "author")
    first.post("/auth/logout")
    assert second.get("/workflows/").status_code == 302


def test_session_is_rotated_at_login(client, users):
    client.get(LOGIN)
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    _login(client)
    with client.session_transaction() as session:
        assert "planted" not in session


def test_idle_sessions_end(app, client, users):
    _login(client)
    assert client.get("/workflows/").status_code == 200
    with client.session_transaction() as session:
        session["seen"] = int(time.time()) - 61 * 60
    answer = client.get("/workflows/")
    assert answer.status_code == 302 and LOGIN in answer.headers["Location"]
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "without activity" in page


def test_change_your_own_password(client, users):
    _login(client, "viewer")
    wrong = client.post("/auth/password", data={"current_password": "nope",
                                                "password": "good-new-pass-1",
                                                "confirm": "good-new-pass-1"})
    assert wrong.status_code == 422 and "is not your current password" in wrong.get_data(
        as_text=True)
    common = client.post("/auth/password", data={"current_password": PASSWORD,
                                                 "password": "password123",
                                                 "confirm": "password123"})
    assert common.status_code == 422 and "most common passwords" in common.get_data(as_text=True)
    done = client.post("/auth/password", data={"current_password": PASSWORD,
                                               "password": "good-new-pass-1",
                                               "confirm": "good-new-pass-1"})
    assert done.status_code == 302
    assert client.get("/workflows/").status_code == 302  # logged out everywhere
    assert _login(client, "viewer", "good-new-pass-1").status_code == 302


@pytest.mark.parametrize("password", ["password", "12345678", "admin123", "aaaaaaaa",
                                      "abababab", "short"])
def test_common_passwords_are_refused(app, password):
    from wfapp.services.errors import ValidationFailed
    from wfapp.services.users import create_user

    with pytest.raises(ValidationFailed, match="password"):
        create_user("newbie", password, "viewer")


def test_common_passwords_are_refused_by_the_cli_and_the_users_page(app, runner, client,
                                                                   auth):
    out = runner.invoke(args=["user", "create", "bob", "--password", "password",
                              "--role", "viewer"])
    assert out.exit_code == 1 and "most common passwords" in out.output
    auth.login("admin")
    page = client.post("/auth/users", data={"action": "create", "username": "bob",
                                            "password": "12345678", "role": "viewer"})
    assert page.status_code == 422 and "most common passwords" in page.get_data(as_text=True)


def test_cookie_flags(app, client, users):
    answer = _login(client)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = app.test_client()
    over_https = secure.post(LOGIN, data={"username": "admin", "password": PASSWORD},
                             base_url="https://wfapp.example")
    assert "Secure" in over_https.headers["Set-Cookie"]


def test_https_behind_a_trusted_proxy(app_config, users):
    from wfapp import create_app

    app_config["TRUSTED_PROXIES"] = 1
    app = create_app(app_config)
    client = app.test_client()
    answer = client.post(LOGIN, data={"username": "admin", "password": PASSWORD},
                         headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in answer.headers["Set-Cookie"]
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize("path", [LOGIN, "/workflows/", "/api/v1/workflows", "/no-such-page",
                                  "/static/wfapp.css"])
def test_security_headers_on_every_response(client, auth, path):
    auth.login("viewer")
    answer = client.get(path)
    csp = answer.headers["Content-Security-Policy"]
    script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'self'" in script_src
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in answer.headers  # plain HTTP: no HSTS


def test_no_inline_scripts_in_templates():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "templates"
    for template in root.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template
        assert not re.search(r"\son[a-z]+=", text), template


def test_login_lockout_per_account(client, users):
    for _ in range(10):
        assert _login(client, "author", "wrong-password").status_code == 200
    locked = _login(client, "author")  # the right password, but the account is locked
    assert locked.status_code == 429
    assert "Too many failed log-ins for this account" in locked.get_data(as_text=True)
    # Other accounts are not locked by one account's failures.
    assert _login(client, "viewer").status_code == 302


def test_login_lockout_per_address(app_config, users):
    from wfapp import create_app

    app_config["LOGIN_LIMIT_ADDRESS"] = "5 per 15 minutes"
    client = create_app(app_config).test_client()
    for i in range(5):
        _login(client, f"ghost{i}", "wrong-password")
    refused = _login(client, "admin")
    assert refused.status_code == 429 and "your address" in refused.get_data(as_text=True)


def test_unknown_user_takes_as_long_as_a_wrong_password(app, users):
    from wfapp.services.users import authenticate

    def timed(name: str) -> float:
        start = time.perf_counter()
        for _ in range(3):
            assert authenticate(name, "wrong-password") is None
        return time.perf_counter() - start

    known, unknown = timed("admin"), timed("nobody-here")
    assert unknown > known * 0.5, (known, unknown)


def test_api_tokens_expire_and_revoke_at_once(app, client, users):
    from datetime import timedelta

    from wfapp.extensions import db
    from wfapp.models import ApiToken, utcnow
    from wfapp.services.users import create_token, revoke_token

    token = create_token("viewer", "short", expires_days=1)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/workflows", headers=headers).status_code == 200
    row = db.session.query(ApiToken).one()
    assert row.last_used_at is not None
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert client.get("/api/v1/workflows", headers=headers).status_code == 401
    other = create_token("viewer", "other")
    headers = {"Authorization": f"Bearer {other}"}
    assert client.get("/api/v1/workflows", headers=headers).status_code == 200
    revoke_token(db.session.query(ApiToken).filter_by(name="other").one().id)
    assert client.get("/api/v1/workflows", headers=headers).status_code == 401


def test_token_expiry_on_the_users_page_and_cli(client, auth, runner):
    auth.login("admin")
    page = client.post("/auth/users", data={"action": "token", "username": "viewer",
                                            "label": "ci", "expires_days": "30"})
    assert page.status_code == 200 and "wfa_" in page.get_data(as_text=True)
    listed = client.get("/auth/users").get_data(as_text=True)
    assert "expires " in listed
    bad = client.post("/auth/users", data={"action": "token", "username": "viewer",
                                           "expires_days": "-3"})
    assert bad.status_code == 422
    out = runner.invoke(args=["token", "create", "viewer", "--expires-days", "7"])
    assert out.exit_code == 0 and out.output.startswith("wfa_")


def test_failed_token_checks_are_throttled(app_config, users):
    from wfapp import create_app

    app_config["TOKEN_LIMIT_ADDRESS"] = "5 per 1 minute"
    client = create_app(app_config).test_client()
    for _ in range(5):
        assert client.get("/api/v1/workflows", headers={"Authorization": "Bearer wfa_nope"}
                          ).status_code == 401
    throttled = client.get("/api/v1/workflows", headers={"Authorization": "Bearer wfa_nope"})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert throttled.get_json()["error"]["code"] == "too_many_requests"


def test_throttle_storage_away_logs_one_line_and_locks_no_one_out(app_config, users, caplog,
                                                                  monkeypatch):
    """Redis away: log-ins still work (unthrottled), and each request logs a line, not a trace."""
    import logging

    from wfapp import create_app

    # Alembic's logging set-up in the session's migration disables the loggers that existed.
    monkeypatch.setattr(logging.getLogger("wfapp.throttle"), "disabled", False)

    app_config["REDIS_URL"] = "redis://127.0.0.1:9/0"  # nothing listens there
    client = create_app(app_config).test_client()
    with caplog.at_level("WARNING", logger="wfapp.throttle"):
        assert _login(client, "author", "wrong-password").status_code == 200
        assert _login(client, "author").status_code == 302
    records = [r for r in caplog.records if r.name == "wfapp.throttle"]
    assert records and all(r.exc_info is None for r in records)
    assert "throttle storage unreachable (ConnectionError" in records[0].getMessage()
