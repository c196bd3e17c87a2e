"""On Webhook: fired by signed POSTs to /hooks/<integration>.

The endpoint lives in `_webhook_endpoint.py`, the settings and their checks in
`_webhook_settings.py`, the card panel and "Generate new secret" in `_webhook_panel.py`; docs in
docs/webhooks.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint

from wfapp.plugin_api import (
    MISSING,
    Field,
    Panel,
    TriggerType,
    glob_match,
    hookimpl,
    resolve_path,
)

from . import _webhook_panel
from ._webhook_endpoint import bp
from ._webhook_settings import SETTINGS, check_settings


class WebhookTrigger(TriggerType):
    """Matches webhook events by event type pattern and an optional expected value."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        if config.get("expected_value") not in (None, "") and not config.get("json_path"):
            return [("json_path", "is required when Expected Value is set")]
        return []

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Match the event type against `event_filter`, then `json_path` against its value."""
        return not self.explain_mismatch(config, event)

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """Name the field that did not match: Event Filter, JSON Path or Expected Value."""
        pattern = config.get("event_filter")
        event_type = str(event.get("type") or "")
        if pattern and not glob_match(pattern, event_type):
            return (f"Event Filter: the event type {event_type!r} does not match the filter "
                    f"{pattern!r}")
        path = config.get("json_path")
        if not path:
            return ""
        value = resolve_path(event.get("payload") or {}, path)
        expected = config.get("expected_value")
        if value is MISSING:
            return f"JSON Path: the payload has no {path}"
        if expected not in (None, "") and str(value) != str(expected):
            return (f"Expected Value: the payload's {path} is {value!r}; this transition waits "
                    f"for {expected!r}")
        return ""

    def check_settings(self, settings: Mapping[str, Any], changed: frozenset[str] = frozenset()
                       ) -> list[tuple[str, str]]:
        """The webhook settings: paths, allow-list, secret format, the generic HMAC fields."""
        return check_settings(settings, changed)


ON_WEBHOOK = WebhookTrigger(
    name="on_webhook",
    label="On Webhook",
    description="A signed HTTP POST to /hooks/<integration>.",
    exclusive_fields=("event_filter",),
    fields=(
        Field("event_filter", "Event Filter", help="Event type to react to; * matches any run of "
              "characters (order.*). Empty reacts to every event."),
        Field("json_path", "JSON Path", help="Dotted path into the payload, e.g. data.status."),
        Field("expected_value", "Expected Value", help="Fire only when the value at JSON Path "
              "equals this."),
    ),
)


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On Webhook trigger type."""
    return [ON_WEBHOOK]


@hookimpl
def register_integration_settings() -> list[Field]:
    """Webhook switch and secret, payload paths, limits, allow-list, the generic HMAC scheme."""
    return SETTINGS


@hookimpl
def register_blueprints() -> list[Blueprint]:
    """`POST /hooks/<integration>` and the card's "Generate new secret"."""
    return [bp]


@hookimpl
def register_integration_panels() -> list[Panel]:
    """The Webhook panel: endpoint, curl example, deliveries."""
    return [_webhook_panel.PANEL]
