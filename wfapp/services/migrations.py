"""Migrating instances between workflow versions: a plan (the dry run), then a chunked job.

The plan maps each source state to a target state (by default the same code) and says, per
source state, how many instances go where and which cannot move and why. The run is a queue
job that moves the instances in chunks, one transaction each, with a compare-and-set on the
instance's version and the version it follows, a history row per instance ("migrated v1 → v2")
and the progress on the migration row, so 100,000 instances never hold a request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, insert, select, update

from ..engine import RuleError, normalize_code
from ..extensions import db
from ..models import (
    HistoryEntry,
    Instance,
    Integration,
    MigrationStatus,
    Workflow,
    WorkflowMigration,
    utcnow,
)
from . import audit
from .checks import check_definition
from .definitions import get_workflow
from .errors import Conflict, NotFound, ValidationFailed
from .instance_list import InstanceFilters, filtered_ids
from .versions import get_version

INSTANCE = Instance.__table__
HISTORY = HistoryEntry.__table__
MIGRATION = WorkflowMigration.__table__
MIGRATION_ACTOR_PREFIX = "migration"
CHUNK = 2000
FIELDS = {"from_version", "to_version", "state_map", "dry_run", "state", "integration"}


@dataclass
class PlanRow:
    """Where the instances of one source state go (target None: they cannot move)."""

    source: str
    target: str | None
    count: int
    reason: str = ""


@dataclass
class Plan:
    """A checked migration request and what it would do."""

    workflow: Workflow
    from_version: int
    to_version: int
    state_map: dict[str, str]
    filters: dict[str, Any]
    rows: list[PlanRow] = field(default_factory=list)
    from_states: list[str] = field(default_factory=list)
    to_states: list[str] = field(default_factory=list)
    #: The workflow's saved scenarios run against the target version (`scenario_report`).
    scenarios: dict[str, Any] = field(default_factory=dict)

    @property
    def movable(self) -> int:
        """How many instances the run would move."""
        return sum(r.count for r in self.rows if r.target is not None)

    @property
    def blocked(self) -> int:
        """How many matching instances cannot move."""
        return sum(r.count for r in self.rows if r.target is None)

    def as_dict(self) -> dict[str, Any]:
        """The dry run's answer."""
        return {"workflow": self.workflow.code, "from_version": self.from_version,
                "to_version": self.to_version, "state_map": self.state_map,
                "filters": self.filters, "movable": self.movable, "blocked": self.blocked,
                "moves": [{"from_state": r.source, "to_state": r.target, "count": r.count,
                           "reason": r.reason or None} for r in self.rows],
                "scenarios": self.scenarios}


def _states(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["code"]: s for s in document["workflow"]["states"]}


def _version_number(data: dict[str, Any], name: str, errors: list[RuleError]) -> int | None:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.append(RuleError(name, "must be a version number (an integer from 1)"))
        return None
    return value


def plan_migration(code: str, data: dict[str, Any]) -> Plan:
    """Check a migration request and count, per source state, where its instances would go."""
    workflow = get_workflow(code)
    errors: list[RuleError] = []
    unknown = sorted(set(data) - FIELDS)
    errors += [RuleError(name, "unknown field") for name in unknown]
    old = _version_number(data, "from_version", errors)
    new = _version_number(data, "to_version", errors)
    documents = {}
    for name, number in (("from_version", old), ("to_version", new)):
        if number is not None:
            try:
                documents[name] = get_version(workflow, number).document
            except NotFound as error:
                errors.append(RuleError(name, error.message))
    if old is not None and old == new:
        errors.append(RuleError("to_version", "must differ from from_version"))
    raw_map = data.get("state_map") or {}
    if not isinstance(raw_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_map.items()):
        errors.append(RuleError("state_map", "must be an object of state code → state code"))
        raw_map = {}
    state_filter = data.get("state")
    if state_filter is not None and not isinstance(state_filter, str):
        errors.append(RuleError("state", "must be a state code"))
    integration_code = data.get("integration")
    integration_id = None
    if integration_code is not None:
        if not isinstance(integration_code, str):
            errors.append(RuleError("integration", "must be an integration code"))
        else:
            integration_id = db.session.scalar(select(Integration.id).where(
                Integration.code == normalize_code(integration_code)))
            if integration_id is None:
                errors.append(RuleError("integration", f"integration "
                                        f"{normalize_code(integration_code)!r} does not exist"))
    if errors or len(documents) < 2:
        raise ValidationFailed(errors)
    assert old is not None and new is not None
    from_states = _states(documents["from_version"])
    to_states = _states(documents["to_version"])
    state_map = {normalize_code(k): normalize_code(v) for k, v in raw_map.items()}
    for source, target in state_map.items():
        if source not in from_states:
            errors.append(RuleError(f"state_map.{source}",
                                    f"state {source!r} is not a state of version {old}"))
        if target not in to_states:
            errors.append(RuleError(f"state_map.{source}",
                                    f"state {target!r} is not a state of version {new}"))
    filters: dict[str, Any] = {}
    if isinstance(state_filter, str):
        filters["state"] = normalize_code(state_filter)
        if filters["state"] not in from_states:
            errors.append(RuleError("state", f"state {filters['state']!r} is not a state of "
                                    f"version {old}"))
    if integration_id is not None:
        filters["integration"] = normalize_code(integration_code)
    if errors:
        raise ValidationFailed(errors)
    plan = Plan(workflow, old, new, state_map, filters, [], list(from_states), list(to_states),
                scenario_report(workflow, documents["to_version"]["workflow"]))
    query = (select(INSTANCE.c.state, func.count())
             .where(*_scope(workflow.id, old, filters, integration_id))
             .group_by(INSTANCE.c.state).order_by(INSTANCE.c.state))
    for state, count in db.session.execute(query).all():
        target = state_map.get(state, state)
        if state not in from_states:
            plan.rows.append(PlanRow(state, None, count, f"state {state} is not in version "
                                     f"{old} (reset these instances first)"))
        elif target not in to_states:
            plan.rows.append(PlanRow(state, None, count, f"version {new} has no state {target};"
                                     " map it to one of its states"))
        else:
            plan.rows.append(PlanRow(state, target, count))
    return plan


def scenario_report(workflow: Workflow, definition: dict[str, Any]) -> dict[str, Any]:
    """Run the workflow's saved scenarios against a version's definition (issue 10).

    A migration moves instances onto that definition, so a scenario it breaks is said before
    the run; the run is not refused (the author decides). Answer: how many ran, the failing
    ones with what they expected and what they got, and scenarios that could not run.
    """
    saved = workflow.scenarios or []
    if not saved:
        return {"saved": 0, "run": 0, "passed": 0, "failing": [], "errors": []}
    checks = check_definition(definition, saved)
    expected = {s.get("name"): s.get("expect") or {} for s in saved if isinstance(s, dict)}
    failing = [{"name": c.name,
                "expected": {"state": expected.get(c.name, {}).get("state"),
                             "vars": expected.get(c.name, {}).get("vars") or {}},
                "got": {"state": c.state, "vars": c.vars}, "problems": c.problems}
               for c in checks.failing]
    # Lint errors stop the scenarios from running at all; they are said as such.
    errors = [{"path": e.path, "message": e.message}
              for e in [*checks.lint.errors, *checks.case_errors]]
    return {"saved": len(saved), "run": len(checks.cases),
            "passed": len(checks.cases) - len(failing), "failing": failing, "errors": errors}


def _scope(workflow_id: int, version: int, filters: dict[str, Any],
           integration_id: int | None) -> list[Any]:
    """The WHERE clauses of the instances a migration is about."""
    where = [INSTANCE.c.workflow_id == workflow_id, INSTANCE.c.workflow_version == version]
    if filters.get("state"):
        where.append(INSTANCE.c.state == filters["state"])
    if integration_id is not None:
        where.append(INSTANCE.c.integration_id == integration_id)
    return where


def start_migration(code: str, data: dict[str, Any], actor: str) -> WorkflowMigration:
    """Record a migration (audited) and queue its job; Conflict when nothing can move."""
    plan = plan_migration(code, data)
    if plan.movable == 0:
        raise Conflict(f"no instance of version {plan.from_version} can move to version "
                       f"{plan.to_version}" + (f" ({plan.blocked} cannot move: see the dry "
                                                "run)" if plan.blocked else ""))
    # Only the states that can move are stored: the job moves exactly what the dry run showed.
    effective = {r.source: r.target for r in plan.rows if r.target is not None}
    migration = WorkflowMigration(
        workflow_id=plan.workflow.id, from_version=plan.from_version,
        to_version=plan.to_version, state_map=effective, filters=plan.filters,
        status=MigrationStatus.QUEUED.value, total=plan.movable, done=0, skipped=0, error="",
        created_by=actor[:64], created_at=utcnow())
    db.session.add(migration)
    db.session.flush()
    audit.record("migrate", "workflow", plan.workflow.code, {
        "migration": migration.id, "from_version": plan.from_version,
        "to_version": plan.to_version, "state_map": effective, "filters": plan.filters,
        "instances": plan.movable, "blocked": plan.blocked}, who=actor)
    db.session.commit()
    from ..queue import get_queue

    get_queue().enqueue("wfapp.jobs.run_migration", migration.id)
    return migration


def get_migration(code: str, migration_id: int) -> WorkflowMigration:
    """One migration of a workflow; NotFound otherwise."""
    workflow = get_workflow(code)
    migration = db.session.get(WorkflowMigration, migration_id)
    if migration is None or migration.workflow_id != workflow.id:
        raise NotFound(f"workflow {workflow.code} has no migration {migration_id}")
    return migration


def migration_to_dict(migration: WorkflowMigration) -> dict[str, Any]:
    """A migration and its progress, as the API shows it."""
    return {"id": migration.id, "from_version": migration.from_version,
            "to_version": migration.to_version, "state_map": migration.state_map,
            "filters": migration.filters, "status": migration.status,
            "total": migration.total, "done": migration.done, "skipped": migration.skipped,
            "error": migration.error or None, "created_by": migration.created_by,
            "created_at": migration.created_at.isoformat(),
            "finished_at": migration.finished_at.isoformat() if migration.finished_at
            else None}


def list_migrations(workflow: Workflow, limit: int = 20) -> list[WorkflowMigration]:
    """The workflow's latest migrations, newest first."""
    return list(db.session.scalars(
        select(WorkflowMigration).where(WorkflowMigration.workflow_id == workflow.id)
        .order_by(WorkflowMigration.id.desc()).limit(limit)))


def _move_values(to_version: int, source: str, source_def: dict[str, Any] | None,
                 target_code: str, target: dict[str, Any], now: Any) -> dict[str, Any]:
    """The column values of an instance moving from `source` to `target_code` of `to_version`."""
    hours = target.get("timeout_hours")
    values: dict[str, Any] = {
        "workflow_version": to_version, "state": target_code,
        "active": not target["is_final"], "version": INSTANCE.c.version + 1,
        "completed_at": now if target["is_final"] else None,
    }
    if target_code != source:
        # A new state is entered now: its timer (if any) starts now.
        values["entered_state_at"] = now
        values["timeout_due_at"] = now + timedelta(hours=hours) if hours else None
    elif hours != (source_def or {}).get("timeout_hours"):
        # Same state, another timeout: the new timer counts from the migration.
        values["timeout_due_at"] = now + timedelta(hours=hours) if hours else None
    return values


def _move_chunk(migration: WorkflowMigration, targets: dict[str, dict[str, Any]],
                sources: dict[str, dict[str, Any]], integration_id: int | None,
                chunk: int, after: int) -> int | None:
    """Move one chunk of instances (ids above `after`) in one transaction; its last id or None.

    Walking the ids forward (keyset) keeps each chunk an index range instead of sorting every
    remaining instance again; a row locked by someone else is skipped, not waited for.
    """
    conn = db.session.connection()
    query = (select(INSTANCE.c.id, INSTANCE.c.state, INSTANCE.c.version)
             .where(*_scope(migration.workflow_id, migration.from_version, migration.filters,
                            integration_id),
                    INSTANCE.c.state.in_(list(migration.state_map)), INSTANCE.c.id > after)
             .order_by(INSTANCE.c.id).limit(chunk))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=INSTANCE, skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        db.session.commit()
        return None
    now = utcnow()
    by_state: dict[str, list[Any]] = {}
    for row in rows:
        by_state.setdefault(row.state, []).append(row)
    note = f"migrated v{migration.from_version} → v{migration.to_version}"
    actor = f"{migration.created_by}"[:64] or MIGRATION_ACTOR_PREFIX
    history: list[dict[str, Any]] = []
    moved_total = 0
    for source, members in by_state.items():
        target_code = migration.state_map[source]
        values = _move_values(migration.to_version, source, sources.get(source),
                              target_code, targets[target_code], now)
        moved = conn.execute(
            update(INSTANCE)
            .where(INSTANCE.c.id.in_([m.id for m in members]),
                   INSTANCE.c.workflow_version == migration.from_version,
                   INSTANCE.c.state == source)
            .values(**values).returning(INSTANCE.c.id)).scalars().all()
        moved_total += len(moved)
        history.extend({"instance_id": i, "at": now, "from_state": source,
                        "to_state": target_code, "transition": None,
                        "trigger_type": "migration", "actor": actor, "event_id": None,
                        "notes": note} for i in moved)
    if history:
        conn.execute(insert(HISTORY), history)
    conn.execute(update(MIGRATION).where(MIGRATION.c.id == migration.id)
                 .values(done=MIGRATION.c.done + moved_total,
                         skipped=MIGRATION.c.skipped + (len(rows) - moved_total)))
    db.session.commit()
    return int(rows[-1].id)


def run_migration(migration_id: int, time_budget: float | None = None,
                  chunk: int | None = None) -> bool:
    """Work on a migration until done or out of time; True when it has finished."""
    size = chunk or int(current_app.config.get("MIGRATION_CHUNK", CHUNK))
    budget = time_budget if time_budget is not None else \
        float(current_app.config.get("JOB_TIME_BUDGET", 20))
    deadline = time.monotonic() + budget
    migration = db.session.get(WorkflowMigration, migration_id)
    if migration is None or migration.status in (MigrationStatus.COMPLETED.value,
                                                 MigrationStatus.FAILED.value):
        return True
    workflow = db.session.get(Workflow, migration.workflow_id)
    if workflow is None:  # deleted meanwhile; its migrations went with it
        return True
    try:
        sources = _states(get_version(workflow, migration.from_version).document)
        targets = _states(get_version(workflow, migration.to_version).document)
    except NotFound as error:
        _finish(migration, MigrationStatus.FAILED, error.message)
        return True
    integration_id = None
    if migration.filters.get("integration"):
        integration_id = db.session.scalar(select(Integration.id).where(
            Integration.code == migration.filters["integration"]))
        if integration_id is None:
            _finish(migration, MigrationStatus.FAILED, "the integration no longer exists")
            return True
    if migration.status == MigrationStatus.QUEUED.value:
        migration.status = MigrationStatus.RUNNING.value
        db.session.commit()
    after = 0
    while True:  # at least one chunk per job, so even a tiny budget makes progress
        last = _move_chunk(migration, targets, sources, integration_id, size, after)
        if last is None:
            db.session.refresh(migration)
            _finish(migration, MigrationStatus.COMPLETED, "")
            return True
        after = last
        if time.monotonic() >= deadline:
            return False


def _finish(migration: WorkflowMigration, status: MigrationStatus, error: str) -> None:
    migration.status = status.value
    migration.error = error
    migration.finished_at = utcnow()
    db.session.commit()


def fail(migration_id: int) -> None:
    """Mark a migration failed after an unexpected error (what moved so far stays moved)."""
    migration = db.session.get(WorkflowMigration, migration_id)
    if migration is not None and migration.status != MigrationStatus.COMPLETED.value:
        _finish(migration, MigrationStatus.FAILED, "the migration job failed; see the worker "
                "log. Instances moved so far stay moved; start the migration again for the rest")


# --- the bulk action "migrate" (issue 11): a chunk of chosen instances ----------------------

def move_many(ids: list[int], to_version: int, state_map: dict[str, str], actor: str
              ) -> list[tuple[int, str]]:
    """Move these instances to version `to_version` of their workflow, with history and audit,
    in the caller's transaction; the ones refused, with why.

    The same move as a migration's chunk (same column values, same "migrated vN → vM" history
    row): decided per instance, written with one UPDATE per (version, state) group, guarded by
    that version and state so an instance that moved meanwhile is not moved blindly.
    """
    conn = db.session.connection()
    rows = conn.execute(select(INSTANCE.c.id, INSTANCE.c.state, INSTANCE.c.workflow_id,
                               INSTANCE.c.workflow_version)
                        .where(INSTANCE.c.id.in_(ids)).order_by(INSTANCE.c.id)).all()
    found = {row.id for row in rows}
    refused = [(i, f"instance {i} does not exist") for i in ids if i not in found]
    documents: dict[tuple[int, int], dict[str, dict[str, Any]] | None] = {}
    workflows: dict[int, Workflow | None] = {}

    def states_of(workflow_id: int, number: int) -> dict[str, dict[str, Any]] | None:
        if (workflow_id, number) not in documents:
            workflow = workflows.setdefault(workflow_id, db.session.get(Workflow, workflow_id))
            try:
                documents[(workflow_id, number)] = None if workflow is None else \
                    _states(get_version(workflow, number).document)
            except NotFound:
                documents[(workflow_id, number)] = None
        return documents[(workflow_id, number)]

    groups: dict[tuple[int, int, str, str], list[int]] = {}
    for row in rows:
        targets = states_of(row.workflow_id, to_version)
        target_code = state_map.get(row.state, row.state)
        if row.workflow_version == to_version:
            refused.append((row.id, f"instance {row.id} is already on version {to_version}"))
        elif targets is None or states_of(row.workflow_id, row.workflow_version) is None:
            refused.append((row.id, f"version {to_version} or v{row.workflow_version} of the "
                                    "instance's workflow no longer exists"))
        elif target_code not in targets:
            refused.append((row.id, f"version {to_version} has no state {target_code}; map "
                                    f"{row.state} to one of its states"))
        else:
            groups.setdefault((row.workflow_id, row.workflow_version, row.state, target_code),
                              []).append(row.id)
    now = utcnow()
    history: list[dict[str, Any]] = []
    for (workflow_id, from_version, source, target_code), members in groups.items():
        targets, sources = states_of(workflow_id, to_version), states_of(workflow_id,
                                                                         from_version)
        assert targets is not None and sources is not None  # checked above
        values = _move_values(to_version, source, sources.get(source), target_code,
                              targets[target_code], now)
        moved = set(conn.execute(update(INSTANCE).where(
            INSTANCE.c.id.in_(members), INSTANCE.c.workflow_version == from_version,
            INSTANCE.c.state == source).values(**values).returning(INSTANCE.c.id)).scalars())
        note = f"migrated v{from_version} → v{to_version}"
        workflow = workflows[workflow_id]
        for instance_id in members:
            if instance_id not in moved:
                refused.append((instance_id, f"instance {instance_id} changed meanwhile; "
                                             "try again"))
                continue
            history.append({"instance_id": instance_id, "at": now, "from_state": source,
                            "to_state": target_code, "transition": None,
                            "trigger_type": "migration", "actor": actor[:64], "event_id": None,
                            "notes": note})
            audit.record("migrate", "instance", str(instance_id), {
                "workflow": workflow.code if workflow else None, "from_version": from_version,
                "to_version": to_version, "from_state": source, "to_state": target_code},
                who=actor)
    if history:
        conn.execute(insert(HISTORY), history)
    return refused


def bulk_check(params: dict[str, Any]) -> dict[str, Any]:
    """The bulk migrate's own fields: `to_version` (required) and an optional `state_map`."""
    errors: list[RuleError] = []
    number = _version_number(params, "to_version", errors)
    raw_map = params.get("state_map") or {}
    if not isinstance(raw_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 20 and len(v) <= 20
            for k, v in raw_map.items()):
        errors.append(RuleError("state_map", "must be an object of state code → state code"))
        raw_map = {}
    if errors:
        raise ValidationFailed(errors)
    return {"to_version": number, "state_map": {normalize_code(k): normalize_code(v)
                                                for k, v in raw_map.items()}}


def bulk_prepare(filters: InstanceFilters, params: dict[str, Any]) -> dict[str, Any]:
    """Check the migrate against the filter: it names one workflow that has `to_version`,
    and every mapped state is a state of that version."""
    if not filters.workflow:
        raise ValidationFailed([RuleError("filter.workflow", "migrate needs a filter naming "
                                                             "one workflow")])
    try:
        workflow = get_workflow(filters.workflow)
    except NotFound as error:
        raise ValidationFailed([RuleError("filter.workflow", error.message)]) from None
    try:
        targets = _states(get_version(workflow, params["to_version"]).document)
    except NotFound as error:
        raise ValidationFailed([RuleError("to_version", error.message)]) from None
    errors = [RuleError(f"state_map.{source}", f"state {target!r} is not a state of version "
                                               f"{params['to_version']}")
              for source, target in params["state_map"].items() if target not in targets]
    if errors:
        raise ValidationFailed(errors)
    return {**params, "workflow": workflow.code}


def bulk_refusals(filters: InstanceFilters, params: dict[str, Any]) -> list[Any]:
    """The matching instances a bulk migrate would refuse: already on the target version, or
    in a state the target version lacks (and not mapped)."""
    from .bulk import Refusal  # bulk registers this action; imported here to avoid a cycle

    workflow = get_workflow(params["workflow"])
    number = params["to_version"]
    targets = _states(get_version(workflow, number).document)
    ids = filtered_ids(filters).subquery()
    out = []
    for version, state, count in db.session.execute(
            select(INSTANCE.c.workflow_version, INSTANCE.c.state, func.count())
            .where(INSTANCE.c.id.in_(select(ids.c.id)))
            .group_by(INSTANCE.c.workflow_version, INSTANCE.c.state)
            .order_by(INSTANCE.c.workflow_version, INSTANCE.c.state)):
        target = params["state_map"].get(state, state)
        if version == number:
            out.append(Refusal(count, f"already on version {number}", workflow.code, state))
        elif target not in targets:
            out.append(Refusal(count, f"version {number} has no state {target}; map {state} "
                                      "to one of its states", workflow.code, state))
    return out


def bulk_move(ids: list[int], params: dict[str, Any], actor: str) -> list[tuple[int, str]]:
    """One chunk of a bulk migrate: the refused ids, with why."""
    return move_many(ids, params["to_version"], params["state_map"], actor)


def bulk_choices(filters: InstanceFilters, to_version: int | None) -> dict[str, Any]:
    """What the "Migrate all" page offers: the workflow's version numbers (newest first), the
    states the matching instances are in, and the states of the chosen target version."""
    workflow = get_workflow(filters.workflow or "")
    number = to_version or workflow.latest_version
    try:
        targets = list(_states(get_version(workflow, number).document))
    except NotFound:
        number, targets = workflow.latest_version, list(_states(
            get_version(workflow, workflow.latest_version).document))
    ids = filtered_ids(filters).subquery()
    sources = list(db.session.scalars(select(INSTANCE.c.state).distinct()
                                      .where(INSTANCE.c.id.in_(select(ids.c.id)))
                                      .order_by(INSTANCE.c.state)))
    return {"workflow": workflow.code, "to_version": number,
            "numbers": list(range(workflow.latest_version, 0, -1)),
            "source_states": sources, "target_states": targets}
