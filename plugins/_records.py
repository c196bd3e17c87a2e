"""What the On Import and On Export trigger types share: a record status filter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wfapp.plugin_api import Field, TriggerType

RECORD_STATUSES = (("success", "Success"), ("error", "Error"))


class RecordTrigger(TriggerType):
    """A trigger fired by the records of an integration run, optionally filtered by status."""

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Match when no status filter is set or the record's status equals it."""
        wanted = config.get("record_status")
        if not wanted:
            return True
        record = event.get("record") or {}
        status = record.get("status") or (event.get("payload") or {}).get("status")
        return status == wanted

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """Name the record status the transition waits for."""
        if self.matches(config, event):
            return ""
        record = event.get("record") or {}
        status = record.get("status") or (event.get("payload") or {}).get("status")
        return (f"the record's status is {status!r}; this transition fires for "
                f"{config.get('record_status')!r} records")


def record_trigger(name: str, label: str, direction: str) -> RecordTrigger:
    """Build the trigger type for one run direction."""
    return RecordTrigger(
        name=name,
        label=label,
        description=f"Fired by {direction} runs: per record (Per Record mode) or once when the "
        "run ends, with its summary (Per Run mode).",
        # Per record: the record with its status; per run: the run's summary.
        event_fields=("key", "data", "status", "run_id", "direction", "total", "succeeded",
                      "failed"),
        fields=(
            Field("record_status", "Record Status", type="choice", choices=RECORD_STATUSES,
                  help="Fire only for records with this status; empty fires for every record."),
        ),
    )
