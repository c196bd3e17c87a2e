"""On Action Result: the outcome of a transition's action, fed back as an event of its instance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wfapp.plugin_api import Field, TriggerType, hookimpl

OUTCOMES = (("succeeded", "Succeeded"), ("failed", "Failed"))


class ActionResultTrigger(TriggerType):
    """Fires on the outcome event of an action, matched by the action's id or type."""

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        return not self.explain_mismatch(config, event)

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        payload = event.get("payload") or {}
        wanted = config.get("action")
        names = {payload.get("action_id"), payload.get("action_type")} - {None, ""}
        if wanted and wanted not in names:
            shown = " / ".join(sorted(map(str, names))) or "an unnamed action"
            return f"waits for action {wanted!r}; this result is of {shown}"
        outcome = config.get("outcome")
        if outcome and payload.get("outcome") != outcome:
            return f"waits for outcome {outcome}; the action {payload.get('outcome')}"
        return ""


ON_ACTION_RESULT = ActionResultTrigger(
    name="on_action_result",
    label="On Action Result",
    description="The outcome of an action of an earlier transition (an HTTP request, a "
                "webhook, an e-mail): succeeded, or failed after its last attempt.",
    fields=(
        Field("action", "Action", required=True, max_length=40,
              help="The action's id, or its type (http_request, send_webhook, send_email)."),
        Field("outcome", "Outcome", type="choice", choices=OUTCOMES,
              help="Succeeded or failed; empty = either."),
    ),
)


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On Action Result trigger type."""
    return [ON_ACTION_RESULT]
