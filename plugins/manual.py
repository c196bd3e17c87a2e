"""Manual: a person fires the transition from the instance page or the API."""

from __future__ import annotations

from wfapp.plugin_api import Field, TriggerType, hookimpl

MANUAL = TriggerType(
    name="manual",
    label="Manual",
    description="A button on the instance page; people with the operator role fire it.",
    manual=True,
    # A manual fire carries the comment the person typed.
    event_fields=("comment",),
    fields=(
        Field("button_label", "Button Label", help="Text on the button; the transition's "
              "description when empty.", max_length=60),
        Field("confirm", "Ask for Confirmation", type="bool", default=False,
              help="Ask the user to confirm before the transition fires."),
    ),
)


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The Manual trigger type."""
    return [MANUAL]
