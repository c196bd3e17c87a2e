"""The API's boundaries: tokens, roles, and every kind of bad input answered by a JSON 4xx."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from tests.strategies import DB_PROFILE
from wfapp.demo import ORDER_SYNC, SHOP_ORDERS
from wfapp.extensions import db
from wfapp.models import AuditEntry, Event, Instance, Integration, Run, Workflow
from wfapp.services.definitions import import_document, workflow_to_dict
from wfapp.services.integrations import create_integration

API = "/api/v1"
GOOD_DOC = copy.deepcopy(ORDER_SYNC)
GOOD_DOC["workflow"]["code"] = "OTHER"

#: (method, path, a valid body or None, the least role that may call it)
ENDPOINTS = [
    ("get", "/workflows", None, "viewer"),
    ("post", "/workflows/import", GOOD_DOC, "author"),
    ("get", "/workflows/ORDER_SYNC/export", None, "viewer"),
    ("post", "/workflows/ORDER_SYNC/copy", {"new_code": "COPY"}, "author"),
    ("patch", "/workflows/ORDER_SYNC", {"description": "Changed"}, "author"),
    ("delete", "/workflows/ORDER_SYNC", None, "author"),
    ("get", "/integrations", None, "viewer"),
    ("post", "/integrations", {"code": "NEW_INT"}, "author"),
    ("get", "/integrations/SHOP_ORDERS", None, "viewer"),
    ("patch", "/integrations/SHOP_ORDERS", {"description": "Changed"}, "author"),
    ("get", "/trigger-types", None, "viewer"),
    ("post", "/integrations/SHOP_ORDERS/runs", {"direction": "import", "records": []},
     "operator"),
    ("get", "/instances", None, "viewer"),
    ("get", "/events", None, "viewer"),
]
RANK = {"viewer": 0, "operator": 1, "author": 2, "admin": 3}


def _call(client, method: str, path: str, headers: dict[str, str] | None = None,
          body: Any = None) -> Any:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if body is not None:
        kwargs["json"] = body
    return getattr(client, method)(API + path, **kwargs)


def _error(response: Any) -> dict[str, Any]:
    """The error object, after checking the documented shape and a JSON content type."""
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] and body["error"]["message"]
    return body["error"]


def _paths(response: Any) -> list[str]:
    return [d["path"] for d in _error(response)["details"]]


@pytest.mark.parametrize(("method", "path", "body", "role"), ENDPOINTS)
def test_every_endpoint_needs_a_valid_token(client, users, demo, method, path, body, role):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YTpi"},
                    {"Authorization": "Bearer"}, {"Authorization": "bearer "}):
        response = _call(client, method, path, headers, body)
        assert response.status_code == 401, headers
        assert _error(response)["code"] == "unauthorized"
    assert db.session.scalar(select(func.count()).select_from(Workflow)) == 1


@pytest.mark.parametrize(("method", "path", "body", "role"), ENDPOINTS)
def test_every_role_boundary(client, tokens, demo, method, path, body, role):
    for name, headers in tokens.items():
        response = _call(client, method, path, headers, body)
        if RANK[name] < RANK[role]:
            assert response.status_code == 403, (name, path)
            assert _error(response)["code"] == "forbidden"
            assert role in _error(response)["message"]
        else:
            assert response.status_code in (200, 201, 204), (name, path, response.get_json())
            return  # the lowest allowed role succeeded; a second call could conflict


def test_a_deactivated_users_token_is_refused(client, tokens, users):
    users["viewer"].active = False
    db.session.commit()
    assert client.get(f"{API}/workflows", headers=tokens["viewer"]).status_code == 401


BAD_BODIES = [
    # (content type, raw body, status, error code)
    ("application/json", "{oops", 400, "invalid_json"),
    ("application/json", "", 400, "invalid_json"),
    ("application/json", '{"enabled": NaN}', 400, "invalid_json"),
    ("application/json", '{"enabled": Infinity}', 400, "invalid_json"),
    ("application/json", "[" * 100_000 + "]" * 100_000, 400, "invalid_json"),
    ("application/json", b'{"description": "\xff"}', 400, "invalid_json"),
    ("text/plain", '{"enabled": true}', 415, "unsupported_media_type"),
    ("application/x-www-form-urlencoded", "enabled=true", 415, "unsupported_media_type"),
    (None, '{"enabled": true}', 415, "unsupported_media_type"),
    ("application/json", "[1, 2]", 422, "validation_failed"),
    ("application/json", '"text"', 422, "validation_failed"),
    ("application/json", "null", 422, "validation_failed"),
    ("application/json", "42", 422, "validation_failed"),
]
WRITES = [("post", "/workflows/import"), ("post", "/workflows/ORDER_SYNC/copy"),
          ("patch", "/workflows/ORDER_SYNC"), ("post", "/integrations"),
          ("patch", "/integrations/SHOP_ORDERS"), ("post", "/integrations/SHOP_ORDERS/runs"),
          ("post", "/instances/1/fire"), ("post", "/instances/1/reset")]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_malformed_bodies(client, tokens, demo, method, path):
    before = _snapshot()
    for content_type, raw, status, code in BAD_BODIES:
        kwargs = {"data": raw, "headers": tokens["admin"]}
        if content_type:
            kwargs["content_type"] = content_type
        response = getattr(client, method)(API + path, **kwargs)
        assert response.status_code == status, (content_type, str(raw)[:30], response.json)
        assert _error(response)["code"] == code
    assert _snapshot() == before


def test_unknown_fields_and_wrong_types_name_the_field(client, tokens, demo):
    h = tokens["author"]
    cases = [
        ("patch", "/workflows/ORDER_SYNC", {"enabled": "no"}, ["enabled"]),
        ("patch", "/workflows/ORDER_SYNC", {"enabled": 1}, ["enabled"]),
        ("patch", "/workflows/ORDER_SYNC", {"enabled": None}, ["enabled"]),
        ("patch", "/workflows/ORDER_SYNC", {"description": 1}, ["description"]),
        ("patch", "/workflows/ORDER_SYNC", {"description": None}, ["description"]),
        ("patch", "/workflows/ORDER_SYNC", {"description": 1, "enabled": "x"},
         ["enabled", "description"]),
        ("patch", "/workflows/ORDER_SYNC", {"states": [], "code": "X"}, ["states", "code"]),
        ("post", "/workflows/ORDER_SYNC/copy", {}, ["new_code"]),
        ("post", "/workflows/ORDER_SYNC/copy", {"new_code": 5}, ["new_code"]),
        ("post", "/workflows/ORDER_SYNC/copy", {"new_code": "A", "x": 1}, ["x"]),
        ("post", "/integrations", {"code": "A", "secret": "x"}, ["secret"]),
        ("patch", "/integrations/SHOP_ORDERS", {"enabled": "true"}, ["enabled"]),
        ("patch", "/integrations/SHOP_ORDERS", {"instance_mode": None}, ["instance_mode"]),
    ]
    before = _snapshot()
    for method, path, body, fields in cases:
        response = _call(client, method, path, h, body)
        assert response.status_code == 422, (path, body)
        assert _error(response)["code"] == "validation_failed"
        assert sorted(_paths(response)) == sorted(fields), (body, _paths(response))
        for field in fields:
            assert field in _error(response)["message"]
    assert _snapshot() == before


def test_import_documents_that_are_not_storable(client, tokens, demo):
    h = tokens["author"]

    def doc(change):
        d = copy.deepcopy(GOOD_DOC)
        change(d["workflow"])
        return d

    cases = [
        (doc(lambda w: w["transitions"][0].update(priority=2**40)),
         "workflow.transitions[0].priority"),
        (doc(lambda w: w["transitions"][0].update(priority=10**30)),
         "workflow.transitions[0].priority"),
        (doc(lambda w: w["states"][0].update(timeout_hours=1e300)),
         "workflow.states[0].timeout_hours"),
        (doc(lambda w: w["states"][0].update(timeout_hours=10**90)),
         "workflow.states[0].timeout_hours"),
        (doc(lambda w: w.update(code="X" * 300)), "workflow.code"),
        (doc(lambda w: w["states"][1].update(description="d" * 1000)),
         "workflow.states[1].description"),
        ({"format": "wfapp.workflow/v2", "workflow": GOOD_DOC["workflow"]}, "format"),
        ([GOOD_DOC], "document"),
        ({}, "format"),
    ]
    before = _snapshot()
    for body, path in cases:
        response = _call(client, "post", "/workflows/import", h, body)
        assert response.status_code == 422, path
        assert path in _paths(response), _paths(response)
    # A number of more than 100 digits is refused by the input boundary, before any rule.
    huge = _call(client, "post", "/workflows/import", h,
                 doc(lambda w: w["states"][0].update(timeout_hours=10**400)))
    assert huge.status_code == 400 and "more than 100 digits" in huge.get_data(as_text=True)
    assert _snapshot() == before


def test_nul_characters_are_refused_not_a_500(client, tokens, demo):
    h = tokens["author"]
    doc = copy.deepcopy(GOOD_DOC)
    doc["workflow"]["description"] = "a\x00b"
    doc["workflow"]["transitions"][0]["capture"] = {"no": "event.\x00"}
    before = _snapshot()
    for method, path, body, fields in [
        ("post", "/workflows/import", doc,
         ["workflow.description", "workflow.transitions[0].capture.no"]),
        ("patch", "/workflows/ORDER_SYNC", {"description": "\x00"}, ["description"]),
        ("post", "/integrations", {"code": "N", "description": "x\x00"}, ["description"]),
        ("patch", "/integrations/SHOP_ORDERS", {"record_key_path": "id\x00"},
         ["record_key_path"]),
        ("post", "/integrations/SHOP_ORDERS/runs",
         {"direction": "import", "records": [{"key": "K\x00"}]}, ["records[0].key"]),
        ("patch", "/workflows/ORDER_SYNC", {"\x00": 1}, ["\x00"]),
    ]:
        response = _call(client, method, path, h, body)
        assert response.status_code == 422, (path, response.get_json())
        assert _paths(response) == fields
    assert _snapshot() == before
    assert client.get(f"{API}/workflows/A%00B/export", headers=h).status_code == 404
    assert client.get(f"{API}/integrations/%00", headers=h).status_code == 404
    for url in ("/instances?record_key=a%00", "/workflows?cursor=eyJhZnRlciI6IlxcdTAwMDAifQ"):
        response = client.get(API + url, headers=h)
        assert response.status_code == 422 and len(_paths(response)) == 1


@pytest.mark.parametrize("url", [
    "/workflows?limit=abc", "/workflows?limit=0", "/workflows?limit=501", "/workflows?limit=-1",
    "/workflows?limit=1.5", "/workflows?cursor=!!!", "/workflows?cursor=bm90IGpzb24",
    "/workflows?cursor=eyJhZnRlciI6IDF9", "/workflows?cursor=W10", "/workflows?colour=red",
    "/integrations?limit=x", "/integrations?cursor=zzz", "/integrations?sort=code",
    "/workflows/ORDER_SYNC/export?pretty=1", "/trigger-types?x=1",
    "/instances?limit=1000", "/instances?active=maybe", "/instances?flavour=1",
    "/events?cursor=abc", "/events?nope=1",
])
def test_bad_query_parameters(client, tokens, demo, url):
    response = client.get(API + url, headers=tokens["viewer"])
    assert response.status_code == 422, response.get_json()
    name = url.split("?")[1].split("=")[0]
    assert _paths(response) == [name]


def test_bad_replace_flag(client, tokens, demo):
    for flag in ("maybe", "2", "TRUEISH"):
        response = client.post(f"{API}/workflows/import?replace={flag}",
                               headers=tokens["author"], json=GOOD_DOC)
        assert response.status_code == 422 and _paths(response) == ["replace"]
    unknown = client.post(f"{API}/workflows/import?force=true", headers=tokens["author"],
                          json=GOOD_DOC)
    assert unknown.status_code == 422 and _paths(unknown) == ["force"]
    assert db.session.scalar(select(func.count()).select_from(Workflow)) == 1


def test_unknown_codes_are_404(client, tokens, demo):
    h = tokens["admin"]
    for method, path, body in [
        ("get", "/workflows/NOPE/export", None), ("post", "/workflows/NOPE/copy",
                                                  {"new_code": "X"}),
        ("patch", "/workflows/NOPE", {"enabled": True}), ("delete", "/workflows/NOPE", None),
        ("get", "/integrations/NOPE", None), ("patch", "/integrations/NOPE", {}),
        ("post", "/integrations/NOPE/runs", {"direction": "import", "records": []}),
        ("get", "/instances/999", None),
    ]:
        response = _call(client, method, path, h, body)
        assert response.status_code == 404, path
        assert _error(response)["code"] == "not_found"
        assert "NOPE" in _error(response)["message"] or "999" in _error(response)["message"]


def test_unknown_routes_and_methods_answer_json(client, tokens, users):
    h = tokens["admin"]
    for method, path, status, code in [
        ("get", "/nothing-here", 404, "not_found"), ("get", "/workflows/A/B/C", 404, "not_found"),
        ("post", "/nothing-here", 404, "not_found"),
        ("put", "/workflows", 405, "method_not_allowed"),
        ("delete", "/workflows", 405, "method_not_allowed"),
        ("get", "/workflows/import", 405, "method_not_allowed"),
        ("put", "/workflows/ORDER_SYNC", 405, "method_not_allowed"),
        ("post", "/integrations/SHOP_ORDERS", 405, "method_not_allowed"),
        ("delete", "/integrations/SHOP_ORDERS", 405, "method_not_allowed"),
        ("post", "/trigger-types", 405, "method_not_allowed"),
    ]:
        for headers in (h, {}):
            response = _call(client, method, path, headers)
            assert response.status_code == status, (method, path)
            assert _error(response)["code"] == code


def test_an_unexpected_error_is_json_and_rolls_back(app, client, tokens, demo, monkeypatch):
    from wfapp.services import workflows

    def broken(*args: Any, **kwargs: Any) -> Any:
        db.session.add(Workflow(code="HALF", description="", initial_state="A"))
        db.session.flush()
        raise RuntimeError("boom")

    monkeypatch.setattr(workflows, "list_workflows", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.get(f"{API}/workflows", headers=tokens["viewer"])
    assert response.status_code == 500 and _error(response)["code"] == "internal_error"
    assert "boom" not in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Workflow)) == 1


# --- fuzzing --------------------------------------------------------------------------------------


def _snapshot() -> Any:
    """Everything a write endpoint could change, as plain data."""
    db.session.expire_all()
    workflows = [workflow_to_dict(w) for w in db.session.scalars(
        select(Workflow).order_by(Workflow.code))]
    integrations = [(i.code, i.description, i.workflow_id, i.instance_mode, i.enabled,
                     i.record_url_template, json.dumps(i.settings, sort_keys=True))
                    for i in db.session.scalars(select(Integration).order_by(Integration.code))]
    counts = [db.session.scalar(select(func.count()).select_from(m))
              for m in (Run, Event, Instance, AuditEntry)]
    return workflows, integrations, counts


def _reset() -> None:
    """Back to the demo only (users and tokens stay), between hypothesis examples."""
    db.session.rollback()
    keep = {"user", "api_token"}
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            if table.name in keep:
                continue
            # The audit log refuses row deletes on PostgreSQL (append-only); emptying it for a
            # test is a TRUNCATE there.
            verb = "TRUNCATE" if conn.dialect.name == "postgresql" else "DELETE FROM"
            conn.execute(text(f'{verb} "{table.name}"' + (" CASCADE" if verb == "TRUNCATE"
                                                         else "")))
    import_document(ORDER_SYNC)
    create_integration(dict(SHOP_ORDERS))


SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=8)
           | st.sampled_from(["", "ORDER_SYNC", "SHOP_ORDERS", "per_run", "x" * 600, "NEW",
                              "import", "https://x/{record_key}"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
KEYS = {
    "/workflows/import": ["format", "workflow"],
    "/workflows/ORDER_SYNC/copy": ["new_code"],
    "/workflows/ORDER_SYNC": ["enabled", "description"],
    "/integrations": ["code", "description", "workflow_code", "instance_mode", "enabled",
                      "record_url_template", "webhook_secret", "record_key_path",
                      "bc_client_state"],
    "/integrations/SHOP_ORDERS": ["description", "workflow_code", "instance_mode", "enabled",
                                  "record_url_template", "webhook_secret", "event_type_path"],
    "/integrations/SHOP_ORDERS/runs": ["direction", "records"],
}


@st.composite
def fuzzed_request(draw: Any) -> tuple[str, str, Any]:
    """A write endpoint and a body: any JSON, or an object of its own keys with any values."""
    method, path = draw(st.sampled_from(WRITES[:6]))
    keys = KEYS[path]
    body = draw(st.one_of(JSON, st.dictionaries(st.sampled_from([*keys, "extra"]), JSON,
                                                max_size=len(keys) + 1),
                          st.fixed_dictionaries({k: JSON for k in keys})))
    if path == "/workflows/import" and draw(st.booleans()):
        body = copy.deepcopy(ORDER_SYNC)
        where = draw(st.sampled_from(["workflow", "states", "transitions"]))
        target = body["workflow"] if where == "workflow" else draw(
            st.sampled_from(body["workflow"][where]))
        target[draw(st.sampled_from([*target, "extra"]))] = draw(JSON)
    return method, path, body


FUZZ = settings(DB_PROFILE, max_examples=max(60, DB_PROFILE.max_examples))


@FUZZ
@given(call=fuzzed_request())
def test_fuzzed_bodies_never_5xx_and_refusals_write_nothing(client, tokens, call):
    _reset()
    method, path, body = call
    before = _snapshot()
    query = "?replace=true" if path == "/workflows/import" else ""
    response = getattr(client, method)(API + path + query, headers=tokens["admin"], json=body)
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        _error(response)
        assert _snapshot() == before
    else:
        assert response.is_json
