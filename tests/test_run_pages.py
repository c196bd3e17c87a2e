"""Run Import / Run Export uploads, the run page with its progress, and the runs list."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import Event, Instance, Run
from wfapp.queue import get_queue
from wfapp.services.integrations import create_integration, update_integration


def _upload(client: FlaskClient, content: bytes, filename: str, code: str = "SHOP_ORDERS",
            direction: str = "import") -> Any:
    return client.post("/runs/new", data={
        "integration": code, "direction": direction, "file": (io.BytesIO(content), filename)},
        content_type="multipart/form-data")


def _counts() -> tuple[int, int, int]:
    return (db.session.scalar(select(func.count()).select_from(Run)),
            db.session.scalar(select(func.count()).select_from(Event)),
            db.session.scalar(select(func.count()).select_from(Instance)))


def test_form_is_prefilled_from_the_integration_card_link(client, auth, demo):
    auth.login("operator")
    page = client.get("/runs/new?integration=shop_orders&direction=export").get_data(
        as_text=True)
    assert "Run Export" in page and '<option selected value="SHOP_ORDERS">' in page
    assert re.search(r'id="direction-export" value="export" checked', page)
    assert '<label class="form-label" for="file">Records file (.json or .csv)</label>' in page
    assert ">Upload</button>" in page
    assert client.get("/runs/new?integration=NOPE").status_code == 404


def test_upload_json_then_watch_the_run(client, auth, demo):
    auth.login("operator")
    records = {"records": [{"key": "J1", "data": {"number": "J1", "total": 5}},
                           {"key": "J2", "data": {"number": "J2", "total": 0}},
                           {"key": "J3", "status": "error", "data": {}}]}
    response = _upload(client, json.dumps(records).encode(), "orders.json")
    assert response.status_code == 302
    run = db.session.scalar(select(Run))
    assert response.headers["Location"] == f"/runs/{run.id}"
    assert (run.total, run.succeeded, run.failed, run.actor) == (3, 2, 1, "operator")
    page = client.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "Processing… this page updates itself" in page and f"/runs/{run.id}.json" in page
    assert client.get(f"/runs/{run.id}.json").get_json()["pending"] == 3
    get_queue().drain()
    assert client.get(f"/runs/{run.id}.json").get_json() == {
        "pending": 0, "processed": 3, "skipped": 0, "failed": 0}
    page = client.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "All events are evaluated" in page and f"/runs/{run.id}.json" not in page
    assert page.count('<td><a href="/events/') == 3
    assert "a failed record never creates an instance" in page
    assert f'href="/events/?run_id={run.id}"' in page
    assert f'href="/instances/?run_id={run.id}&amp;integration=SHOP_ORDERS"' in page
    states = dict(db.session.execute(select(Instance.record_key, Instance.state)).all())
    assert states == {"J1": "PENDING", "J2": "NEW"}
    listing = client.get("/runs/").get_data(as_text=True)
    assert f'href="/runs/{run.id}"' in listing and "operator" in listing


def test_upload_csv_export(client, auth, demo):
    auth.login("operator")
    _upload(client, b"key,status,number,total\nX1,success,X1,5\n", "a.csv")
    get_queue().drain()
    response = _upload(client, b"\xef\xbb\xbfkey,status\nX1,error\n", "b.CSV",
                       direction="export")
    assert response.status_code == 302
    get_queue().drain()
    run = db.session.scalars(select(Run).order_by(Run.id.desc())).first()
    assert run.direction == "export" and run.failed == 1
    assert db.session.scalar(select(Instance.state).where(Instance.record_key == "X1")) == \
        "FAILED"  # EXPORT_FAILED fired from PENDING


@pytest.mark.parametrize("content, filename, message", [
    (json.dumps([{"key": "E1"}, {"data": {}}]).encode(), "r.json",
     "<code>records[1].key</code>: is required"),
    (json.dumps([{"key": "E1"}, {"key": "E2"}, {"key": "E3"}, {"key": "E4", "status": "ok"}]
                ).encode(), "r.json", "<code>records[3].status</code>: must be success or error"),
    (b"key,status\nE1,success\nE2,maybe\n", "r.csv",
     "<code>records[1].status</code>: must be success or error"),
    (b"id,total\n1,2\n", "r.csv", "a CSV file needs a header row with a key column"),
    (b"{not json", "r.json", "is not valid JSON"),
    (b'{"a": 1}', "r.json", "must hold a list of records"),
    (b"\xff\xfe\x00", "r.json", "is not UTF-8 text"),
    (b"[]", "r.txt", "must be a .json or .csv file"),
])
def test_bad_files_write_nothing(client, auth, demo, content, filename, message):
    auth.login("operator")
    response = _upload(client, content, filename)
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "Nothing was saved" in text and message in text
    assert _counts() == (0, 0, 0)


def test_refused_runs(client, auth, demo):
    auth.login("operator")
    response = client.post("/runs/new", data={"integration": "SHOP_ORDERS",
                                              "direction": "import"})
    assert response.status_code == 422 and "choose a JSON or CSV file" in response.get_data(
        as_text=True)
    assert _upload(client, b"[]", "r.json", code="NOPE").status_code == 422
    bad_direction = _upload(client, b"[]", "r.json", direction="sideways")
    assert bad_direction.status_code == 422
    update_integration("SHOP_ORDERS", {"enabled": False})
    disabled = _upload(client, b'[{"key": "Z"}]', "r.json")
    assert "integration SHOP_ORDERS is disabled" in disabled.get_data(as_text=True)
    assert _counts() == (0, 0, 0)
    auth.logout()
    auth.login("viewer")
    assert client.get("/runs/new?integration=SHOP_ORDERS").status_code == 403
    assert _upload(client, b"[]", "r.json").status_code == 403


def test_per_run_instances_link_by_run(client, auth, demo):
    create_integration({"code": "NIGHTLY", "description": "Nightly batch",
                        "workflow_code": "ORDER_SYNC", "instance_mode": "per_run",
                        "enabled": True})
    auth.login("operator")
    response = _upload(client, b'[{"key": "N1", "data": {"total": 1}}]', "n.json",
                       code="NIGHTLY")
    run_url = response.headers["Location"]
    run_id = int(run_url.rsplit("/", 1)[1])
    get_queue().drain()
    page = client.get(run_url).get_data(as_text=True)
    assert f'href="/instances/?run_id={run_id}&amp;integration=NIGHTLY"' in page
    listed = client.get(f"/instances/?run_id={run_id}&integration=NIGHTLY").get_data(
        as_text=True)
    assert f"run {run_id}" in listed


def test_per_record_run_filter_finds_the_instances_its_records_reached(client, auth, tokens,
                                                                      demo):
    auth.login("operator")
    first = _upload(client, b'[{"key": "P1", "data": {"total": 1}}, {"key": "P2", "data": '
                    b'{"total": 2}}]', "a.json").headers["Location"].rsplit("/", 1)[1]
    second = _upload(client, b'[{"key": "P2", "data": {"total": 3}}, {"key": "P3", "data": '
                     b'{"total": 4}}]', "b.json").headers["Location"].rsplit("/", 1)[1]
    get_queue().drain()

    def keys(run_id: str) -> list[str]:
        page = client.get(f"/instances/?run_id={run_id}&integration=SHOP_ORDERS&active=all")
        assert page.status_code == 200
        return sorted(set(re.findall(r">(P\d)<", page.get_data(as_text=True))))

    assert keys(first) == ["P1", "P2"]
    assert keys(second) == ["P2", "P3"]  # P2 was created by the first run, reached by both
    answer = client.get(f"/api/v1/instances?run_id={second}", headers=tokens["viewer"])
    assert sorted(i["record_key"] for i in answer.get_json()["items"]) == ["P2", "P3"]


def test_unknown_runs_are_404(client, auth):
    auth.login("viewer")
    assert client.get("/runs/999").status_code == 404
    assert client.get("/runs/999.json").status_code == 404
    assert client.get("/runs/99999999999999999999").status_code == 404
    assert client.get("/runs/?integration=NOPE").status_code == 404
    assert "No runs yet" in client.get("/runs/").get_data(as_text=True)
