"""The Workflow Instances list: filters, a bounded total, sortable keyset pages both ways.

One filter (`InstanceFilters`) serves the page, the API, the CSV download and bulk operations,
so "all N matching this filter" acts on exactly the rows the list shows.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB

from ..engine import CompiledWorkflow, RuleError
from ..extensions import db
from ..models import Event, Instance, Integration, State, Workflow, WorkflowVersion
from .errors import ValidationFailed
from .versions import compiled_workflow

MAX_PAGE = 500
#: The total is counted exactly up to this many rows, then shown as "more than".
COUNT_BOUND = 10_000
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_VAR_FILTERS = 3

# Sort keys the list offers. Nullable columns sort as '' (an expression index matches it), so
# a keyset comparison never meets a NULL. A literal '' (not a bind parameter) keeps the query's
# expression identical to the index's.
_EMPTY: ColumnElement[str] = literal_column("''")
SORTS: dict[str, Any] = {
    "entered": Instance.entered_state_at,
    "state": Instance.state,
    "record_key": func.coalesce(Instance.record_key, _EMPTY),
    "last_transition": func.coalesce(Instance.last_transition, _EMPTY),
}
SORT_LABELS = {"entered": "In State Since", "state": "Current State",
               "record_key": "Record ID", "last_transition": "Last Transition"}


@dataclass
class InstanceFilters:
    """The filters of the Workflow Instances page and API."""

    workflow: str | None = None
    integration: str | None = None
    state: str | None = None
    active: bool | None = None
    record_key: str | None = None
    run_id: int | None = None
    since: datetime | None = None  # in state since (entered at or before)
    record_key_prefix: str | None = None
    vars: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The filter as JSON (stored with a bulk operation, so its job sees the same rows)."""
        return {"workflow": self.workflow, "integration": self.integration,
                "state": self.state, "active": self.active, "record_key": self.record_key,
                "run_id": self.run_id, "since": self.since.isoformat() if self.since else None,
                "record_key_prefix": self.record_key_prefix, "vars": dict(self.vars)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceFilters:
        """Read back `as_dict()`."""
        since = data.get("since")
        return cls(workflow=data.get("workflow"), integration=data.get("integration"),
                   state=data.get("state"), active=data.get("active"),
                   record_key=data.get("record_key"), run_id=data.get("run_id"),
                   since=datetime.fromisoformat(since) if since else None,
                   record_key_prefix=data.get("record_key_prefix"),
                   vars=dict(data.get("vars") or {}))


def check_vars(values: dict[str, str]) -> dict[str, str]:
    """Validate `var.<name>=<value>` filters; ValidationFailed names the bad one."""
    errors = []
    if len(values) > MAX_VAR_FILTERS:
        errors.append(RuleError("var", f"at most {MAX_VAR_FILTERS} variable filters"))
    for name, value in values.items():
        if not VAR_NAME.fullmatch(name):
            errors.append(RuleError(f"var.{name}", "is not a variable name (letters, digits, "
                                                   "_; up to 64)"))
        elif len(value) > 200 or "\x00" in value:
            errors.append(RuleError(f"var.{name}", "must be up to 200 characters, no NUL"))
    if errors:
        raise ValidationFailed(errors)
    return values


def _var_condition(name: str, value: str) -> ColumnElement[bool]:
    """`instance.vars[name]` equals `value` (as text, or as the number it spells)."""
    if db.session.get_bind().dialect.name == "postgresql":
        # Containment on vars::jsonb is answered by the GIN index ix_instance_vars.
        doc = cast(Instance.vars, JSONB)
        options: list[Any] = [value]
        try:
            number = float(value)
            options.append(int(number) if number.is_integer() else number)
        except ValueError:
            pass
        if value in ("true", "false"):
            options.append(value == "true")
        return or_(*(doc.op("@>")(literal({name: v}, JSONB)) for v in options))
    extracted = func.json_extract(Instance.vars, f'$."{name}"')
    try:
        number = float(value)
    except ValueError:
        return extracted == value
    return or_(extracted == value, extracted == number)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def filtered_ids(filters: InstanceFilters) -> Select[Any]:
    """`SELECT instance.id ... WHERE <filters>`: the rows a filter matches, without joins."""
    return _where(select(Instance.id), filters)


def _where(query: Any, filters: InstanceFilters) -> Any:
    # Filter on the instance's own columns (ids looked up first), so the planner can walk the
    # (workflow_id | integration_id, [state,] entered_state_at, id) indexes in page order.
    if filters.workflow:
        workflow_id = db.session.scalar(
            select(Workflow.id).where(Workflow.code == filters.workflow.strip().upper()))
        query = query.where(Instance.workflow_id == (workflow_id or -1))
    if filters.integration:
        integration_id = db.session.scalar(
            select(Integration.id).where(Integration.code == filters.integration.strip().upper()))
        query = query.where(Instance.integration_id == (integration_id or -1))
    if filters.state:
        query = query.where(Instance.state == filters.state.strip().upper())
    if filters.active is not None:
        query = query.where(Instance.active.is_(filters.active))
    if filters.record_key:
        query = query.where(Instance.record_key == filters.record_key)
    if filters.record_key_prefix:
        query = query.where(Instance.record_key.like(_like_prefix(filters.record_key_prefix),
                                                     escape="\\"))
    if filters.run_id is not None:
        # Per Run: the run's own instance. Per Record: the instances its records' events reached
        # (an instance is keyed by record, not run; both indexed: event.run_id, instance.id).
        touched = select(Event.instance_id).where(Event.run_id == filters.run_id,
                                                  Event.instance_id.is_not(None))
        query = query.where(or_(Instance.run_id == filters.run_id, Instance.id.in_(touched)))
    if filters.since is not None:
        query = query.where(Instance.entered_state_at <= filters.since)
    for name, value in check_vars(filters.vars).items():
        query = query.where(_var_condition(name, value))
    return query


def _joined(filters: InstanceFilters) -> Select[Any]:
    query = (select(Instance, Integration.code, Workflow.code)
             .join(Integration, Integration.id == Instance.integration_id)
             .join(Workflow, Workflow.id == Instance.workflow_id))
    return _where(query, filters)


def state_descriptions(instances: Sequence[Instance]) -> dict[int, str]:
    """Each instance's state description as the workflow version it follows defines it (""
    when that version has no such state), one compiled-definition lookup per version."""
    versions: dict[tuple[int, int], CompiledWorkflow | None] = {}
    out = {}
    for instance in instances:
        key = (instance.workflow_id, instance.workflow_version)
        if key not in versions:
            versions[key] = compiled_workflow(*key)
        compiled = versions[key]
        info = compiled.states.get(instance.state) if compiled is not None else None
        out[instance.id] = info.description if info else ""
    return out


@dataclass
class InstanceRow:
    """One line of the Workflow Instances list."""

    instance: Instance
    integration_code: str
    workflow_code: str
    state_description: str


@dataclass
class Page:
    """One page of the list, with the cursors of the pages before and after it."""

    rows: list[InstanceRow]
    next: str | None
    previous: str | None


@dataclass
class Cursor:
    """Where a page starts: after (or before) the row with this sort value and id."""

    sort: str
    descending: bool
    value: Any
    id: int
    before: bool = False


def encode_cursor(cursor: Cursor) -> str:
    """An opaque keyset cursor."""
    value = cursor.value.isoformat() if isinstance(cursor.value, datetime) else cursor.value
    raw = json.dumps([cursor.sort, int(cursor.descending), value, cursor.id,
                      int(cursor.before)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, sort: str, descending: bool) -> Cursor:
    """Read a cursor made by encode_cursor for this sort; ValidationFailed when it is not one."""
    problem = RuleError("cursor", "is not a cursor this list gave out (or the sort changed)")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        name, desc, value, row_id, before = json.loads(raw)
        if name != sort or bool(desc) != descending or not isinstance(value, str):
            raise ValueError
        if name == "entered":
            value = datetime.fromisoformat(value)
        return Cursor(name, descending, value, int(row_id), bool(before))
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationFailed([problem]) from None


def check_sort(sort: str | None) -> tuple[str, bool]:
    """`state`, `-state` ... as (key, descending); ValidationFailed for an unknown column."""
    sort = sort or "entered"
    key, descending = sort.lstrip("-"), sort.startswith("-")
    if key not in SORTS:
        raise ValidationFailed([RuleError("sort", "must be one of " + ", ".join(
            f"{k}, -{k}" for k in SORTS))])
    return key, descending


def _sort_value(instance: Instance, key: str) -> Any:
    if key == "entered":
        return instance.entered_state_at
    if key == "state":
        return instance.state
    return getattr(instance, key) or ""


def list_page(filters: InstanceFilters, limit: int = 50, cursor: str | None = None,
              sort: str | None = None) -> Page:
    """A page of instances in the chosen order, with the cursors of the neighbouring pages."""
    limit = max(1, min(limit, MAX_PAGE))
    key, descending = check_sort(sort)
    column = SORTS[key]
    at = decode_cursor(cursor, key, descending) if cursor else None
    backwards = at is not None and at.before
    # Walking backwards reads the rows before the cursor in reverse order, then flips them.
    ascending = descending == backwards
    query = _joined(filters)
    if at is not None:
        # A row-value comparison, which PostgreSQL turns into an index range (an OR of two
        # comparisons would be a filter on a scan from the first row: slow on deep pages).
        key_now, key_at = tuple_(column, Instance.id), tuple_(literal(at.value, column.type),
                                                             literal(at.id, Instance.id.type))
        query = query.where(key_now > key_at if ascending else key_now < key_at)
    order = (column.asc(), Instance.id.asc()) if ascending else (column.desc(),
                                                                   Instance.id.desc())
    found = list(db.session.execute(query.order_by(*order).limit(limit + 1)).all())
    more = len(found) > limit
    found = found[:limit]
    if backwards:
        found.reverse()
    descriptions = state_descriptions([r[0] for r in found])
    rows = [InstanceRow(r[0], r[1], r[2], descriptions[r[0].id]) for r in found]
    if not rows:
        return Page(rows, None, None)

    def make(instance: Instance, before: bool) -> str:
        return encode_cursor(Cursor(key, descending, _sort_value(instance, key), instance.id,
                                    before))

    has_next = more if not backwards else True
    has_previous = (more if backwards else at is not None)
    return Page(rows, make(rows[-1].instance, False) if has_next else None,
                make(rows[0].instance, True) if has_previous else None)


def list_instances(filters: InstanceFilters, limit: int = 50, cursor: str | None = None,
                   sort: str | None = None) -> tuple[list[InstanceRow], str | None]:
    """A page of instances (longest in their state first by default) and the next cursor."""
    page = list_page(filters, limit, cursor, sort)
    return page.rows, page.next


def count(filters: InstanceFilters, bound: int = COUNT_BOUND) -> tuple[int, bool]:
    """How many instances match: (exact count, False), or (bound, True) when there are more."""
    limited = filtered_ids(filters).limit(bound + 1).subquery()
    total = db.session.scalar(select(func.count()).select_from(limited)) or 0
    return (bound, True) if total > bound else (total, False)


def iter_rows(filters: InstanceFilters, sort: str | None = None, chunk: int = 1000
              ) -> Iterator[InstanceRow]:
    """Every matching row in list order, read page by page (for the CSV download)."""
    cursor = None
    while True:
        page = list_page(filters, chunk, cursor, sort)
        yield from page.rows
        if page.next is None:
            return
        cursor = page.next
        db.session.expunge_all()  # a long download must not hold every row in memory


def filter_choices(workflow: str | None) -> dict[str, list[str]]:
    """The known values of the drop-down filters: workflow and integration codes, and the
    state codes of the chosen workflow (in any of its versions: older instances may sit in a
    state the latest one dropped) or of every workflow's latest version when none is chosen."""
    codes = list(db.session.scalars(select(Workflow.code).order_by(Workflow.code)))
    # Called before the form is validated: only a code that exists narrows the states (a value
    # with a NUL byte or of any length never reaches the database).
    chosen = (workflow or "").strip().upper()
    if chosen in codes:
        found: set[str] = set()
        for workflow_id, number in db.session.execute(
                select(WorkflowVersion.workflow_id, WorkflowVersion.number)
                .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
                .where(Workflow.code == chosen)).all():
            compiled = compiled_workflow(workflow_id, number)
            found.update(compiled.states if compiled else ())
        states = sorted(found)
    else:
        states = list(db.session.scalars(select(State.code).distinct().order_by(State.code)))
    return {"workflow": codes,
            "integration": list(db.session.scalars(select(Integration.code)
                                                   .order_by(Integration.code))),
            "state": states}
