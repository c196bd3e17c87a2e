"""A plugin that registers a trigger type name that already exists."""

from wfapp.plugin_api import TriggerType, hookimpl


@hookimpl
def register_trigger_types() -> list:
    return [TriggerType(name="manual", label="Another Manual")]
