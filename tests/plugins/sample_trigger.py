"""A third-party trigger plugin used by the tests: every hook wfapp offers, implemented once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, jsonify, request
from markupsafe import escape

from wfapp.plugin_api import (
    ActionContext,
    ActionResult,
    ActionType,
    Field,
    InputError,
    MetricFamily,
    Panel,
    TriggerType,
    csrf_exempt,
    hookimpl,
    json_error,
    parse_json,
    public,
)


class SftpTrigger(TriggerType):
    """Fires when a file with the configured suffix arrives."""

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        return str((event.get("payload") or {}).get("filename", "")).endswith(
            config.get("suffix", ""))


SFTP = SftpTrigger(name="on_sftp_file", label="On SFTP File",
                   fields=(Field("suffix", "File Suffix", required=True),))

bp = Blueprint("sample_trigger", __name__, url_prefix="/sample")


@bp.get("/ping")
@public
def ping() -> Any:
    """A public route added by the plugin."""
    return jsonify({"pong": True})


@bp.post("/echo")
@csrf_exempt
@public
def echo() -> Any:
    """A public POST that machines call: no CSRF token, JSON in, JSON (or a JSON error) out."""
    try:
        body = parse_json(request.get_data())
    except InputError as exc:
        return json_error(422, "invalid_body", f"{exc.path} {exc.message}")
    return jsonify({"echo": body})


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    return [SFTP]


@hookimpl
def register_integration_settings() -> list[Field]:
    return [Field("sftp_host", "SFTP Host", default="localhost")]


@hookimpl
def register_blueprints() -> list[Blueprint]:
    return [bp]


def _panel(integration: Any) -> str:
    return f'<p id="sftp-panel">Files for {escape(integration.code)} arrive at ' \
        f'{escape(integration.setting("sftp_host"))}.</p>'


@hookimpl
def register_integration_panels() -> list[Panel]:
    return [Panel("sftp", "SFTP drop", _panel)]


@hookimpl
def register_schedules() -> list[tuple[str, float, str]]:
    return [("sftp-poll", 60.0, "tests.plugins.sample_trigger.poll")]


class Notify(ActionType):
    """A side-effecting action that records what it was asked to do (in NOTIFIED)."""

    def deliver(self, config: Any, context: ActionContext) -> ActionResult:
        NOTIFIED.append((context.instance_id, context.transition, config.get("channel")))
        return ActionResult(True, response={"notified": config.get("channel")})


NOTIFIED: list[tuple[int, str, Any]] = []


@hookimpl
def register_transition_actions() -> list[Any]:
    return [Notify("notify", "Notify", fields=(Field("channel", "Channel"),))]


def _files_waiting() -> list[MetricFamily]:
    return [MetricFamily("wfapp_sftp_files_waiting", "gauge", "Files waiting on the SFTP host",
                         ("host",), [(("localhost",), 3)])]


@hookimpl
def register_metrics() -> list[Any]:
    return [_files_waiting]


def poll() -> None:
    """The scheduled job (nothing to poll in tests)."""
