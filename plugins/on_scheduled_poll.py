"""On Scheduled Poll: a scheduled HTTP request per active instance decides the transition."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from wfapp.hookspecs import hookimpl
from wfapp.paths import MISSING, resolve_path
from wfapp.triggers import Field, TriggerType

METHODS = tuple((m, m) for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"))
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
ALLOWED_PLACEHOLDER = re.compile(r"record_key|run_id|vars\.[A-Za-z_][A-Za-z0-9_]*")


class PollTrigger(TriggerType):
    """Validates the URL template and headers; matches on the response value."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        url = config["url"]
        parts = urlsplit(PLACEHOLDER.sub("x", url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            errors.append(("url", "must be an http:// or https:// URL"))
        for name in PLACEHOLDER.findall(url):
            if not ALLOWED_PLACEHOLDER.fullmatch(name):
                errors.append(("url", f"unknown placeholder {{{name}}}; use {{record_key}}, "
                               "{run_id} or {vars.<name>}"))
        for key, value in (config.get("headers") or {}).items():
            if not isinstance(value, str):
                errors.append(("headers", f"header {key!r} must have a string value"))
        if config.get("expected_value") not in (None, "") and not config.get("response_path"):
            errors.append(("response_path", "is required when Expected Value is set"))
        return errors

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Match a 2xx response whose value at `response_path` equals `expected_value`."""
        payload = event.get("payload") or {}
        if payload.get("error"):
            return False
        path = config.get("response_path")
        if not path:
            return True
        value = resolve_path(payload.get("response"), path)
        if value is MISSING:
            return False
        expected = config.get("expected_value")
        return expected in (None, "") or str(value) == str(expected)


ON_SCHEDULED_POLL = PollTrigger(
    name="on_scheduled_poll",
    label="On Scheduled Poll",
    description="Every N minutes, an HTTP request for each active instance in the From State.",
    fields=(
        Field("url", "URL", required=True, help="Template: {record_key}, {run_id}, "
              "{vars.<name>} are filled in per instance."),
        Field("method", "Method", type="choice", choices=METHODS, default="GET"),
        Field("headers", "Headers", type="json", help="JSON object of header names to values."),
        Field("interval_minutes", "Interval (Minutes)", type="number", required=True, min=0.01,
              default=5),
        Field("response_path", "Response Path", help="Dotted path into the JSON response."),
        Field("expected_value", "Expected Value", help="Fire only when the value at Response "
              "Path equals this."),
    ),
)


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On Scheduled Poll trigger type."""
    return [ON_SCHEDULED_POLL]
