"""The /plugins admin page: every loaded plugin and what it registered; admins only."""

from __future__ import annotations

import html

import pytest


@pytest.fixture
def app_config(app_config):
    app_config["PLUGINS"] = ["tests.plugins.sample_trigger"]
    return app_config


def _section(page: str, plugin: str) -> str:
    """The page's section about one plugin."""
    start = page.index(f'data-plugin="{plugin}"')
    end = page.find('class="mt-4 plugin-detail"', start)
    return html.unescape(page[start:end if end > 0 else None])


def test_admins_see_each_plugin_and_its_contributions(client, auth):
    auth.login("admin")
    response = client.get("/plugins")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "9 loaded" in page
    sample = _section(page, "tests.plugins.sample_trigger")
    assert "PLUGINS" in sample and "built-in" not in sample
    assert "on_sftp_file" in sample and "On SFTP File" in sample and "suffix" in sample
    assert "sftp_host" in sample and "SFTP Host (string)" in sample
    assert "/sample/ping" in sample and "public (no login)" in sample
    assert "sample_trigger.ping" in sample
    assert "sftp-poll" in sample and "every 60 s" in sample
    assert "tests.plugins.sample_trigger.poll" in sample
    assert "SFTP drop" in sample and "notify" in sample
    assert "not from an installed distribution" in page  # the test plugin is not installed
    manual = _section(page, "wfapp.builtin_plugins.manual")
    assert "built-in" in manual and "wfapp 0.1.0" in manual and "button_label" in manual
    webhook = _section(page, "wfapp.builtin_plugins.on_webhook")
    assert "webhook_secret" in webhook and "write-only secret" in webhook


@pytest.mark.parametrize("role", ["viewer", "operator", "author"])
def test_other_roles_get_403(client, auth, role):
    auth.login(role)
    assert client.get("/plugins").status_code == 403
    header = client.get("/integrations/").get_data(as_text=True)
    assert 'href="/plugins"' not in header


def test_anonymous_users_log_in_first(client):
    response = client.get("/plugins")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_admins_find_it_in_the_header_and_the_search(client, auth):
    auth.login("admin")
    header = client.get("/integrations/").get_data(as_text=True)
    users_link = header.index('href="/auth/users"')
    assert header.index('href="/plugins"') > users_link  # next to Users
    found = client.get("/search.json?q=plugins").get_json()["items"]
    assert found[0]["url"] == "/plugins"
    auth.logout()
    auth.login("author")
    assert all(hit["url"] != "/plugins"
               for hit in client.get("/search.json?q=plugins").get_json()["items"])
