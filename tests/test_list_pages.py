"""Lists that scale, through the test client: totals, sorting, pages both ways, the variable
search, the CSV download, and bulk actions started from the pages."""

from __future__ import annotations

import csv
import io
import re

from flask.testing import FlaskClient
from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import BulkOperation, Instance
from wfapp.queue import get_queue
from wfapp.services import instance_list

from .lists import make_stuck


def _text(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def _keys(page: str) -> list[str]:
    return re.findall(r'row-select" [^>]*aria-label="Select ([^"]+)"', page)


def _link(page: str, label: str) -> str | None:
    found = re.search(r'href="([^"]+)">' + label, page)
    return found.group(1).replace("&amp;", "&") if found else None


def test_total_sort_and_pages_both_ways(client, auth, app):
    keys = make_stuck(60)
    auth.login("viewer")
    page = _text(client, "/instances/?workflow=STUCKFLOW&size=25&sort=-record_key")
    assert "60 matching" in page
    first = _keys(page)
    assert first == sorted(keys, reverse=True)[:25]
    second_url = _link(page, "Next page")
    assert _link(page, "Previous page") is None
    second = _text(client, second_url)
    assert _keys(second) == sorted(keys, reverse=True)[25:50]
    back = _text(client, _link(second, "Previous page"))
    assert _keys(back) == first
    third = _text(client, _link(second, "Next page"))
    assert _keys(third) == sorted(keys, reverse=True)[50:] and _link(third, "Next page") is None
    # The bound: more rows than it are "more than N".
    with app.test_request_context():
        assert instance_list.count(instance_list.InstanceFilters(), bound=10) == (10, True)
        assert instance_list.count(instance_list.InstanceFilters(), bound=100) == (60, False)
    bad = _text(client, "/instances/?sort=password", 400)
    assert "sort: must be one of" in bad


def test_prefix_and_variable_search(client, auth, tokens, app):
    make_stuck(12, prefix="AB")
    make_stuck(3, prefix="ZZ")
    auth.login("viewer")
    assert sorted(_keys(_text(client, "/instances/?record_key_prefix=ZZ"))) == \
        ["ZZ00000", "ZZ00001", "ZZ00002"]
    assert _keys(_text(client, "/instances/?record_key_prefix=%25")) == []  # % is literal
    found = _text(client, "/instances/?var_name=ref&var_value=REF-AB00007")
    assert _keys(found) == ["AB00007"]
    api = client.get("/api/v1/instances?var.ref=REF-ZZ00001", headers=tokens["viewer"]).json
    assert [i["record_key"] for i in api["items"]] == ["ZZ00001"] and api["total"] == 1
    bad = client.get("/api/v1/instances?var.a%20b=1", headers=tokens["viewer"])
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "var.a b"


def test_csv_download_streams_the_filtered_list(client, auth, app):
    make_stuck(1205, prefix="C")
    make_stuck(1, prefix="=cmd|")
    auth.login("viewer")
    response = client.get("/instances/export.csv?workflow=STUCKFLOW&record_key_prefix=C")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:4] == ["Id", "Workflow", "Integration Code", "Record ID"]
    assert len(rows) == 1206 and {r[5] for r in rows[1:]} == {"HOLD"}
    formula = list(csv.reader(io.StringIO(_text(client, "/instances/export.csv?record_key_"
                                                "prefix=%3D"))))
    assert formula[1][3] == "'=cmd|00000"  # a spreadsheet shows it, never runs it


def test_advance_all_from_the_page(client, auth, app):
    make_stuck(8)
    auth.login("operator")
    listing = _text(client, "/instances/?state=HOLD")
    start = _link(listing, "Advance all")
    dry = _text(client, start)
    assert re.search(r'id="dry-matched">8<', dry)
    assert 'value="RELEASE"' in dry
    response = client.post(start, data={"transition": "RELEASE", "comment": "bulk"})
    assert response.status_code == 302
    operation = db.session.scalar(select(BulkOperation))
    assert response.headers["Location"].endswith(f"/operations/{operation.id}")
    get_queue().drain()
    db.session.expire_all()  # the job ran in its own session
    shown = _text(client, f"/operations/{operation.id}")
    assert 'id="op-status">done<' in shown and 'id="op-done">8<' in shown
    assert db.session.scalar(select(func.count()).select_from(Instance)
                             .where(Instance.state == "DONE")) == 8
    # Viewers see progress but cannot start one.
    auth.logout()
    auth.login("viewer")
    assert client.get(start).status_code == 403
    assert client.get(f"/operations/{operation.id}.json").json["done"] == 8


def test_replay_all_from_the_events_page(client, auth, app):
    from wfapp.models import Event

    make_stuck(6)
    db.session.execute(Event.__table__.update().values(status="failed", result="boom"))
    db.session.commit()
    auth.login("operator")
    listing = _text(client, "/events/?status=failed")
    assert "6 matching" in listing
    start = _link(listing, "Replay all matching")
    dry = _text(client, start)
    assert re.search(r'id="dry-matched">6<', dry)
    response = client.post(start, data={})
    assert response.status_code == 302 and "/operations/" in response.headers["Location"]
    get_queue().drain()
    db.session.expire_all()
    operation = db.session.scalar(select(BulkOperation))
    assert (operation.target, operation.status, operation.done) == ("events", "done", 6)


def test_cancel_from_the_progress_page(client, auth, app):
    make_stuck(5)
    auth.login("operator")
    start = "/operations/new/instances?action=delete&state=HOLD"
    assert 'id="dry-matched">5<' in _text(client, start)
    location = client.post(start, data={}).headers["Location"]
    page = _text(client, location)
    assert 'id="op-cancel"' in page
    client.post(location + "/cancel", data={})
    get_queue().drain()
    db.session.expire_all()
    page = _text(client, location)
    assert 'id="op-status">cancelled<' in page and 'id="op-cancel"' not in page
    assert db.session.scalar(select(func.count()).select_from(Instance)) == 5  # none deleted


def test_api_pages_every_row_once_in_each_sort(client, tokens, app):
    from wfapp.models import Instance

    keys = make_stuck(37)
    # Ties on every sort column: half the instances share one time and one last transition.
    db.session.execute(Instance.__table__.update().where(Instance.id % 2 == 0).values(
        entered_state_at=db.session.scalar(select(func.min(Instance.entered_state_at))),
        last_transition=None))
    db.session.commit()
    for sort in ("entered", "-entered", "state", "-state", "record_key", "-record_key",
                 "last_transition", "-last_transition"):
        seen, url, pages = [], f"/api/v1/instances?limit=10&sort={sort}", []
        while url:
            answer = client.get(url, headers=tokens["viewer"]).json
            pages.append(answer)
            seen += [i["record_key"] for i in answer["items"]]
            url = f"/api/v1/instances?limit=10&sort={sort}&cursor={answer['next']}" \
                if answer["next"] else ""
        assert sorted(seen) == sorted(keys) and len(seen) == 37, sort
        back = client.get(f"/api/v1/instances?limit=10&sort={sort}&cursor="
                          f"{pages[-1]['previous']}", headers=tokens["viewer"]).json
        assert back["items"] == pages[-2]["items"], sort
