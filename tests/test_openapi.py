"""The OpenAPI description matches the routes, and Schemathesis finds no 500 and no response
that breaks the description (a fixed budget per operation, derandomized, so CI is repeatable)."""

from __future__ import annotations

import re
from typing import Any

import schemathesis
import schemathesis.specs.openapi.checks as oa
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from wfapp.api.openapi import PREFIX, _openapi_path

API = "/api/v1"


def test_description_is_public_and_3_1(client):
    answer = client.get(f"{API}/openapi.json")
    assert answer.status_code == 200
    spec = answer.get_json()
    assert spec["openapi"].startswith("3.1") and spec["servers"] == [{"url": API}]


def test_description_matches_the_routes(app, client):
    spec = client.get(f"{API}/openapi.json").get_json()
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PREFIX + "/"):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routed.add((_openapi_path(rule.rule), method.lower()))
    assert documented == routed
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for parameter in op.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path, (path, parameter)
            assert re.fullmatch(r"[a-z]+", method)


EXAMPLES = 30  # per operation; derandomized, so every run sends the same requests
# What each response must satisfy: no server error, and the description's statuses, content
# types, headers and body schemas. (Checks that resend without auth or judge business-rule
# refusals of schema-valid data are left out: the route audit covers authentication.)
CHECKS = [checks.not_a_server_error, oa.status_code_conformance, oa.content_type_conformance,
          oa.response_headers_conformance, oa.response_schema_conformance]


def test_fuzzed_api_never_answers_500_or_breaks_the_description(app, tokens, demo):
    """Every operation, generated requests: never a 5xx, always the documented shape."""
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", app)
    headers = dict(tokens["admin"])
    problems: list[str] = []
    calls: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            calls.append(response.status_code)
            if response.status_code >= 500:
                problems.append(f"{case.method} {case.formatted_path}: "
                                f"{response.status_code} {response.text[:300]}")
                return
            try:
                case.validate_response(response, checks=CHECKS)
            except BaseException as exc:  # noqa: BLE001 — collected and reported together
                problems.append(f"{case.method} {case.formatted_path}: {str(exc)[:500]}")

        run()
    assert operations >= 20 and len(calls) >= operations * 5, (operations, len(calls))
    assert problems == [], "\n".join(problems[:20])
