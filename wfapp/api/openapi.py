"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json (no login).

Written out for the core endpoints (request bodies, query parameters, response shapes) and
completed from the app's routes, so an endpoint a plugin adds under /api/v1 is listed too, with
the docstring of its view. tests/test_openapi.py checks that the description and the routes
agree, and runs Schemathesis against it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Flask, current_app, jsonify
from werkzeug.wrappers import Response

from ..inputs import IdConverter
from ..security import public
from ..services.definitions import workflow_schema
from . import bp

PREFIX = "/api/v1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(kind, str):
        return {"type": [kind, "null"]}
    return {"anyOf": [kind, {"type": "null"}]}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "next"],
            "properties": {"items": {"type": "array", "items": _ref(name)},
                           "next": _nullable("string")}}


def _counted_list_of(name: str) -> dict[str, Any]:
    """A list page with the previous page's cursor and a total counted up to a bound."""
    out = _list_of(name)
    out["required"] = ["items", "next", "previous", "total", "total_is_lower_bound"]
    out["properties"].update({"previous": _nullable("string"), "total": {"type": "integer"},
                              "total_is_lower_bound": {"type": "boolean"}})
    return out


STRING = {"type": "string"}
TIME = _nullable({"type": "string", "format": "date-time"})
CODE = {"type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[A-Za-z0-9_-]+$"}
ANY_OBJECT = {"type": "object"}

INSTANCE_FILTER = {
    "type": "object", "additionalProperties": False,
    "patternProperties": {"^var\\.": STRING},
    "properties": {"workflow": STRING, "integration": STRING, "state": STRING,
                   "active": {"type": "boolean"}, "record_key": STRING,
                   "record_key_prefix": STRING, "run_id": {"type": "integer", "minimum": 1},
                   "since": {"type": "string", "format": "date-time"},
                   "vars": {"type": "object", "additionalProperties": STRING}}}
BULK_SCHEMAS: dict[str, Any] = {
    "InstancesBulk": {"type": "object", "required": ["action"], "additionalProperties": False,
                      "properties": {
                          "filter": INSTANCE_FILTER,
                          "action": {"enum": ["advance", "reset", "delete", "migrate"]},
                          "transition": STRING, "comment": STRING, "state": STRING,
                          "note": STRING,
                          "to_version": {"type": "integer", "minimum": 1,
                                         "description": "migrate: the version to move to "
                                                        "(the filter must name one workflow; "
                                                        "needs the author role)"},
                          "state_map": {"type": "object", "additionalProperties": STRING,
                                        "description": "migrate: source state → state of "
                                                       "to_version; unmapped states keep "
                                                       "their code"},
                          "dry_run": {"type": "boolean"}}},
    "EventsBulk": {"type": "object", "required": ["action"], "additionalProperties": False,
                   "properties": {
                       "filter": {"type": "object", "additionalProperties": False,
                                  "properties": {
                                      "integration": STRING, "status": STRING,
                                      "source": STRING,
                                      "run_id": {"type": "integer", "minimum": 1},
                                      "instance_id": {"type": "integer", "minimum": 1}}},
                       "action": {"enum": ["replay"]}, "dry_run": {"type": "boolean"}}},
    "BulkPlan": {"type": "object", "required": ["operation_id", "matched", "refused"],
                 "properties": {"operation_id": _nullable("integer"),
                                "matched": {"type": "integer"},
                                "refused": {"type": "array", "items": {
                                    "type": "object", "required": ["count", "reason"],
                                    "properties": {"count": {"type": "integer"},
                                                   "reason": STRING, "workflow": STRING,
                                                   "state": STRING, "status": STRING}}}}},
    "Operation": {"type": "object", "required": ["status", "total", "done", "failed"],
                  "properties": {"id": {"type": "integer"},
                                 "status": {"enum": ["queued", "running", "done",
                                                     "cancelled"]},
                                 "total": {"type": "integer"}, "done": {"type": "integer"},
                                 "failed": {"type": "integer"}, "target": STRING,
                                 "action": STRING, "params": ANY_OBJECT,
                                 "filter": ANY_OBJECT, "errors": {"type": "array"},
                                 "created_by": STRING}},
}

SCHEMAS: dict[str, Any] = {
    **BULK_SCHEMAS,
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": STRING, "message": STRING, "details": {}}}}},
    "WorkflowRow": {"type": "object", "required": ["code", "description", "initial_state",
                                                   "enabled", "active_instances"],
                    "properties": {"code": STRING, "description": STRING,
                                   "initial_state": STRING, "enabled": {"type": "boolean"},
                                   "active_instances": {"type": "integer"},
                                   "latest_version": {"type": "integer"},
                                   "pinned_version": _nullable("integer")}},
    "WorkflowVersion": {"type": "object", "required": ["version", "created_at", "created_by",
                                                       "summary"],
                        "properties": {"version": {"type": "integer"}, "created_at": TIME,
                                       "created_by": STRING, "summary": STRING,
                                       "instances": {"type": "integer"},
                                       "active_instances": {"type": "integer"},
                                       "labels": {"type": "array", "items": STRING}}},
    "MigrationRequest": {
        "type": "object", "required": ["from_version", "to_version"],
        "additionalProperties": False,
        "properties": {"from_version": {"type": "integer", "minimum": 1},
                       "to_version": {"type": "integer", "minimum": 1},
                       "state_map": {"type": "object", "additionalProperties": STRING,
                                     "description": "source state → target state; "
                                                    "unmapped states keep their code"},
                       "dry_run": {"type": "boolean"},
                       "state": {"type": "string", "description": "only this source state"},
                       "integration": {"type": "string",
                                       "description": "only this integration's instances"}}},
    "MigrationPlan": {
        "type": "object", "required": ["from_version", "to_version", "movable", "blocked",
                                       "moves"],
        "properties": {"workflow": STRING, "from_version": {"type": "integer"},
                       "to_version": {"type": "integer"}, "state_map": ANY_OBJECT,
                       "filters": ANY_OBJECT, "movable": {"type": "integer"},
                       "blocked": {"type": "integer"},
                       "moves": {"type": "array", "items": {"type": "object", "properties": {
                           "from_state": STRING, "to_state": _nullable("string"),
                           "count": {"type": "integer"}, "reason": _nullable("string")}}},
                       "scenarios": {
                           "type": "object",
                           "description": "the saved scenarios run against to_version",
                           "properties": {
                               "saved": {"type": "integer"}, "run": {"type": "integer"},
                               "passed": {"type": "integer"},
                               "failing": {"type": "array", "items": {
                                   "type": "object", "properties": {
                                       "name": STRING, "expected": ANY_OBJECT,
                                       "got": ANY_OBJECT,
                                       "problems": {"type": "array", "items": STRING}}}},
                               "errors": {"type": "array", "items": {
                                   "type": "object", "properties": {
                                       "path": STRING, "message": STRING}}}}}}},
    "Migration": {
        "type": "object", "required": ["id", "status", "total", "done"],
        "properties": {"id": {"type": "integer"}, "from_version": {"type": "integer"},
                       "to_version": {"type": "integer"}, "state_map": ANY_OBJECT,
                       "filters": ANY_OBJECT,
                       "status": {"enum": ["queued", "running", "completed", "failed"]},
                       "total": {"type": "integer"}, "done": {"type": "integer"},
                       "skipped": {"type": "integer"}, "error": _nullable("string"),
                       "created_by": STRING, "created_at": TIME, "finished_at": TIME}},
    "DeletedWorkflow": {"type": "object", "required": ["deleted", "detached_integrations"],
                        "properties": {"deleted": STRING, "detached_integrations": {
                            "type": "array", "items": STRING}}},
    "Integration": {
        "type": "object", "required": ["code", "description", "workflow_code", "instance_mode",
                                       "enabled", "record_url_template", "secrets_set"],
        "properties": {"code": STRING, "description": STRING,
                       "workflow_code": _nullable("string"),
                       "instance_mode": {"enum": ["per_record", "per_run"]},
                       "enabled": {"type": "boolean"}, "record_url_template": STRING,
                       "secrets_set": {"type": "array", "items": STRING},
                       "secret_names": {"type": "array", "items": STRING}},
        "additionalProperties": True,
        "description": "Plugin settings appear as further top-level fields; secrets never."},
    "IntegrationWrite": {
        "type": "object",
        "properties": {"code": CODE, "description": {"type": "string", "maxLength": 100},
                       "workflow_code": _nullable("string"),
                       "instance_mode": {"enum": ["per_record", "per_run"]},
                       "enabled": {"type": "boolean"},
                       "record_url_template": {"type": "string", "maxLength": 500},
                       "secrets": {"type": "object", "additionalProperties": _nullable(
                           "string"), "description": "named secrets; null removes one"}},
        "additionalProperties": True,
        "description": "Plugin settings are accepted as further top-level fields."},
    "HistoryRow": {"type": "object", "properties": {
        "transition": _nullable("string"), "from_state": _nullable("string"),
        "to_state": STRING, "trigger_type": STRING, "event_id": _nullable("integer"),
        "actor": STRING, "notes": STRING, "at": TIME}},
    "Instance": {"type": "object", "required": ["id", "workflow", "integration", "state"],
                 "properties": {
                     "id": {"type": "integer"}, "workflow": STRING, "integration": STRING,
                     "record_key": _nullable("string"), "run_id": _nullable("integer"),
                     "state": STRING, "active": {"type": "boolean"},
                     "entered_state_at": TIME, "timeout_due_at": TIME, "data": ANY_OBJECT,
                     "vars": ANY_OBJECT, "last_trigger": _nullable("string"),
                     "last_transition": _nullable("string"), "version": {"type": "integer"},
                     "workflow_version": {"type": "integer"},
                     "created_at": TIME, "completed_at": TIME,
                     "history": {"type": "array", "items": _ref("HistoryRow")}}},
    "Event": {"type": "object", "required": ["id", "integration", "source", "status"],
              "properties": {
                  "id": {"type": "integer"}, "integration": STRING, "source": STRING,
                  "type": STRING, "record_key": _nullable("string"),
                  "run_id": _nullable("integer"), "payload": ANY_OBJECT,
                  "dedupe_key": STRING, "received_at": TIME,
                  "status": {"enum": ["pending", "processed", "skipped", "failed"]},
                  "result": STRING, "instance_id": _nullable("integer"),
                  "processed_at": TIME}},
    "Run": {"type": "object", "required": ["run_id", "integration", "direction", "status"],
            "properties": {
                "run_id": {"type": "integer"}, "integration": STRING,
                "direction": {"enum": ["import", "export"]}, "status": STRING,
                "started_at": TIME, "finished_at": TIME, "total": {"type": "integer"},
                "succeeded": {"type": "integer"}, "failed": {"type": "integer"},
                "actor": STRING, "events": {"type": "object", "additionalProperties": {
                    "type": "integer"}}}},
    "RunRequest": {"type": "object", "required": ["direction", "records"],
                   "additionalProperties": False,
                   "properties": {"direction": {"enum": ["import", "export"]},
                                  "records": {"type": "array", "items": {
                                      "type": "object", "properties": {
                                          "key": {"type": ["string", "integer"]},
                                          "data": ANY_OBJECT,
                                          "status": {"enum": ["success", "error"]}}}}}},
    "AuditEntry": {"type": "object", "required": ["id", "at", "actor", "action", "object_type",
                                                  "object_key"],
                   "properties": {"id": {"type": "integer"}, "at": TIME, "actor": STRING,
                                  "action": STRING, "object_type": STRING,
                                  "object_key": STRING, "details": ANY_OBJECT}},
    "ActionDelivery": {
        "type": "object",
        "required": ["id", "instance_id", "transition", "type", "status", "attempts"],
        "properties": {
            "id": {"type": "integer"}, "instance_id": _nullable("integer"),
            "alert_id": {**_nullable("integer"),
                         "description": "set for an alert rule's notification (no instance)"},
            "workflow": _nullable("string"), "integration": _nullable("string"),
            "transition": STRING, "action_id": _nullable("string"), "type": STRING,
            "status": {"enum": ["pending", "running", "succeeded", "failed", "gave_up"]},
            "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
            "next_attempt_at": TIME, "last_status_code": _nullable("integer"),
            "last_error": _nullable("string"), "request": ANY_OBJECT, "response": {},
            "created_at": TIME, "finished_at": TIME}},
    "AlertRule": {
        "type": "object",
        "required": ["id", "integration", "kind", "description", "state", "threshold",
                     "enabled", "notify_emails", "notify_webhooks", "created_at"],
        "properties": {
            "id": {"type": "integer"}, "integration": STRING,
            "kind": {"enum": ["stuck_in_state", "failed_events", "bc_subscription_expiring"]},
            "description": STRING, "state": _nullable("string"), "threshold": {"type": "number"},
            "enabled": {"type": "boolean"},
            "notify_emails": {"type": "array", "items": STRING},
            "notify_webhooks": {"type": "array", "items": STRING}, "created_at": TIME}},
    "AlertRuleWrite": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "kind": {"enum": ["stuck_in_state", "failed_events", "bc_subscription_expiring"],
                     "description": "set when the rule is added; cannot be changed"},
            "state": {**_nullable("string"),
                      "description": "stuck_in_state: a state code (empty: any active state)"},
            "threshold": {"type": "number", "description": "stuck_in_state: hours above 0; "
                                                           "failed_events: a whole number"},
            "enabled": {"type": "boolean"},
            "notify_emails": {"anyOf": [{"type": "array", "items": STRING}, STRING],
                              "description": "e-mail addresses told when the alert opens "
                                             "and resolves"},
            "notify_webhooks": {"anyOf": [{"type": "array", "items": STRING}, STRING],
                                "description": "subscriber URLs (send_webhook, signed with "
                                               "the integration's outbound webhook secret)"}}},
    "LintItem": {"type": "object", "required": ["code", "message", "path"],
                 "properties": {"code": STRING, "message": STRING, "path": STRING}},
    "LintReport": {"type": "object", "required": ["errors", "warnings"],
                   "properties": {"errors": {"type": "array", "items": _ref("LintItem")},
                                  "warnings": {"type": "array", "items": _ref("LintItem")}}},
    "Scenario": {
        "type": "object", "required": ["steps"], "additionalProperties": False,
        "properties": {
            "version": {"type": ["integer", "null"],
                       "description": "only the current definition (omit it) for now"},
            "record": {"type": "object", "additionalProperties": False, "properties": {
                "key": {"type": "string", "minLength": 1, "maxLength": 200},
                "data": ANY_OBJECT}},
            "steps": {"type": "array", "maxItems": 200, "items": {"oneOf": [
                {"type": "object", "required": ["event"], "additionalProperties": False,
                 "properties": {"event": {
                     "type": "object", "required": ["trigger_type"],
                     "additionalProperties": False,
                     "properties": {"trigger_type": STRING, "type": STRING,
                                    "payload": ANY_OBJECT, "record": ANY_OBJECT}}}},
                {"type": "object", "required": ["fire"], "additionalProperties": False,
                 "properties": {"fire": {"type": "string", "minLength": 1}}},
                {"type": "object", "required": ["advance_hours"], "additionalProperties": False,
                 "properties": {"advance_hours": {"type": "number", "exclusiveMinimum": 0,
                                                  "maximum": 87600}}},
                {"type": "object", "required": ["action_result"],
                 "additionalProperties": False,
                 "properties": {"action_result": {
                     "type": "object", "required": ["action", "outcome"],
                     "additionalProperties": False,
                     "properties": {"action": {"type": "string", "minLength": 1},
                                    "outcome": {"enum": ["succeeded", "failed"]},
                                    "status_code": {"type": "integer"}, "response": {}}}}},
            ]}}}},
    "SimulationStep": {
        "type": "object", "required": ["state", "fired", "why_not", "vars"],
        "properties": {"kind": STRING, "state": STRING, "fired": _nullable("string"),
                       "why_not": {"type": "array", "items": {
                           "type": "object", "required": ["transition", "reason"],
                           "properties": {"transition": STRING, "reason": STRING}}},
                       "vars": ANY_OBJECT, "note": STRING, "hours": {"type": "number"},
                       "moves": {"type": "array", "items": ANY_OBJECT}}},
    "Simulation": {
        "type": "object", "required": ["steps"],
        "properties": {"workflow": STRING, "start": ANY_OBJECT, "final": ANY_OBJECT,
                       "steps": {"type": "array", "items": _ref("SimulationStep")}}},
    "TriggerType": {"type": "object", "required": ["name", "label", "fields"],
                    "properties": {"name": STRING, "label": STRING, "description": STRING,
                                   "manual": {"type": "boolean"},
                                   "fields": {"type": "array", "items": ANY_OBJECT}}},
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or STRING}


LIMIT = _query("limit", "page size, 1-500 (default 50)",
               {"type": "integer", "minimum": 1, "maximum": 500})
CURSOR = _query("cursor", "the `next` value of the previous page")
ID_QUERY = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or STRING}


ID_PATH = {"type": "integer", "minimum": 1}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any] | None, status: str = "200") -> dict[str, Any]:
    responses: dict[str, Any] = {"default": {
        "description": "an error, with a 4xx status (503 when a service is unreachable)",
        "content": {"application/json": {"schema": _ref("Error")}}}}
    if schema is None:
        responses[status] = {"description": "done; no body"}
    else:
        responses[status] = {"description": "success",
                             "content": {"application/json": {"schema": schema}}}
    return responses


def _op(summary: str, responses: dict[str, Any], *, parameters: list[Any] | None = None,
        body: dict[str, Any] | None = None, role: str = "viewer") -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "description": f"Needs the {role} role.",
                                 "parameters": parameters or [], "responses": responses}
    if body is not None:
        operation["requestBody"] = body
    return operation


def _core_paths() -> dict[str, Any]:
    wf = _ref("WorkflowDocument")
    return {
        "/workflows": {"get": _op("Workflows by code", _ok(_list_of("WorkflowRow")),
                                  parameters=[LIMIT, CURSOR])},
        "/workflows/import": {"post": _op(
            "Import a workflow document (409 when the code exists unless replace=true)",
            {**_ok(wf, "201"), "200": {"description": "replaced", "content": {
                "application/json": {"schema": wf}}}},
            parameters=[_query("replace", "replace an existing workflow",
                               {"enum": ["true", "false"]})],
            body=_body(wf), role="author")},
        "/workflows/{code}/export": {"get": _op(
            "The export document of the latest version (or ?version=N), with its number",
            _ok(wf), parameters=[_path("code"), _query("version", "a version number", {
                "type": "integer", "minimum": 1, "maximum": 2**31 - 1})])},
        "/workflows/{code}/versions": {"get": _op(
            "The workflow's versions, newest first", _ok(_list_of("WorkflowVersion")),
            parameters=[_path("code")])},
        "/workflows/{code}/versions/{number}": {
            "get": _op("One version's export document", _ok(wf),
                       parameters=[_path("code"), _path("number", {"type": "integer"})]),
            "delete": _op("Delete an old version (409 while instances follow it)",
                          _ok({"type": "object", "properties": {"deleted": {
                              "type": "integer"}}}),
                          parameters=[_path("code"), _path("number", {"type": "integer"})],
                          role="author")},
        "/workflows/{code}/migrations": {"post": _op(
            "Dry-run (200, the plan) or start (202) a migration between versions",
            {**_ok(_ref("MigrationPlan")), "202": {"description": "queued", "content": {
                "application/json": {"schema": _ref("Migration")}}}},
            parameters=[_path("code")], body=_body(_ref("MigrationRequest")), role="author")},
        "/workflows/{code}/migrations/{migration_id}": {"get": _op(
            "A migration and its progress", _ok(_ref("Migration")),
            parameters=[_path("code"), _path("migration_id", ID_PATH)])},
        "/workflows/{code}/copy": {"post": _op(
            "Copy under a new code", _ok(wf, "201"), parameters=[_path("code")],
            body=_body({"type": "object", "required": ["new_code"],
                        "additionalProperties": False, "properties": {"new_code": CODE}}),
            role="author")},
        "/workflows/{code}": {
            "patch": _op("Change enabled, description and/or pinned_version", _ok(wf),
                         parameters=[_path("code")],
                         body=_body({"type": "object", "additionalProperties": False,
                                     "properties": {"enabled": {"type": "boolean"},
                                                    "description": {"type": "string",
                                                                    "maxLength": 100},
                                                    "pinned_version": _nullable(
                                                        "integer")}}),
                         role="author"),
            "delete": _op("Delete (409 while instances are active)", _ok(_ref(
                "DeletedWorkflow")), parameters=[_path("code")], role="author")},
        "/workflows/{code}/lint": {"get": _op(
            "Lint: the definition's rule errors and its warnings, each with a path",
            _ok(_ref("LintReport")), parameters=[_path("code")])},
        "/workflows/{code}/simulate": {"post": _op(
            "Run a scenario through the workflow (writes nothing)", _ok(_ref("Simulation")),
            parameters=[_path("code")], body=_body(_ref("Scenario")))},
        "/integrations": {
            "get": _op("Integrations by code", _ok(_list_of("Integration")),
                       parameters=[LIMIT, CURSOR]),
            "post": _op("Create an integration", _ok(_ref("Integration"), "201"),
                        body=_body(_ref("IntegrationWrite")), role="author")},
        "/integrations/{code}": {
            "get": _op("One integration", _ok(_ref("Integration")),
                       parameters=[_path("code")]),
            "patch": _op("Change fields of an integration", _ok(_ref("Integration")),
                         parameters=[_path("code")], body=_body(_ref("IntegrationWrite")),
                         role="author")},
        "/integrations/{code}/runs": {"post": _op(
            "Run an import or export; answers the run", _ok(_ref("Run"), "201"),
            parameters=[_path("code")], body=_body(_ref("RunRequest")), role="operator")},
        "/runs/{run_id}": {"get": _op("A run and the progress of its events", _ok(_ref("Run")),
                                      parameters=[_path("run_id", ID_PATH)])},
        "/instances": {"get": {**_op(
            "Instances; `var.<name>=<value>` (up to 3) filters by a captured workflow variable",
            _ok(_counted_list_of("Instance")), parameters=[
                _query("workflow", "workflow code"), _query("integration", "integration code"),
                _query("state", "state code"),
                _query("active", "active only (true) or finished only (false)",
                       {"enum": ["true", "false"]}),
                _query("record_key", "record key"),
                _query("record_key_prefix", "record keys starting with this"),
                _query("run_id", "run id", ID_QUERY),
                _query("sort", "order (a leading - for descending; default entered)",
                       {"enum": [f"{d}{k}" for k in ("entered", "state", "record_key",
                                                     "last_transition") for d in ("", "-")]}),
                LIMIT, _query("cursor", "the `next` or `previous` value of a page")])}},
        "/instances/bulk": {"post": _op(
            "One action on every instance a filter matches: a dry run (200, operation_id "
            "null) or a queued operation (202)", {**_ok(_ref("BulkPlan")), "202": {
                "description": "started", "content": {"application/json": {
                    "schema": _ref("BulkPlan")}}}},
            body=_body(_ref("InstancesBulk")), role="operator")},
        "/events/bulk": {"post": _op(
            "Replay every event a filter matches (dry run or queued operation)",
            {**_ok(_ref("BulkPlan")), "202": {"description": "started", "content": {
                "application/json": {"schema": _ref("BulkPlan")}}}},
            body=_body(_ref("EventsBulk")), role="operator")},
        "/operations/{operation_id}": {"get": _op(
            "A bulk operation's progress", _ok(_ref("Operation")),
            parameters=[_path("operation_id", ID_PATH)])},
        "/operations/{operation_id}/cancel": {"post": _op(
            "Cancel a queued or running bulk operation (409 once finished)",
            _ok(_ref("Operation")), parameters=[_path("operation_id", ID_PATH)],
            role="operator")},
        "/instances/{instance_id}": {
            "get": _op("An instance with its history", _ok(_ref("Instance")),
                       parameters=[_path("instance_id", ID_PATH)]),
            "delete": _op("Delete Instance (audited)", _ok(None, "204"),
                          parameters=[_path("instance_id", ID_PATH)], role="operator")},
        "/instances/{instance_id}/fire": {"post": _op(
            "Fire a Manual transition", _ok(_ref("Instance")),
            parameters=[_path("instance_id", ID_PATH)],
            body=_body({"type": "object", "required": ["transition"],
                        "additionalProperties": False,
                        "properties": {"transition": STRING, "comment": STRING}}),
            role="operator")},
        "/instances/{instance_id}/reset": {"post": _op(
            "Reset to State", _ok(_ref("Instance")), parameters=[_path("instance_id", ID_PATH)],
            body=_body({"type": "object", "required": ["state", "note"],
                        "additionalProperties": False,
                        "properties": {"state": STRING, "note": STRING}}),
            role="operator")},
        "/events": {"get": _op("Stored events, newest first", _ok(_counted_list_of("Event")),
                               parameters=[
            _query("integration", "integration code"),
            _query("status", "event status",
                   {"enum": ["pending", "processed", "skipped", "failed"]}),
            _query("source", "trigger type"), _query("run_id", "run id", ID_QUERY),
            _query("instance_id", "instance id", ID_QUERY), LIMIT,
            _query("cursor", "the `next` value of the previous page", ID_QUERY),
            _query("before", "the `previous` value of the next page", ID_QUERY)])},
        "/events/{event_id}/replay": {"post": _op(
            "Queue a skipped or failed event again", _ok(_ref("Event")),
            parameters=[_path("event_id", ID_PATH)], role="operator")},
        "/actions": {"get": _op(
            "Deliveries of transition actions, newest first", _ok(_list_of("ActionDelivery")),
            parameters=[
                _query("status", "delivery status", {"enum": ["pending", "running", "succeeded",
                                                              "failed", "gave_up"]}),
                _query("workflow", "workflow code"), _query("integration", "integration code"),
                _query("instance_id", "instance id", ID_QUERY), _query("type", "action type"),
                LIMIT, _query("cursor", "the `next` value of the previous page", ID_QUERY)])},
        "/actions/{delivery_id}/retry": {"post": _op(
            "Retry a pending, failed or given-up delivery now", _ok(_ref("ActionDelivery")),
            parameters=[_path("delivery_id", ID_PATH)], role="operator")},
        "/integrations/{code}/alert-rules": {
            "get": _op("An integration's alert rules, oldest first",
                       _ok(_list_of("AlertRule")), parameters=[_path("code")]),
            "post": _op("Add an alert rule (kind required; audited)",
                        _ok(_ref("AlertRule"), "201"), parameters=[_path("code")],
                        body=_body({"allOf": [_ref("AlertRuleWrite")], "required": ["kind"]}),
                        role="author")},
        "/alert-rules/{rule_id}": {
            "get": _op("One alert rule", _ok(_ref("AlertRule")),
                       parameters=[_path("rule_id", ID_PATH)]),
            "patch": _op("Change state, threshold, recipients and/or enabled (audited; "
                         "disabling resolves the open alert)", _ok(_ref("AlertRule")),
                         parameters=[_path("rule_id", ID_PATH)],
                         body=_body(_ref("AlertRuleWrite")), role="author"),
            "delete": _op("Remove an alert rule and its alerts (audited)", _ok(None, "204"),
                          parameters=[_path("rule_id", ID_PATH)], role="author")},
        "/trigger-types": {"get": _op("The registered trigger types",
                                      _ok(_list_of("TriggerType")))},
        "/audit": {"get": _op("The audit log, newest first", _ok(_list_of("AuditEntry")),
                              parameters=[_query("actor", "who"), _query("action", "action"),
                                          _query("object_type", "object type"),
                                          _query("object_key", "code or id"), LIMIT,
                                          _query("cursor", "the `next` value", ID_QUERY)],
                              role="admin")},
        "/openapi.json": {"get": {"summary": "This description", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.1",
                                                        "content": {"application/json": {
                                                            "schema": ANY_OBJECT}}}}}},
    }


def _workflow_schemas() -> dict[str, Any]:
    """The shipped workflow JSON Schema as components (its $defs renamed Workflow_<name>)."""
    schema = copy.deepcopy(workflow_schema())
    defs = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (re.sub(r"^#/\$defs/", "#/components/schemas/Workflow_", v)
                        if k == "$ref" and isinstance(v, str) else rewrite(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    out = {"WorkflowDocument": rewrite(schema)}
    out.update({f"Workflow_{name}": rewrite(value) for name, value in defs.items()})
    return out


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)[len(PREFIX):]


def build(app: Flask) -> dict[str, Any]:
    """The whole description: the core paths, plus any other /api/v1 route of the app."""
    paths = _core_paths()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        path = _openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            entry = paths.setdefault(path, {})
            if method.lower() in entry:
                continue
            view = app.view_functions[rule.endpoint]
            doc = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
            role = getattr(getattr(view, "_wfapp_role", None), "value", "viewer")
            parameters = [_path(name, ID_PATH if isinstance(conv, IdConverter) else STRING)
                          for name, conv in rule._converters.items()]
            operation = _op(doc, {"default": {"description": "the answer, as JSON",
                                              "content": {"application/json": {
                                                  "schema": ANY_OBJECT}}}},
                            parameters=parameters, role=role)
            if method in ("POST", "PUT", "PATCH"):
                operation["requestBody"] = {"required": False, "content": {
                    "application/json": {"schema": ANY_OBJECT}}}
            entry[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "wfapp API", "version": "1",
                 "description": "The JSON API of wfapp. Send `Authorization: Bearer <token>` "
                                "(flask --app wfapp token create NAME). Lists answer "
                                "{items, next}; errors answer {error: {code, message, "
                                "details}} with a 4xx status."},
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {**SCHEMAS, **_workflow_schemas()}},
    }


@bp.get("/openapi.json")
@public
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API (no login needed)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions["wfapp"]
    if "openapi" not in state:  # the routes are fixed once the app is built
        state["openapi"] = build(app)
    response = jsonify(state["openapi"])
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
