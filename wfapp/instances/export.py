"""The Workflow Instances list as CSV: the page's columns, one line per matching instance."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from ..services import instance_list

HEADER = ["Id", "Workflow", "Integration Code", "Record ID", "Run", "Current State",
          "State Description", "Active", "In State Since", "Last Trigger", "Last Transition",
          "Variables"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (record keys come from outside) is
    prefixed with an apostrophe, as OWASP advises for CSV files."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_rows(filters: instance_list.InstanceFilters, sort: str, labels: dict[str, str]
             ) -> Iterator[str]:
    """The CSV text in chunks of about a thousand lines (a download of any size streams)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for number, row in enumerate(instance_list.iter_rows(filters, sort), start=1):
        i = row.instance
        writer.writerow([_cell(v) for v in (
            i.id, row.workflow_code, row.integration_code, i.record_key or "", i.run_id or "",
            i.state, row.state_description, "yes" if i.active else "no",
            i.entered_state_at.isoformat(),
            labels.get(i.last_trigger or "", i.last_trigger or ""), i.last_transition or "",
            json.dumps(i.vars or {}, sort_keys=True, ensure_ascii=False))])
        if number % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
