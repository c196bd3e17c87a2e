"""The audit log: every change is recorded with who, when and what; append-only; page and API."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from wfapp.extensions import db
from wfapp.models import AuditEntry

API = "/api/v1"


def _rows() -> list[tuple[str, str, str, str]]:
    db.session.rollback()
    return [(r.actor, r.action, r.object_type, r.object_key)
            for r in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def _last() -> AuditEntry:
    db.session.rollback()
    return db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()


def test_workflow_changes_are_audited_with_their_diff(client, tokens, demo):
    from wfapp.demo import ORDER_SYNC

    doc = {"format": ORDER_SYNC["format"], "workflow": {**ORDER_SYNC["workflow"],
                                                        "code": "COPY1"}}
    assert client.post(f"{API}/workflows/import", json=doc,
                       headers=tokens["author"]).status_code == 201
    assert _last().action == "create" and _last().actor == "author"
    client.patch(f"{API}/workflows/COPY1", json={"description": "Changed"},
                 headers=tokens["author"])
    entry = _last()
    assert (entry.action, entry.object_key) == ("update", "COPY1")
    assert entry.details["changes"] == ["description: 'Sales order to fulfilment' → 'Changed'"]
    client.post(f"{API}/workflows/COPY1/copy", json={"new_code": "COPY2"},
                headers=tokens["author"])
    client.delete(f"{API}/workflows/COPY2", headers=tokens["author"])
    assert [r[1:] for r in _rows()[-2:]] == [("create", "workflow", "COPY2"),
                                             ("delete", "workflow", "COPY2")]


def test_integration_changes_show_secrets_only_as_changed(client, tokens, demo):
    client.patch(f"{API}/integrations/SHOP_ORDERS", headers=tokens["author"],
                 json={"description": "New", "bc_client_state": "s3cret-value",
                       "secrets": {"erp": "tok-123"}})
    entry = _last()
    assert (entry.action, entry.object_type, entry.object_key) == ("update", "integration",
                                                                   "SHOP_ORDERS")
    changes = "\n".join(entry.details["changes"])
    assert "description: 'Web shop orders to fulfilment' → 'New'" in changes
    assert "bc_client_state: changed" in changes and "secret.erp: changed" in changes
    assert "s3cret" not in str(entry.details) and "tok-123" not in str(entry.details)


def test_users_roles_and_tokens_are_audited(client, auth, users):
    from wfapp.services.users import create_token

    auth.login("admin")
    client.post("/auth/users", data={"action": "create", "username": "newbie",
                                     "password": "good-pass-123", "role": "viewer"})
    client.post("/auth/users", data={"action": "update", "username": "newbie",
                                     "role": "operator", "active": "on"})
    client.post("/auth/users", data={"action": "password", "username": "newbie",
                                     "new_password": "another-good-1"})
    create_token("newbie", "ci")
    rows = [r for r in _rows() if r[3] == "newbie"]
    assert [r[1] for r in rows] == ["create", "update", "password", "token"]
    assert rows[0][0] == "admin"


def test_reset_delete_and_replay_are_audited(client, tokens, demo, app):
    from wfapp.models import Event
    from wfapp.services.integrations import get_integration
    from wfapp.services.runs import start_run

    start_run(get_integration("SHOP_ORDERS"), "import",
              [{"key": "A1", "data": {"total": 5, "number": "A1"}}], "tester")
    app.extensions["wfapp"]["queue"].drain()
    instance = client.get(f"{API}/instances", headers=tokens["viewer"]).get_json()["items"][0]
    client.post(f"{API}/instances/{instance['id']}/reset", headers=tokens["operator"],
                json={"state": "NEW", "note": "try again"})
    assert _last().action == "reset" and _last().details["note"] == "try again"
    event = db.session.scalars(select(Event)).first()
    event.status = "failed"
    db.session.commit()
    client.post(f"{API}/events/{event.id}/replay", headers=tokens["operator"])
    assert (_last().action, _last().object_key) == ("replay", str(event.id))
    client.delete(f"{API}/instances/{instance['id']}", headers=tokens["operator"])
    assert (_last().action, _last().actor) == ("delete", "operator")


def test_audit_page_and_api(client, auth, tokens, demo):
    client.patch(f"{API}/workflows/ORDER_SYNC", json={"enabled": False},
                 headers=tokens["author"])
    auth.login("admin")
    page = client.get("/audit/?action=update&object_type=workflow").get_data(as_text=True)
    assert "ORDER_SYNC" in page and "enabled: True → False" in page
    assert client.get("/audit/?since=not-a-date").status_code == 400
    listed = client.get(f"{API}/audit?object_key=ORDER_SYNC", headers=tokens["admin"])
    assert listed.status_code == 200
    assert listed.get_json()["items"][0]["details"]["changes"] == ["enabled: True → False"]
    assert client.get(f"{API}/audit", headers=tokens["author"]).status_code == 403
    auth.logout()
    auth.login("author")
    assert client.get("/audit/").status_code == 403


def test_the_audit_log_is_append_only(app, client, tokens, demo):
    client.patch(f"{API}/workflows/ORDER_SYNC", json={"enabled": False},
                 headers=tokens["author"])
    with pytest.raises(Exception, match="append-only"):
        db.session.execute(text("UPDATE audit_log SET actor = 'someone else'"))
    db.session.rollback()
    if db.engine.dialect.name == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            db.session.execute(text("DELETE FROM audit_log"))
        db.session.rollback()
