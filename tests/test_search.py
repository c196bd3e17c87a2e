"""The header search: pages, workflows, integrations and instances; Enter opens one hit."""

from __future__ import annotations

from typing import Any

import pytest

from wfapp.queue import get_queue
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.runs import start_run
from wfapp.services.search import PAGES, search


def items(client: Any, query: str) -> list[dict[str, Any]]:
    """The suggestions the header box shows for `query`."""
    return client.get("/search.json", query_string={"q": query}).get_json()["items"]


@pytest.mark.parametrize("query", ["Integration Workflows", "integration workflows",
                                   "workflows", "Workflows", "  workflows  ", "workfl"])
def test_workflows_list_is_offered(client, auth, demo, query):
    auth.login("viewer")
    first = items(client, query)[0]
    assert (first["title"], first["url"], first["kind"]) == ("Workflows", "/workflows/", "page")


def test_integration_workflows_opens_the_list_on_enter(client, auth, demo):
    auth.login("viewer")
    jump = client.get("/search", query_string={"q": "Integration Workflows", "go": "1"})
    assert jump.status_code == 302 and jump.headers["Location"] == "/workflows/"


@pytest.mark.parametrize("query", ["ORDER_SYNC", "order_sync", "order_s", "DER_SY", "sync"])
def test_workflow_code_or_part_offers_its_card(client, auth, demo, query):
    auth.login("viewer")
    hits = items(client, query)
    assert {"title": "ORDER_SYNC", "url": "/workflows/ORDER_SYNC",
            "kind": "workflow"}.items() <= hits[0].items()


@pytest.mark.parametrize("query", ["SHOP_ORDERS", "shop", "p_ord", "web shop"])
def test_integration_code_or_description_offers_its_card(client, auth, demo, query):
    auth.login("viewer")
    assert any(h["url"] == "/integrations/SHOP_ORDERS" for h in items(client, query))


def test_exact_code_ranks_first(client, auth, demo):
    create_integration({"code": "ORDER", "description": "Plain orders"})
    auth.login("viewer")
    hits = items(client, "order")
    assert hits[0]["url"] == "/integrations/ORDER" and hits[0]["exact"]
    assert [h["title"] for h in hits[1:3]] == ["ORDER_SYNC", "SHOP_ORDERS"]
    # Several hits, one of them exact: Enter opens the exact one.
    jump = client.get("/search", query_string={"q": "order", "go": "1"})
    assert jump.headers["Location"] == "/integrations/ORDER"


def test_enter_with_one_hit_opens_it_and_with_several_lists_them(client, auth, demo):
    auth.login("viewer")
    assert client.get("/search?q=shop_ord&go=1").headers["Location"] == \
        "/integrations/SHOP_ORDERS"
    listed = client.get("/search?q=fulfilment&go=1")  # the workflow and the integration
    assert listed.status_code == 200
    page = listed.get_data(as_text=True)
    assert 'href="/workflows/ORDER_SYNC"' in page and 'href="/integrations/SHOP_ORDERS"' in page
    # Without `go` (a link to the results), even one hit is listed, not opened.
    assert client.get("/search?q=shop_ord").status_code == 200


def test_nothing_found_and_empty_query(client, auth, demo):
    auth.login("viewer")
    assert "Nothing matches" in client.get("/search?q=zzzz&go=1").get_data(as_text=True)
    assert items(client, "") == [] and items(client, "   ") == []
    assert client.get("/search").status_code == 200


def test_like_wildcards_are_taken_literally(client, auth, demo):
    auth.login("viewer")
    assert items(client, "%") == [] and items(client, "ORDER%SYNC") == []
    assert {h["title"] for h in items(client, "_")} == {"ORDER_SYNC", "SHOP_ORDERS"}
    create_integration({"code": "ABCXD"})
    assert items(client, "abc_d") == []  # "_" is not LIKE's "any one character"
    assert items(client, "abc%d") == []


def test_pages_need_their_role(client, auth):
    auth.login("viewer")
    titles = [h["title"] for h in items(client, "new")]
    assert "New Workflow" not in titles and "New Integration" not in titles
    assert items(client, "users") == []
    auth.logout()
    auth.login("admin")
    assert items(client, "users")[0]["url"] == "/auth/users"
    assert {"New Workflow", "New Integration"} <= {h["title"] for h in items(client, "new")}


def test_every_page_resolves(client, auth):
    auth.login("admin")
    for page in PAGES:
        hits = items(client, page.title)
        assert hits and hits[0]["title"] == page.title, page
        assert client.get(hits[0]["url"]).status_code == 200, page


def test_record_key_finds_the_instance(client, auth, demo):
    start_run(get_integration("SHOP_ORDERS"), "import",
              [{"key": "SO-4711", "data": {"total": 5}}], "test")
    get_queue().drain()
    auth.login("viewer")
    hits = items(client, "SO-4711")
    assert len(hits) == 1 and hits[0]["kind"] == "instance"
    assert hits[0]["url"].startswith("/instances/") and "SHOP_ORDERS" in hits[0]["subtitle"]
    assert client.get("/search?q=SO-4711&go=1").headers["Location"] == hits[0]["url"]
    assert items(client, "SO-47") == []  # record keys match exactly: the table may be huge


def test_long_and_odd_queries_never_fail(client, auth, demo):
    auth.login("viewer")
    for query in ("x" * 5000, "\x00", "'; DROP TABLE workflow; --", "ä ö ü", "{}", "\\"):
        assert client.get("/search.json", query_string={"q": query}).status_code == 200
        assert client.get("/search", query_string={"q": query, "go": "1"}).status_code in (
            200, 302)


def test_search_needs_a_login(client):
    assert client.get("/search.json?q=workflows").status_code == 302


def test_service_without_role_offers_every_page(app):
    assert [h.title for h in search("users")] == ["Users"]
    assert [h.title for h in search("users", role="viewer")] == []
