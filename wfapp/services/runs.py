"""Integration runs: an import or export of records, turned into events for the workflow.

Per Record mode: each record becomes one On Import / On Export event keyed by the record.
Per Run mode: the run's instance is created when the run starts, and one event carrying the
run's summary reaches it when the run ends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ..engine import RuleError
from ..extensions import db
from ..inputs import InputError, parse_csv, parse_json
from ..models import Event, InstanceMode, Integration, Run, RunStatus, utcnow
from .errors import Conflict, NotFound, ValidationFailed
from .events import NewEvent, ingest
from .firing import compiled_workflow, create_instance

DIRECTIONS = ("import", "export")
RECORD_STATUSES = ("success", "error")
MAX_RECORDS = 100_000
RECORD_FIELDS = {"key", "data", "status"}


def check_records(records: Any) -> list[dict[str, Any]]:
    """Validate run records ({key, data, status}); every error names its place."""
    if not isinstance(records, list):
        raise ValidationFailed([RuleError("records", "must be a list of records")])
    if len(records) > MAX_RECORDS:
        raise ValidationFailed([RuleError("records", f"at most {MAX_RECORDS} records per run")])
    errors: list[RuleError] = []
    clean = []
    for i, item in enumerate(records):
        place = f"records[{i}]"
        if not isinstance(item, dict):
            errors.append(RuleError(place, "must be an object with key, data and status"))
            continue
        errors += [RuleError(f"{place}.{k}", "unknown field") for k in item
                   if k not in RECORD_FIELDS]
        key = item.get("key")
        if isinstance(key, bool) or not isinstance(key, str | int) or str(key).strip() == "":
            errors.append(RuleError(f"{place}.key", "is required (a string or a number)"))
        elif len(str(key)) > 200:
            errors.append(RuleError(f"{place}.key", "must be at most 200 characters"))
        data = item.get("data", {})
        if data is None:
            data = {}
        if not isinstance(data, dict):
            errors.append(RuleError(f"{place}.data", "must be an object"))
        status = item.get("status", "success")
        if status not in RECORD_STATUSES:
            errors.append(RuleError(f"{place}.status", "must be success or error"))
        clean.append({"key": str(key).strip() if key is not None else "", "data": data,
                      "status": status})
    if errors:
        raise ValidationFailed(errors)
    return clean


def parse_records_file(content: bytes, filename: str) -> list[Any]:
    """Read records from an uploaded JSON or CSV file (CSV: key, status, then data columns).

    Both go through the input boundary (wfapp.inputs): the same bad bytes get the same answer
    as through the API.
    """
    try:
        if filename.lower().endswith(".csv"):
            rows = parse_csv(content)
            if not rows and not content.strip():
                raise InputError("is empty: a CSV file needs a header row", "file")
            if rows and "key" not in rows[0]:
                raise InputError("a CSV file needs a header row with a key column (and "
                                 "optionally status)", "file")
            return [{"key": row.get("key") or "",
                     "data": {k: v for k, v in row.items() if k not in ("key", "status") and k},
                     "status": (row.get("status") or "success").strip().lower()}
                    for row in rows]
        document = parse_json(content)
    except InputError as error:
        place = "file" if error.path in ("body", "file") else f"file: {error.path}"
        raise ValidationFailed([RuleError(place, error.message)]) from None
    if isinstance(document, dict) and "records" in document:
        document = document["records"]
    if not isinstance(document, list):
        raise ValidationFailed([RuleError("file", "must hold a list of records or "
                                          '{"records": [...]}')])
    return document


def start_run(integration: Integration, direction: str, records: Any, actor: str) -> Run:
    """Run an import or export of `records` for an integration; return the finished run."""
    if direction not in DIRECTIONS:
        raise ValidationFailed([RuleError("direction", "must be import or export")])
    if not integration.enabled:
        raise Conflict(f"integration {integration.code} is disabled")
    clean = check_records(records)
    source = "on_import" if direction == "import" else "on_export"
    failed = sum(1 for r in clean if r["status"] == "error")
    now = utcnow()
    run = Run(integration_id=integration.id, direction=direction,
              status=RunStatus.RUNNING.value, started_at=now, total=len(clean),
              succeeded=len(clean) - failed, failed=failed, actor=actor)
    db.session.add(run)
    db.session.flush()
    per_run = integration.instance_mode == InstanceMode.PER_RUN.value
    if per_run and integration.workflow_id is not None:
        workflow = compiled_workflow(integration.workflow_id)
        if workflow is not None and workflow.enabled:
            create_instance(db.session.connection(), integration.workflow_id, workflow,
                            integration.id, None, run.id, {}, actor, source, now)
    run.summary = {"run_id": run.id, "direction": direction, "total": run.total,
                   "succeeded": run.succeeded, "failed": run.failed,
                   "status": "error" if failed else "success"}
    if per_run:
        events = [NewEvent(source, f"{direction}.run", None, run.id, dict(run.summary),
                           dict(run.summary), f"run-{run.id}")]
    else:
        events = [NewEvent(source, f"{direction}.record", r["key"], run.id,
                           {"key": r["key"], "data": r["data"], "status": r["status"],
                            "run_id": run.id, "direction": direction},
                           r["data"], f"run-{run.id}-{i}")
                  for i, r in enumerate(clean)]
    run.status = RunStatus.COMPLETED.value
    run.finished_at = utcnow()
    ingest(integration, events)  # commits the run with its events
    return run


def get_run(run_id: int) -> Run:
    """Return the run with this id; raise NotFound otherwise."""
    run = db.session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return run


def run_progress(run: Run) -> dict[str, int]:
    """How many of the run's events are pending, processed, skipped or failed."""
    counts = dict(db.session.execute(
        select(Event.status, func.count()).where(Event.integration_id == run.integration_id,
                                                 Event.run_id == run.id)
        .group_by(Event.status)).all())
    return {status: counts.get(status, 0)
            for status in ("pending", "processed", "skipped", "failed")}


def list_runs(integration: Integration | None = None, limit: int = 50) -> list[Run]:
    """The latest runs, newest first."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if integration is not None:
        query = query.where(Run.integration_id == integration.id)
    return list(db.session.scalars(query))
