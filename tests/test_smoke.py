"""The app starts, the plugins load, pages need a login."""

from __future__ import annotations


def test_login_required(client):
    response = client.get("/workflows/")
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


def test_login_and_list(client, auth, demo):
    assert auth.login("viewer").status_code == 302
    page = client.get("/workflows/").get_data(as_text=True)
    assert "ORDER_SYNC" in page


def test_bad_login(client, users):
    page = client.post("/auth/login", data={"username": "admin", "password": "nope"})
    assert "wrong password" in page.get_data(as_text=True)


def test_trigger_types_registered(app):
    registry = app.extensions["wfapp"]["registry"]
    assert list(registry.trigger_types) == [
        "manual", "on_import", "on_export", "on_webhook", "on_scheduled_poll", "on_bc_event",
        "on_action_result"]
