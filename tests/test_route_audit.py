"""Route audit: every route of the app and its plugins has a deliberate access decision.

A new route that is not in EXPECTED fails this test; each decision is then checked from
outside: anonymous requests are sent to the login page (pages) or refused with 401 (API), and a
user one role short of the required one gets 403.
"""

from __future__ import annotations

from typing import Any

import pytest

from wfapp.models import Role

PUBLIC = "public"
# endpoint -> role, or {method: role} when the methods differ. "viewer" = any logged-in user.
EXPECTED: dict[str, str | dict[str, str]] = {
    "api.audit_log": "admin", "api.copy_workflow": "author", "api.create_integration": "author",
    "api.create_run": "operator", "api.delete": "operator", "api.delete_workflow": "author",
    "api.export_workflow": "viewer", "api.fire": "operator", "api.get_integration": "viewer",
    "api.import_workflow": "author", "api.list_events": "viewer", "api.list_instances": "viewer",
    "api.list_integrations": "viewer", "api.list_workflows": "viewer",
    "api.lint_workflow": "viewer", "api.simulate_workflow": "viewer",
    "api.patch_integration": "author", "api.patch_workflow": "author", "api.replay": "operator",
    "api.reset": "operator", "api.show_instance": "viewer", "api.show_run": "viewer",
    "api.trigger_types": "viewer", "api.list_versions": "viewer", "api.get_version": "viewer",
    "api.delete_version": "author", "api.migrate": "author", "api.get_migration": "viewer",
    "api.list_actions": "viewer", "api.retry_action": "operator",
    "api.list_alert_rules": "viewer", "api.create_alert_rule": "author",
    "api.get_alert_rule": "viewer", "api.patch_alert_rule": "author",
    "api.delete_alert_rule": "author",
    "demo_receiver.submit": PUBLIC,
    "actions.index": "viewer", "actions.retry": "operator", "actions.give_up": "operator",
    "audit.index": "admin",
    "auth.login": PUBLIC, "auth.logout": "viewer", "auth.password": "viewer",
    "auth.users": "admin",
    "bootstrap.static": PUBLIC, "static": PUBLIC,
    "events.index": "viewer", "events.replay": "operator", "events.show": "viewer",
    "instances.advance": "operator", "instances.delete": "operator", "instances.fire": "operator",
    "instances.index": "viewer", "instances.reset": "operator", "instances.show": "viewer",
    "integrations.card": "viewer", "integrations.index": "viewer", "integrations.new": "author",
    "integrations.save": "author",
    "main.index": "viewer", "main.search_json": "viewer", "main.search_page": "viewer",
    "runs.index": "viewer", "runs.new": "operator", "runs.progress": "viewer",
    "runs.show": "viewer",
    "workflows.card": {"GET": "viewer", "POST": "author"}, "workflows.copy": "author",
    "workflows.delete": "author", "workflows.delete_state": "author",
    "workflows.delete_transition": "author", "workflows.export": "viewer",
    "workflows.import_confirm": "author", "workflows.import_file": "author",
    "workflows.index": "viewer", "workflows.new": "author",
    "workflows.new_transition": "author", "workflows.state": "author",
    "workflows.transition": {"GET": "viewer", "POST": "author"},
    "workflows.diff": "viewer", "workflows.pin": "author", "workflows.plan": "author",
    "workflows.migration": "viewer", "workflows.delete_version": "author",
    "workflows.simulate": "viewer", "workflows.save_scenario": "author",
    "workflows.delete_scenario": "author",
    "admin.plugins": "admin", "api.openapi": PUBLIC,
    "admin.retention": "admin",
    # Probes and the scraper have no login; /metrics applies METRICS_ALLOW / METRICS_TOKEN.
    "ops.healthz": PUBLIC, "ops.readyz": PUBLIC, "ops.metrics": PUBLIC,
    "api.bulk_instances": "operator", "api.bulk_events": "operator",
    "api.show_operation": "viewer", "api.cancel_operation": "operator",
    "instances.export_csv": "viewer", "operations.new_instances": "operator",
    "operations.new_events": "operator", "operations.show": "viewer",
    "operations.progress": "viewer", "operations.cancel": "operator",
    "alerts.index": "viewer", "alerts.add_rule": "author", "alerts.delete_rule": "author",
    "alerts.edit_rule": "author",
    # Plugins: inbound endpoints authenticate each request by signature or client state.
    "on_webhook.hook": PUBLIC, "on_webhook.generate_secret": "author",
    "bc_notifications.notifications": PUBLIC, "bc.card_action": "author",
    "bc.card_status": "viewer", "bc_api.api_register": "author", "bc_api.api_renew": "author",
    "bc_api.api_status": "viewer", "bc_api.api_unregister": "author",
}
ARGS = {"code": "ORDER_SYNC", "state_code": "NEW", "tcode": "SUBMIT", "instance_id": 1,
        "event_id": 1, "run_id": 1, "number": 1, "migration_id": 1, "filename": "wfapp.css",
        "action": "register", "delivery_id": 1, "operation_id": 1, "rule_id": 1}


def _routes(app: Any) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) of every route of the app."""
    out = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            args = {name: ARGS.get(name, "X") for name in rule.arguments}
            if rule.endpoint.endswith("static"):
                args["filename"] = "css/bootstrap.min.css" if rule.endpoint.startswith(
                    "bootstrap") else "wfapp.css"
            url = app.url_map.bind("localhost").build(rule.endpoint, args)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                out.append((rule.endpoint, method, url))
    return out


def _expected(endpoint: str, method: str) -> str:
    decision = EXPECTED[endpoint]
    return decision if isinstance(decision, str) else decision[method]


def test_every_route_has_a_decision(app):
    missing = sorted({e for e, _, _ in _routes(app) if e not in EXPECTED})
    assert missing == [], f"routes without an access decision in EXPECTED: {missing}"
    stale = sorted(set(EXPECTED) - {e for e, _, _ in _routes(app)})
    assert stale == [], f"EXPECTED names routes that no longer exist: {stale}"


def test_decisions_match_the_code(app):
    """The decorators say the same as the table (in-view checks are covered below)."""
    for endpoint, method, _ in _routes(app):
        view = app.view_functions[endpoint]
        want = _expected(endpoint, method)
        if getattr(view, "_wfapp_public", False):
            assert want == PUBLIC or endpoint.endswith("static"), endpoint
        role = getattr(view, "_wfapp_role", None)
        if role is not None:
            assert role.value == want, (endpoint, role.value, want)


def _call(client: Any, method: str, url: str, headers: dict[str, str] | None = None) -> Any:
    return client.open(url, method=method, headers=headers or {},
                       json={} if url.startswith("/api/") and method != "GET" else None,
                       data=None if url.startswith("/api/") else {})


def test_anonymous_requests_are_refused(app, client, demo):
    for endpoint, method, url in _routes(app):
        if _expected(endpoint, method) == PUBLIC:
            continue
        answer = _call(client, method, url)
        if url.startswith("/api/"):
            assert answer.status_code == 401, (endpoint, method, answer.status_code)
        else:
            assert answer.status_code == 302, (endpoint, method, answer.status_code)
            assert "/auth/login" in answer.headers["Location"], endpoint


@pytest.mark.parametrize("role", ["operator", "author", "admin"])
def test_one_role_short_is_forbidden(app, client, auth, tokens, demo, role):
    below = list(Role)[Role(role).rank - 1].value
    auth.login(below)
    for endpoint, method, url in _routes(app):
        if _expected(endpoint, method) != role:
            continue
        headers = tokens[below] if url.startswith("/api/") else None
        answer = _call(client, method, url, headers)
        assert answer.status_code == 403, (endpoint, method, below, answer.status_code)
