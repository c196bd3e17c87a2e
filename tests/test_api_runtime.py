"""The engine's JSON API: runs, instances, events."""

from __future__ import annotations

from wfapp.queue import get_queue


def _run(client, headers, records, direction="import"):
    response = client.post("/api/v1/integrations/SHOP_ORDERS/runs", headers=headers,
                           json={"direction": direction, "records": records})
    get_queue().drain()
    return response


def test_run_then_instances_and_history(client, tokens, demo):
    response = _run(client, tokens["operator"],
                    [{"key": "A1", "data": {"number": "A1", "total": 3}, "status": "success"}])
    assert response.status_code == 201
    run_id = response.get_json()["run_id"]
    run = client.get(f"/api/v1/runs/{run_id}", headers=tokens["viewer"]).get_json()
    assert run["events"]["processed"] == 1 and run["total"] == 1
    page = client.get("/api/v1/instances?integration=shop_orders&state=PENDING",
                      headers=tokens["viewer"]).get_json()
    assert [i["record_key"] for i in page["items"]] == ["A1"] and page["next"] is None
    detail = client.get(f"/api/v1/instances/{page['items'][0]['id']}",
                        headers=tokens["viewer"]).get_json()
    assert [h["to_state"] for h in detail["history"]] == ["NEW", "PENDING"]
    assert set(detail) >= {"id", "workflow", "integration", "record_key", "run_id", "state",
                           "entered_state_at", "timeout_due_at", "data", "vars", "history"}


def test_fire_reset_delete(client, tokens, demo):
    _run(client, tokens["operator"], [{"key": "B1", "data": {"total": 0}}])
    instance = client.get("/api/v1/instances?record_key=B1",
                          headers=tokens["viewer"]).get_json()["items"][0]
    url = f"/api/v1/instances/{instance['id']}"
    assert client.post(f"{url}/fire", headers=tokens["viewer"],
                       json={"transition": "EXPIRE"}).status_code == 403
    refused = client.post(f"{url}/fire", headers=tokens["operator"],
                          json={"transition": "GIVE_UP"})
    assert refused.status_code == 409 and "leaves PENDING" in refused.get_json()["error"][
        "message"]
    fired = client.post(f"{url}/fire", headers=tokens["operator"],
                        json={"transition": "expire", "comment": "late"}).get_json()
    assert fired["state"] == "EXPIRED" and fired["history"][-1]["actor"] == "operator"
    bad = client.post(f"{url}/reset", headers=tokens["operator"], json={"state": "NEW"})
    assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["path"] == "note"
    reset = client.post(f"{url}/reset", headers=tokens["operator"],
                        json={"state": "NEW", "note": "retry"}).get_json()
    assert reset["state"] == "NEW" and reset["history"][-1]["trigger_type"] == "reset"
    assert client.delete(url, headers=tokens["operator"]).status_code == 204
    assert client.get(url, headers=tokens["viewer"]).status_code == 404


def test_events_list_and_replay(client, tokens, demo):
    from wfapp.services.workflows import set_enabled

    set_enabled("ORDER_SYNC", enabled=False)
    _run(client, tokens["operator"], [{"key": "C1", "data": {"total": 2}}])
    events = client.get("/api/v1/events?status=skipped", headers=tokens["viewer"]).get_json()
    assert len(events["items"]) == 1 and "disabled" in events["items"][0]["result"]
    set_enabled("ORDER_SYNC", enabled=True)
    event_id = events["items"][0]["id"]
    replayed = client.post(f"/api/v1/events/{event_id}/replay", headers=tokens["operator"])
    assert replayed.status_code == 200
    get_queue().drain()
    again = client.post(f"/api/v1/events/{event_id}/replay", headers=tokens["operator"])
    assert again.status_code == 409


def test_bad_input_is_a_4xx_naming_the_field(client, tokens, demo):
    h = tokens["operator"]
    cases = [
        ("post", "/api/v1/integrations/SHOP_ORDERS/runs", {"direction": "sideways",
                                                          "records": []}, 422, "direction"),
        ("post", "/api/v1/integrations/SHOP_ORDERS/runs",
         {"direction": "import", "records": [{"key": "X", "status": "maybe"}]}, 422,
         "records[0].status"),
        ("post", "/api/v1/integrations/SHOP_ORDERS/runs",
         {"direction": "import", "records": [{"data": {}}]}, 422, "records[0].key"),
        ("post", "/api/v1/integrations/SHOP_ORDERS/runs",
         {"direction": "import", "records": [], "extra": 1}, 422, "extra"),
        ("post", "/api/v1/integrations/NOPE/runs", {"direction": "import", "records": []},
         404, None),
        ("get", "/api/v1/instances?limit=0", None, 422, "limit"),
        ("get", "/api/v1/instances?active=maybe", None, 422, "active"),
        ("get", "/api/v1/instances?cursor=zzz", None, 422, "cursor"),
        ("get", "/api/v1/events?status=odd", None, 422, "status"),
        ("get", "/api/v1/instances/999", None, 404, None),
    ]
    for method, url, body, status, path in cases:
        response = getattr(client, method)(url, headers=h, json=body) if body is not None \
            else getattr(client, method)(url, headers=h)
        assert response.status_code == status, (url, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] and error["message"]
        if path:
            assert path in [d["path"] for d in error["details"]], error
    raw = client.post("/api/v1/integrations/SHOP_ORDERS/runs", headers=h, data="{nope",
                      content_type="application/json")
    assert raw.status_code == 400 and raw.get_json()["error"]["code"] == "invalid_json"


def test_instances_keyset_pagination(client, tokens, demo):
    _run(client, tokens["operator"],
         [{"key": f"K{i:03d}", "data": {"total": 0}} for i in range(25)])
    seen, cursor = [], None
    while True:
        url = "/api/v1/instances?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=tokens["viewer"]).get_json()
        seen += [i["record_key"] for i in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == [f"K{i:03d}" for i in range(25)] and len(seen) == 25
