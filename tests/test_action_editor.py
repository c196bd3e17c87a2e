"""The transition page's action editor: per-field inputs declared by each action type, add /
remove / move without scripts, errors at their inputs naming `actions[i].<field>`, secrets only
as placeholders, and the same validation as the API."""

from __future__ import annotations

from typing import Any

from wfapp.services.definitions import export_document

from .action_flows import order_workflow, shop_integration
from .pages import find, find_all

URL = "/workflows/ORDERS/transitions/SUBMIT"


def form_of(page: str) -> dict[str, Any]:
    """What a browser would post from the transition form (no button pressed)."""
    data: dict[str, Any] = {}
    form = find(page, "form", id="transition-form")
    markup = page[page.index('id="transition-form"'):page.index("</form>",
                                                                 page.index('id="transition-form"'))]
    assert form is not None
    for el in find_all(markup, "input"):
        name, kind = el.attrs.get("name"), el.attrs.get("type", "text")
        if not name or kind in ("submit", "button"):
            continue
        if kind in ("checkbox", "radio"):
            if "checked" in el.attrs:
                data.setdefault(name, []).append(el.attrs.get("value", "y"))
            continue
        data[name] = el.attrs.get("value", "")
    for el in find_all(markup, "textarea"):
        data[el.attrs["name"]] = el.text
    parser_markup = markup
    for el in find_all(parser_markup, "select"):
        options = [c for c in el.children if c.tag == "option"]
        picked = [o for o in options if "selected" in o.attrs] or options[:1]
        data[el.attrs["name"]] = picked[0].attrs.get("value", picked[0].text) if picked else ""
    return data


def actions() -> list[dict[str, Any]]:
    return export_document("ORDERS")["workflow"]["transitions"][0]["actions"]


def test_fields_are_the_types_own_and_secrets_stay_placeholders(client, auth, app):
    order_workflow("http://127.0.0.1:9")
    shop_integration()
    auth.login("author")
    page = client.get(URL).get_data(as_text=True)
    assert len(find_all(page, "li", data_action="")) == 2
    assert find(page, "select", id="act-1-type") is not None
    assert find(page, "input", id="act-1-f-url").attrs["value"] == \
        "http://127.0.0.1:9/submit/{record_key}"
    assert find(page, "input", id="act-1-f-headers-0-k").attrs["value"] == "X-Api-Key"
    assert find(page, "input", id="act-1-f-headers-0-v").attrs["value"] == "{secret.api_key}"
    assert find(page, "input", id="act-1-f-capture-0-k").attrs["value"] == "confirmation"
    assert '"order": "{record_key}"' in find(page, "textarea", id="act-1-f-body").text
    assert find(page, "textarea", id="act-1-f-expected_status") is not None  # declared field
    assert find(page, "input", id="act-1-id").attrs["value"] == "submit"
    assert "k-123" not in page  # the secret's value is never sent to the browser
    before = actions()
    saved = client.post(URL, data=form_of(page))  # saving the page unchanged changes nothing
    assert saved.status_code == 302, saved.get_data(as_text=True)[:3000]
    assert actions() == before


def test_add_move_and_remove_without_scripts(client, auth, app):
    order_workflow("http://127.0.0.1:9")
    auth.login("author")
    before = actions()
    data = form_of(client.get(URL).get_data(as_text=True))
    added = client.post(URL, data={**data, "act-op": "add", "act-new-type": "send_email"})
    assert added.status_code == 200
    page = added.get_data(as_text=True)
    assert len(find_all(page, "li", data_action="")) == 3
    assert find(page, "input", id="act-2-f-to") is not None
    assert "autofocus" in find(page, "select", id="act-2-type").attrs
    assert actions() == before  # nothing saved yet
    data = form_of(page)
    data.update({"act-2-f-to": "ops@example.com", "act-2-f-subject": "Order {record_key}"})
    moved = client.post(URL, data={**data, "act-op": "up-2"}).get_data(as_text=True)
    assert find(moved, "input", id="act-1-f-to").attrs["value"] == "ops@example.com"
    assert find(moved, "input", id="act-2-f-url") is not None
    data = form_of(moved)
    removed = client.post(URL, data={**data, "act-op": "remove-0"}).get_data(as_text=True)
    assert len(find_all(removed, "li", data_action="")) == 2
    assert client.post(URL, data=form_of(removed)).status_code == 302
    assert [a["type"] for a in actions()] == ["send_email", "http_request"]
    assert actions()[0]["config"]["to"] == "ops@example.com"
    assert actions()[1] == before[1]


def test_headers_and_captures_are_key_value_rows(client, auth, app):
    order_workflow("http://127.0.0.1:9")
    auth.login("author")
    data = form_of(client.get(URL).get_data(as_text=True))
    more = client.post(URL, data={**data, "act-op": "pair-1-headers"}).get_data(as_text=True)
    assert find(more, "input", id="act-1-f-headers-2-k") is not None  # one more empty row
    data = form_of(more)
    data.update({"act-1-f-headers-1-k": "X-Trace", "act-1-f-headers-1-v": "{vars.origin}",
                 "act-1-f-headers-2-k": "Accept", "act-1-f-headers-2-v": "application/json",
                 "act-1-f-capture-0-v": "data.id", "act-1-f-expected_status": "200, 201"})
    assert client.post(URL, data=data).status_code == 302
    config = actions()[1]["config"]
    assert config["headers"] == {"X-Api-Key": "{secret.api_key}", "X-Trace": "{vars.origin}",
                                 "Accept": "application/json"}
    assert config["capture"] == {"confirmation": "data.id"}
    assert config["expected_status"] == [200, 201]
    data = form_of(client.get(URL).get_data(as_text=True))
    data.update({"act-1-f-headers-0-k": "", "act-1-f-headers-0-v": ""})  # an emptied row goes
    assert client.post(URL, data=data).status_code == 302
    assert "X-Api-Key" not in actions()[1]["config"]["headers"]


def _invalid(page: str, input_id: str) -> None:
    field = find(page, None, id=input_id)
    assert field.attrs.get("aria-invalid") == "true", input_id
    described = field.attrs.get("aria-describedby", "").split()
    error_id = next(i for i in described if i.endswith("-error"))
    assert find(page, None, id=error_id).text.strip(), input_id


def test_errors_sit_at_their_inputs_and_name_the_field(client, auth, app):
    order_workflow("http://127.0.0.1:9")
    auth.login("author")
    before = actions()
    data = form_of(client.get(URL).get_data(as_text=True))
    data.update({"act-1-f-url": "", "act-1-f-timeout_seconds": "nan",
                 "act-1-f-headers-1-v": "orphan value", "act-1-f-body": "{not json"})
    bad = client.post(URL, data=data)
    assert bad.status_code == 422
    page = bad.get_data(as_text=True)
    for input_id in ("act-1-f-timeout_seconds", "act-1-f-body", "act-1-f-headers-0-k"):
        _invalid(page, input_id)
    summary = find(page, "div", id="action-errors").text
    assert "actions[1].timeout_seconds" in summary and "actions[1].body" in summary
    assert "Nothing was saved" in page
    assert actions() == before
    # Readable but against the type's rules: the service's validate_config, as for the API.
    data = form_of(client.get(URL).get_data(as_text=True))
    data.update({"act-1-f-url": "", "act-1-f-max_attempts": "500", "act-1-id": "bad id!",
                 "act-0-f-values": "[1]"})
    bad = client.post(URL, data=data)
    assert bad.status_code == 422
    page = bad.get_data(as_text=True)
    for input_id in ("act-1-f-url", "act-1-f-max_attempts", "act-1-id", "act-0-f-values"):
        _invalid(page, input_id)
    summary = find(page, "div", id="action-errors").text
    for path in ("actions[1].url", "actions[1].max_attempts", "actions[1].id",
                 "actions[0].values"):
        assert path in summary, path
    link = find(page, "a", href="#act-1-f-url")
    assert "actions[1].url" in link.text
    assert actions() == before


def test_changing_a_type_shows_its_fields_before_saving(client, auth, app):
    order_workflow("http://127.0.0.1:9")
    auth.login("author")
    before = actions()
    data = form_of(client.get(URL).get_data(as_text=True))
    changed = client.post(URL, data={**data, "act-1-type": "send_webhook"})  # Save pressed
    assert changed.status_code == 200
    page = changed.get_data(as_text=True)
    assert find(page, "textarea", id="act-1-f-urls") is not None
    assert find(page, "input", id="act-1-f-timeout_seconds").attrs["value"] == "2"  # kept
    assert not find_all(page, "input", id="act-1-f-url")
    assert actions() == before
    data = form_of(page)
    data["act-1-f-urls"] = "https://a.example/hook\nhttps://b.example/hook"
    assert client.post(URL, data=data).status_code == 302
    assert actions()[1] == {"id": "submit", "type": "send_webhook", "config": {
        "urls": ["https://a.example/hook", "https://b.example/hook"], "timeout_seconds": 2,
        "max_attempts": 3}}


def test_a_post_without_the_editor_keeps_the_actions(client, auth, app):
    order_workflow("http://127.0.0.1:9")
    auth.login("author")
    before = actions()
    data = {k: v for k, v in form_of(client.get(URL).get_data(as_text=True)).items()
            if not k.startswith("act-")}
    data["description"] = "Submit to Fulfillment API"
    assert client.post(URL, data=data).status_code == 302
    assert actions() == before
    assert export_document("ORDERS")["workflow"]["transitions"][0]["description"] == \
        "Submit to Fulfillment API"


def test_viewers_see_the_editor_read_only(client, auth, app):
    order_workflow("http://127.0.0.1:9")
    auth.login("viewer")
    page = client.get(URL).get_data(as_text=True)
    assert find(page, "input", id="act-1-f-url") is not None
    assert client.post(URL, data={"act-op": "add", "act-count": "0"}).status_code == 403
