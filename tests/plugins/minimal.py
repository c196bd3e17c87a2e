"""A plugin with one trigger type and nothing else (the second module of a PLUGINS list)."""

from wfapp.plugin_api import TriggerType, hookimpl


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    return [TriggerType(name="on_minimal", label="On Minimal")]
