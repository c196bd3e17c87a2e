"""A plugin that registers a trigger type name that already exists."""

from wfapp.hookspecs import hookimpl
from wfapp.triggers import TriggerType


@hookimpl
def register_trigger_types() -> list:
    return [TriggerType(name="manual", label="Another Manual")]
