"""On Import: fired by import runs, per record or once per run."""

from __future__ import annotations

from wfapp.plugin_api import TriggerType, hookimpl

from ._records import record_trigger

ON_IMPORT = record_trigger("on_import", "On Import", "import")


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On Import trigger type."""
    return [ON_IMPORT]
