"""Form errors are tied to their inputs, help text shows placeholders as written, the skip link
leads to the main content (the browser checks with axe-core are in tests/e2e)."""

from __future__ import annotations

from tests.pages import find, find_all
from wfapp.services.definitions import FORMAT, import_document


def _tied(page: str, input_id: str, message: str) -> None:
    """The input says it is invalid and points at an error element holding the message."""
    field = find(page, id=input_id)
    assert field.attrs.get("aria-invalid") == "true", field.attrs
    described = field.attrs.get("aria-describedby", "").split()
    assert f"{input_id}-error" in described, described
    assert message in find(page, id=f"{input_id}-error").text


def test_every_error_of_a_form_is_tied_to_its_input_and_summarised(client, auth):
    auth.login("author")
    answer = client.post("/workflows/new", data={"code": "bad code!", "initial_state": ""})
    assert answer.status_code in (200, 422)
    page = answer.get_data(as_text=True)
    _tied(page, "code", "A-Z")
    _tied(page, "initial_state", "")
    summary = find(page, "div", cls="error-summary")
    links = [a.attrs["href"] for li in summary.children[1].children for a in li.children]
    assert links == ["#code", "#initial_state"]  # all errors at once, in form order
    valid = find(page, id="description")
    assert "aria-invalid" not in valid.attrs


def test_help_text_shows_placeholders_as_written(client, auth):
    import_document({"format": FORMAT, "workflow": {
        "code": "POLLED", "initial_state": "A", "states": [{"code": "A", "is_initial": True},
                                                           {"code": "B"}],
        "transitions": [{"code": "CHECK", "from_state": "A", "to_state": "B",
                         "trigger_type": "on_scheduled_poll",
                         "trigger_config": {"url": "https://x.example/{record_key}",
                                            "interval_minutes": 5}}]}})
    auth.login("author")
    page = client.get("/workflows/POLLED/transitions/CHECK").get_data(as_text=True)
    help_text = find_all(page, id="cfg-url-help")[0].text
    assert "{vars.<name>}" in help_text and "{data.<field>}" in help_text
    assert find_all(page, id="cfg-url")[0].attrs["aria-describedby"] == "cfg-url-help"


def test_skip_link_and_main_landmark(client, auth):
    auth.login("viewer")
    page = client.get("/workflows/").get_data(as_text=True)
    skip = find_all(page, "a", cls="skip-link")[0]
    assert skip.attrs["href"] == "#main" and page.index("skip-link") < page.index("<nav")
    assert find(page, "main", id="main")


def test_login_errors_are_tied_too(client):
    page = client.post("/auth/login", data={"username": "", "password": ""}).get_data(
        as_text=True)
    _tied(page, "username", "")
    _tied(page, "password", "")
