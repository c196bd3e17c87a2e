"""On Webhook: fired by signed POSTs to /hooks/<integration>."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wfapp.hookspecs import hookimpl
from wfapp.paths import MISSING, resolve_path
from wfapp.triggers import Field, TriggerType, glob_match


class WebhookTrigger(TriggerType):
    """Matches webhook events by event type pattern and an optional expected value."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        if config.get("expected_value") not in (None, "") and not config.get("json_path"):
            return [("json_path", "is required when Expected Value is set")]
        return []

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Match the event type against `event_filter`, then `json_path` against its value."""
        pattern = config.get("event_filter")
        if pattern and not glob_match(pattern, str(event.get("type") or "")):
            return False
        path = config.get("json_path")
        if path:
            value = resolve_path(event.get("payload") or {}, path)
            if value is MISSING:
                return False
            expected = config.get("expected_value")
            if expected not in (None, "") and str(value) != str(expected):
                return False
        return True

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """Say whether the event type or the value at JSON Path did not match."""
        pattern = config.get("event_filter")
        if pattern and not glob_match(pattern, str(event.get("type") or "")):
            return f"event type {event.get('type')!r} does not match the filter {pattern!r}"
        path = config.get("json_path")
        if path and not self.matches(config, event):
            value = resolve_path(event.get("payload") or {}, path)
            shown = "missing" if value is MISSING else repr(value)
            return (f"payload {path} is {shown}; this transition waits for "
                    f"{config.get('expected_value')!r}")
        return ""


ON_WEBHOOK = WebhookTrigger(
    name="on_webhook",
    label="On Webhook",
    description="A signed HTTP POST to /hooks/<integration>.",
    fields=(
        Field("event_filter", "Event Filter", help="Event type to react to; * matches any run of "
              "characters (order.*). Empty reacts to every event."),
        Field("json_path", "JSON Path", help="Dotted path into the payload, e.g. data.status."),
        Field("expected_value", "Expected Value", help="Fire only when the value at JSON Path "
              "equals this."),
    ),
)

SETTINGS = [
    Field("webhook_secret", "Webhook Secret", type="secret",
          help="Standard Webhooks secret (whsec_<base64>); write-only."),
    Field("record_key_path", "Record Key Path", default="id",
          help="Dotted path of the record key in a webhook payload (default id)."),
    Field("event_type_path", "Event Type Path", default="type",
          help="Dotted path of the event type in a webhook payload (default type)."),
]


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On Webhook trigger type."""
    return [ON_WEBHOOK]


@hookimpl
def register_integration_settings() -> list[Field]:
    """Webhook secret and the payload paths of the record key and event type."""
    return SETTINGS
