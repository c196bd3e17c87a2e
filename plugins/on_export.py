"""On Export: fired by export runs, per record or once per run."""

from __future__ import annotations

from wfapp.plugin_api import TriggerType, hookimpl

from ._records import record_trigger

ON_EXPORT = record_trigger("on_export", "On Export", "export")


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On Export trigger type."""
    return [ON_EXPORT]
