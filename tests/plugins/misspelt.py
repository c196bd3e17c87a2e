"""A plugin whose hook name is misspelt: start-up must fail."""

from wfapp.plugin_api import hookimpl


@hookimpl
def register_trigger_type() -> list:
    return []
