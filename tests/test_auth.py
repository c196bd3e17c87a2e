"""Logging in and out, where login sends you, pages needing a login, and the Users page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import PASSWORD
from wfapp.models import ApiToken
from wfapp.services.users import authenticate, create_token, user_for_token


def login(client: Any, username: str, password: str = PASSWORD, next_url: str | None = None
          ) -> Any:
    """Post the login form, optionally with a `next` link."""
    url = "/auth/login" if next_url is None else f"/auth/login?next={next_url}"
    return client.post(url, data={"username": username, "password": password})


def test_login_page_explains_itself(client):
    page = client.get("/auth/login").get_data(as_text=True)
    assert 'for="username"' in page and 'for="password"' in page and "Log In" in page
    assert "Log out" not in page  # no navigation before logging in


def test_login_and_logout(client, users):
    response = login(client, "viewer")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert "viewer" in client.get("/integrations/").get_data(as_text=True)
    assert client.get("/auth/logout").status_code == 405  # logging out is a POST (CSRF)
    out = client.post("/auth/logout")
    assert out.headers["Location"] == "/auth/login"
    assert "You are logged out." in client.get("/auth/login").get_data(as_text=True)
    assert client.get("/integrations/").status_code == 302


@pytest.mark.parametrize("username,password", [
    ("viewer", "wrong-pass"), ("nobody", PASSWORD), ("", ""), ("viewer", "")])
def test_bad_login(client, users, username, password):
    response = login(client, username, password)
    assert response.status_code == 200
    assert client.get("/integrations/").status_code == 302
    if username and password:
        assert "Unknown user name or wrong password." in response.get_data(as_text=True)


def test_deactivated_user_cannot_log_in_and_is_logged_out(client, auth):
    from wfapp.services.users import update_user

    auth.login("viewer")
    assert client.get("/integrations/").status_code == 200
    update_user("viewer", "viewer", False)
    # The fixture's app context outlives requests here, and Flask-Login caches the user on `g`;
    # a real request starts with a fresh `g`.
    from flask import g

    g.pop("_login_user", None)
    assert client.get("/integrations/").status_code == 302  # the session no longer counts
    assert "wrong password" in login(client, "viewer").get_data(as_text=True)


def test_next_takes_you_where_you_were_headed(client, users):
    response = client.get("/workflows/ORDER_SYNC?tab=states")
    assert response.headers["Location"] == "/auth/login?next=/workflows/ORDER_SYNC?tab%3Dstates"
    target = login(client, "viewer", next_url="/workflows/ORDER_SYNC%3Ftab%3Dstates")
    assert target.headers["Location"] == "/workflows/ORDER_SYNC?tab=states"
    # Already logged in: the login page passes straight on.
    again = client.get("/auth/login?next=/workflows/")
    assert again.headers["Location"] == "/workflows/"


@pytest.mark.parametrize("evil", [
    "https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example",
    "javascript:alert(1)", "http:/evil.example", "evil.example",
    "///evil.example"])
def test_next_never_leaves_the_site(client, users, evil):
    response = client.post("/auth/login", query_string={"next": evil},
                           data={"username": "viewer", "password": PASSWORD})
    location = response.headers["Location"]
    assert location == "/", (evil, location)


def test_next_with_a_tab_character_is_refused(client, users):
    response = client.post("/auth/login", query_string={"next": "/\t/evil.example"},
                           data={"username": "viewer", "password": PASSWORD})
    assert response.headers["Location"] == "/"


def test_every_page_but_login_needs_a_login(app, client):
    open_endpoints = {"auth.login", "static", "bootstrap.static"}
    checked = 0
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint in open_endpoints or getattr(view, "_wfapp_public", False):
            continue
        url = re.sub(r"<(?:\w+:)?([^>]+)>", "1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method)
            assert response.status_code in (302, 401), (method, rule.rule, response.status_code)
            if response.status_code == 302:
                assert "/auth/login" in response.headers["Location"]
            checked += 1
    assert checked > 30


def test_public_endpoints_are_only_login_and_machine_hooks(app):
    public = {rule.endpoint for rule in app.url_map.iter_rules()
              if getattr(app.view_functions[rule.endpoint], "_wfapp_public", False)}
    assert "auth.login" in public
    # demo_receiver.submit: the demo's stand-in fulfilment API, which the demo's actions call.
    assert all(e in ("auth.login", "api.openapi", "ops.healthz", "ops.readyz", "ops.metrics",
                     "demo_receiver.submit")
               or "hook" in e or "bc" in e
               or "notification" in e for e in public), public


# --- the Users page ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "operator", "author"])
def test_users_page_is_for_admins_only(client, auth, role):
    auth.login(role)
    assert client.get("/auth/users").status_code == 403
    assert client.post("/auth/users", data={"action": "create", "username": "eve",
                                            "password": "long-password",
                                            "role": "admin"}).status_code == 403
    assert client.post("/auth/users", data={"action": "update", "username": role,
                                            "role": "admin", "active": "on"}).status_code == 403
    assert authenticate("eve", "long-password") is None
    assert 'href="/auth/users"' not in client.get("/integrations/").get_data(as_text=True)


def test_users_page_lists_users_with_roles(client, auth):
    auth.login("admin")
    page = client.get("/auth/users").get_data(as_text=True)
    for role in ("viewer", "operator", "author", "admin"):
        assert f'id="user-{role}"' in page
    assert '<option value="author" selected>author</option>' in page
    for field_id in ("new-username", "new-password", "new-role"):
        assert f'for="{field_id}"' in page
    assert "There is always at least one active admin" in page


def test_create_user(client, auth):
    auth.login("admin")
    response = client.post("/auth/users", data={"action": "create", "username": "zoe",
                                                "password": "long-password", "role": "author"})
    assert response.headers["Location"] == "/auth/users"
    assert authenticate("zoe", "long-password").role == "author"
    assert "User zoe created." in client.get("/auth/users").get_data(as_text=True)


@pytest.mark.parametrize("data,field,message", [
    ({"username": "yan", "password": "short"}, "new-password", "at least 8 characters"),
    ({"username": "viewer", "password": "long-password"}, "new-username", "already exists"),
    ({"username": "bad name!", "password": "long-password"}, "new-username", "letters, digits"),
    ({"username": "", "password": "long-password"}, "new-username", "required"),
    ({"username": "yan", "password": "long-password", "role": "boss"}, "new-role", "valid"),
])
def test_create_user_errors_on_their_fields(client, auth, data, field, message):
    auth.login("admin")
    response = client.post("/auth/users", data={"action": "create", "role": "viewer", **data})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    after = page[page.index(f'id="{field}"'):]
    feedback = re.search(r'class="invalid-feedback[^"]*"[^>]*>(.*?)</div>', after, re.S)
    assert feedback and message.lower() in feedback.group(1).lower(), feedback
    assert authenticate("yan", "long-password") is None
    assert "long-password" not in page  # a typed password is never echoed


def test_change_role_and_deactivate(client, auth):
    auth.login("admin")
    client.post("/auth/users", data={"action": "update", "username": "viewer",
                                     "role": "operator", "active": "on"})
    assert authenticate("viewer", PASSWORD).role == "operator"
    client.post("/auth/users", data={"action": "update", "username": "viewer",
                                     "role": "operator"})  # the active box unticked
    assert authenticate("viewer", PASSWORD) is None
    page = client.get("/auth/users").get_data(as_text=True)
    assert "inactive" in page[page.index('id="user-viewer"'):]


@pytest.mark.parametrize("change", [{"role": "author", "active": "on"}, {"role": "admin"}])
def test_last_active_admin_is_kept(client, auth, change):
    auth.login("admin")
    response = client.post("/auth/users", data={"action": "update", "username": "admin",
                                                **change})
    assert response.status_code == 422
    row = response.get_data(as_text=True)
    row = row[row.index('id="user-admin"'):row.index('id="user-author"')
              if 'id="user-author"' in row[row.index('id="user-admin"'):] else None]
    assert "admin is the last active admin" in row
    assert authenticate("admin", PASSWORD).role == "admin"


def test_an_admin_can_step_down_when_another_admin_exists(client, auth):
    auth.login("admin")
    client.post("/auth/users", data={"action": "update", "username": "author",
                                     "role": "admin", "active": "on"})
    client.post("/auth/users", data={"action": "update", "username": "admin",
                                     "role": "viewer", "active": "on"})
    assert authenticate("admin", PASSWORD).role == "viewer"
    assert client.get("/auth/users").status_code == 403  # the change applies at once
    last = client.post("/auth/login", data={"username": "author", "password": PASSWORD})
    assert last.status_code == 302
    refused = client.post("/auth/users", data={"action": "update", "username": "author",
                                               "role": "viewer", "active": "on"})
    assert "last active admin" in refused.get_data(as_text=True)


def test_update_unknown_user_and_unknown_action(client, auth):
    auth.login("admin")
    ghost = client.post("/auth/users", data={"action": "update", "username": "ghost",
                                             "role": "viewer", "active": "on"})
    assert ghost.status_code == 422 and "does not exist" in ghost.get_data(as_text=True)
    assert client.post("/auth/users", data={"action": "explode"}).status_code == 400
    bad_role = client.post("/auth/users", data={"action": "update", "username": "viewer",
                                                "role": "root", "active": "on"})
    assert bad_role.status_code == 422


def test_api_token_is_shown_once_and_can_be_revoked(client, auth):
    auth.login("admin")
    response = client.post("/auth/users", data={"action": "token", "username": "operator",
                                                "label": "erp-sync"})
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    token = page.split('<code class="user-select-all">')[1].split("<")[0]
    assert token.startswith("wfa_") and user_for_token(token).username == "operator"
    listing = client.get("/auth/users").get_data(as_text=True)
    assert token not in listing and "erp-sync" in listing
    assert client.get("/api/v1/workflows", headers={
        "Authorization": f"Bearer {token}"}).status_code == 200
    token_id = ApiToken.query.filter_by(name="erp-sync").one().id
    revoked = client.post("/auth/users", data={"action": "revoke", "username": "operator",
                                               "token_id": str(token_id)})
    assert revoked.status_code == 302 and user_for_token(token) is None
    again = client.post("/auth/users", data={"action": "revoke", "token_id": str(token_id)})
    assert again.status_code == 422
    assert client.post("/auth/users", data={"action": "revoke",
                                            "token_id": "x"}).status_code == 400


def test_token_errors(client, auth):
    auth.login("admin")
    ghost = client.post("/auth/users", data={"action": "token", "username": "ghost"})
    assert ghost.status_code == 422 and "does not exist" in ghost.get_data(as_text=True)
    long_label = client.post("/auth/users", data={"action": "token", "username": "viewer",
                                                  "label": "x" * 65})
    assert long_label.status_code == 422 and "at most 64" in long_label.get_data(as_text=True)


def test_deactivated_users_tokens_stop_working(client, auth):
    token = create_token("viewer")
    from wfapp.services.users import update_user

    update_user("viewer", "viewer", False)
    assert user_for_token(token) is None
    assert client.get("/api/v1/workflows", headers={
        "Authorization": f"Bearer {token}"}).status_code == 401


def test_nul_characters_never_reach_the_database(client, auth):
    assert login(client, "view\x00er").status_code == 200
    auth.login("admin")
    for data in ({"action": "create", "username": "a\x00b", "password": "long-password",
                  "role": "viewer"},
                 {"action": "update", "username": "a\x00b", "role": "viewer", "active": "on"},
                 {"action": "token", "username": "a\x00b"},
                 {"action": "token", "username": "viewer", "label": "x\x00"}):
        assert client.post("/auth/users", data=data).status_code == 422, data
