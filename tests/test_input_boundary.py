"""One input boundary: the same bad bytes get the same clear 4xx through every door."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.inputs import InputError, parse_csv, parse_id, parse_json
from wfapp.models import Event, Instance, Run, Workflow

API = "/api/v1"
BAD_BODIES = [
    (b"[" * 100_000, "nested too deeply"),
    (b"[" + b"9" * 5000 + b"]", "more than 100 digits"),
    (b'[{"key": "A", "data": {"x": NaN}}]', "not valid JSON"),
    (b'[{"key": "A", "data": {"x": Infinity}}]', "not valid JSON"),
    (b'[{"key": "A", "data": {"x": 1e999}}]', "too large"),
    (b'[{"key": "A", "data": {"a\\u0000": 1}}]', "NUL characters"),
    (b'[{"key": "A\\u0000", "data": {}}]', "NUL characters"),
    (b'[{"key": "A", "key": "B"}]', "twice in one object"),
    (b"\xff\xfe[]", "not UTF-8 text"),
    (b"[" * 70 + b"]" * 70, "nested more than 64 levels"),
]


def _written() -> tuple[int, int, int, int]:
    db.session.rollback()
    return tuple(db.session.scalar(select(func.count()).select_from(m))
                 for m in (Run, Event, Instance, Workflow))  # type: ignore[return-value]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_parse_json_names_the_problem(body, message):
    with pytest.raises(InputError) as caught:
        parse_json(body)
    assert message in caught.value.message


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_every_door_refuses_alike(client, auth, tokens, demo, body, message):
    """Run upload page, workflow import page, runs API and workflow import API."""
    before = _written()
    auth.login("author")
    upload = client.post("/runs/new", data={
        "integration": "SHOP_ORDERS", "direction": "import",
        "file": (io.BytesIO(body), "records.json")}, content_type="multipart/form-data")
    assert upload.status_code == 422 and message in upload.get_data(as_text=True)
    wf = client.post("/workflows/import", data={"file": (io.BytesIO(body), "w.json")},
                     content_type="multipart/form-data")
    assert wf.status_code == 422 and message in wf.get_data(as_text=True)
    for path in ("/integrations/SHOP_ORDERS/runs", "/workflows/import"):
        api = client.post(API + path, data=body, headers={**tokens["author"],
                                                          "Content-Type": "application/json"})
        assert api.status_code in (400, 422), (path, api.status_code)
        assert message in json.dumps(api.get_json()), api.get_json()
    assert _written() == before


def test_csv_uploads(client, auth, demo):
    auth.login("operator")
    for body, message in [(b"key,status\nA\x00,success\n", "NUL characters"),
                          (b"\xff\xfekey\n", "not UTF-8 text"),
                          (b"key,status\nA,success,extra\n", "more fields than the header"),
                          (b"", "a CSV file needs a header row")]:
        answer = client.post("/runs/new", data={
            "integration": "SHOP_ORDERS", "direction": "import",
            "file": (io.BytesIO(body), "records.csv")}, content_type="multipart/form-data")
        assert answer.status_code == 422 and message in answer.get_data(as_text=True), body
    assert parse_csv(b"\xef\xbb\xbfkey,total\nA,5\n") == [{"key": "A", "total": "5"}]


@pytest.mark.parametrize("raw", ["0", "-1", "9223372036854775808", "99999999999999999999",
                                 "1e3", "١٢", " ", "x"])
def test_ids_out_of_range(raw):
    assert parse_id(raw) is None


def test_huge_ids_are_404_or_422_never_500(client, auth, tokens, demo):
    big = str(2**63)
    h = tokens["operator"]
    for method, path, body in [
            ("get", f"/instances/{big}", None), ("get", f"/runs/{big}", None),
            ("delete", f"/instances/{big}", None), ("post", f"/events/{big}/replay", {}),
            ("post", f"/instances/{big}/fire", {"transition": "EXPIRE", "comment": ""}),
            ("post", f"/instances/{big}/reset", {"state": "NEW", "note": "x"}),
            ("get", "/instances/0", None)]:
        answer = getattr(client, method)(API + path, headers=h, json=body)
        assert answer.status_code == 404, (path, answer.status_code)
    for url in (f"/instances?run_id={big}", f"/events?run_id={big}",
                f"/events?instance_id={big}", "/events?run_id=0", f"/events?cursor={big}"):
        answer = client.get(API + url, headers=h)
        assert answer.status_code == 422, (url, answer.status_code)
    auth.login("viewer")
    for path in (f"/instances/{big}", f"/events/{big}", f"/runs/{big}", "/runs/0"):
        assert client.get(path).status_code == 404, path


def test_nan_never_reaches_the_instances_api(client, tokens, demo, app):
    """NaN is refused at the door, so the instances API always emits valid JSON."""
    body = b'{"direction": "import", "records": [{"key": "N", "data": {"total": NaN}}]}'
    answer = client.post(f"{API}/integrations/SHOP_ORDERS/runs", data=body,
                         headers={**tokens["operator"], "Content-Type": "application/json"})
    assert answer.status_code == 400
    listed = client.get(f"{API}/instances", headers=tokens["viewer"])
    json.loads(listed.get_data(as_text=True))  # strict JSON


def _doc(**changes: Any) -> dict[str, Any]:
    from wfapp.services.definitions import FORMAT

    return {"format": FORMAT, "workflow": {
        "code": "LIMITS", "initial_state": "A", "states": [{"code": "A", "is_initial": True},
                                                          {"code": "B"}],
        "transitions": [{"code": "GO", "from_state": "A", "to_state": "B",
                         "trigger_type": "manual", **changes}]}}


@pytest.mark.parametrize(("changes", "place", "message"), [
    ({"conditions": [{"field": "event.x", "operator": "eq", "value": "v" * 5_000_000}]},
     "conditions[0].value", "at most 1000 characters"),
    ({"conditions": [{"field": "event.x", "operator": "exists"}] * 51},
     "conditions", "at most 50 conditions"),
    ({"capture": {f"v{i}": "event.x" for i in range(51)}}, "capture", "at most 50"),
    ({"conditions": [{"field": "record.amount", "operator": "gt", "value": "abc"}]},
     "conditions[0].value", "needs a number"),
    ({"conditions": [{"field": "record.amount", "operator": "exists", "value": 5}]},
     "conditions[0].value", "takes no value"),
    ({"conditions": [{"field": "event.x", "operator": "in", "value": list(range(501))}]},
     "conditions[0].value", "at most 500 items"),
])
def test_definition_limits_at_every_door(client, auth, tokens, changes, place, message):
    """The API import, the import page and the CLI refuse the same oversized definitions."""
    document = _doc(**changes)
    before = _written()
    api = client.post(f"{API}/workflows/import", json=document, headers=tokens["author"])
    assert api.status_code == 422
    detail = next(d for d in api.get_json()["error"]["details"] if d["path"].endswith(place))
    assert message in detail["message"]
    auth.login("author")
    page = client.post("/workflows/import", data={
        "file": (io.BytesIO(json.dumps(document).encode()), "w.json")},
        content_type="multipart/form-data")
    assert page.status_code == 422 and message in page.get_data(as_text=True)
    assert _written() == before


def test_too_many_states(client, tokens):
    document = _doc()
    document["workflow"]["states"] += [{"code": f"S{i}"} for i in range(250)]
    answer = client.post(f"{API}/workflows/import", json=document, headers=tokens["author"])
    assert answer.status_code == 422
    assert "at most 200 states" in answer.get_data(as_text=True)


def test_limits_are_configurable(app_config, tokens):
    from wfapp import create_app

    app_config["DEFINITION_LIMITS"] = {"conditions": 2}
    client = create_app(app_config).test_client()
    document = _doc(conditions=[{"field": "event.x", "operator": "exists"}] * 3)
    answer = client.post(f"{API}/workflows/import", json=document, headers=tokens["author"])
    assert answer.status_code == 422 and "at most 2 conditions" in answer.get_data(as_text=True)


def test_record_url_template_with_an_unclosed_brace(client, tokens):
    answer = client.post(f"{API}/integrations", headers=tokens["author"], json={
        "code": "X", "record_url_template": "https://erp/{record_key"})
    assert answer.status_code == 422
    assert answer.get_json()["error"]["details"][0]["path"] == "record_url_template"


# --- generated files through the page routes ------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.strategies import DB_PROFILE, workflows  # noqa: E402

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
FILES = st.one_of(
    st.binary(max_size=300),
    JSONISH.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.lists(st.fixed_dictionaries({}, optional={"key": st.one_of(st.text(max_size=10),
                                                                  st.integers()),
                                                 "data": JSONISH,
                                                 "status": st.sampled_from(
                                                     ["success", "error", "maybe"])}),
             max_size=5).map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(lambda t: ("key,status,total\n" + t).encode()),
)


@settings(DB_PROFILE)
@given(content=FILES, name=st.sampled_from(["r.json", "r.csv"]))
def test_generated_run_uploads_never_500(client, auth, demo, content, name):
    auth.login("operator")
    before = _written()
    answer = client.post("/runs/new", data={
        "integration": "SHOP_ORDERS", "direction": "import",
        "file": (io.BytesIO(content), name)}, content_type="multipart/form-data")
    assert answer.status_code in (302, 422), answer.status_code
    if answer.status_code == 422:
        assert _written() == before


@settings(DB_PROFILE)
@given(content=st.one_of(FILES, workflows().map(lambda d: json.dumps(d).encode()),
                         JSONISH.map(lambda v: json.dumps(
                             {"format": "wfapp.workflow/v1", "workflow": v}).encode())))
def test_generated_workflow_uploads_never_500(client, auth, content):
    auth.login("author")
    before = _written()
    answer = client.post("/workflows/import", data={"file": (io.BytesIO(content), "w.json")},
                         content_type="multipart/form-data")
    assert answer.status_code in (200, 302, 422), answer.status_code
    if answer.status_code == 422:
        assert _written() == before
