"""The admin's Users page."""

from __future__ import annotations

from wfapp.services.users import authenticate, user_for_token


def test_only_admins(client, auth):
    auth.login("author")
    assert client.get("/auth/users").status_code == 403


def test_create_update_token_and_last_admin(client, auth):
    auth.login("admin")
    assert "operator" in client.get("/auth/users").get_data(as_text=True)
    client.post("/auth/users", data={"action": "create", "username": "zoe",
                                     "password": "long-password", "role": "author"})
    assert authenticate("zoe", "long-password").role == "author"
    short = client.post("/auth/users", data={"action": "create", "username": "yan",
                                             "password": "x", "role": "viewer"})
    assert short.status_code == 422 and "at least 8 characters" in short.get_data(as_text=True)
    client.post("/auth/users", data={"action": "update", "username": "zoe", "role": "viewer"})
    assert authenticate("zoe", "long-password") is None  # deactivated (box unchecked)
    last = client.post("/auth/users", data={"action": "update", "username": "admin",
                                            "role": "viewer", "active": "on"})
    assert "last active admin" in last.get_data(as_text=True)
    page = client.post("/auth/users", data={"action": "token", "username": "operator"})
    token = page.get_data(as_text=True).split('<code class="user-select-all">')[1].split("<")[0]
    assert user_for_token(token).username == "operator"
