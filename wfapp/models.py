"""Database tables and relationships. No business logic and no queue calls live here."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .extensions import Base, db

if TYPE_CHECKING:
    Model = Base  # what db.Model is, spelled so that type checkers see it
else:
    Model = db.Model

# BigInteger ids on PostgreSQL, but SQLite only auto-increments an INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; SQLite hands back naive values, made aware here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Role(str, Enum):
    """User roles; each includes the rights of the ones before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    AUTHOR = "author"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class InstanceMode(str, Enum):
    """How an integration maps its records onto workflow instances."""

    PER_RECORD = "per_record"
    PER_RUN = "per_run"


class EventStatus(str, Enum):
    """Lifecycle of a stored event."""

    PENDING = "pending"
    PROCESSED = "processed"
    SKIPPED = "skipped"
    FAILED = "failed"


class ActionStatus(str, Enum):
    """Lifecycle of one action delivery (an outbox row)."""

    PENDING = "pending"        # waiting for its (next) attempt
    RUNNING = "running"        # leased by a worker until lease_until
    SUCCEEDED = "succeeded"
    FAILED = "failed"          # its last attempt failed, or trying again cannot help
    GAVE_UP = "gave_up"        # a person gave up on it


class RunStatus(str, Enum):
    """Lifecycle of an import or export run."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class User(Model):
    """A person or API client that logs in; `role` decides what it may do."""

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default=Role.VIEWER.value)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Part of every session's user id: raising it (logout, password or role change,
    # deactivation) ends every session of this user on the server side.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    # Flask-Login protocol.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        """The id kept in the session: the user's id and session generation."""
        return f"{self.id}:{self.session_generation or 0}"

    def has_role(self, role: Role | str) -> bool:
        """True when this user's role includes `role`."""
        return Role(self.role).rank >= Role(role).rank


class ApiToken(Model):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens")


class Workflow(Model):
    """A state machine definition: states and transitions, identified by `code`."""

    __tablename__ = "workflow"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    description: Mapped[str] = mapped_column(String(100), default="")
    initial_state: Mapped[str] = mapped_column(String(20))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # The newest version's number (0 until the first save records version 1).
    latest_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # "Pin new instances to version N": a roll-back without migrating; None = the latest.
    pinned_version: Mapped[int | None] = mapped_column(Integer)
    #: Saved simulator scenarios (test cases), exported under the document's `scenarios` key.
    scenarios: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=list)

    states: Mapped[list[State]] = relationship(
        back_populates="workflow", cascade="all, delete-orphan", order_by="State.position"
    )
    transitions: Mapped[list[Transition]] = relationship(
        back_populates="workflow", cascade="all, delete-orphan", order_by="Transition.position"
    )

    def state(self, code: str) -> State | None:
        """Return the state with this code, or None."""
        return next((s for s in self.states if s.code == code), None)

    def transition(self, code: str) -> Transition | None:
        """Return the transition with this code, or None."""
        return next((t for t in self.transitions if t.code == code), None)


class State(Model):
    """One state of a workflow."""

    __tablename__ = "state"
    __table_args__ = (UniqueConstraint("workflow_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    code: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(100), default="")
    is_initial: Mapped[bool] = mapped_column(Boolean, default=False)
    is_final: Mapped[bool] = mapped_column(Boolean, default=False)
    timeout_hours: Mapped[float | None] = mapped_column(Float)
    on_timeout_transition: Mapped[str | None] = mapped_column(String(20))

    workflow: Mapped[Workflow] = relationship(back_populates="states")


class Transition(Model):
    """One transition of a workflow, with its trigger configuration and conditions."""

    __tablename__ = "transition"
    __table_args__ = (UniqueConstraint("workflow_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    code: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(100), default="")
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    trigger_type: Mapped[str] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    trigger_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    capture: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Ordered [{"id", "type", "config"}]: what the transition does when it fires.
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    workflow: Mapped[Workflow] = relationship(back_populates="transitions")


class Integration(Model):
    """A data flow (import/export/webhook source) whose records a workflow tracks."""

    __tablename__ = "integration"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    description: Mapped[str] = mapped_column(String(100), default="")
    workflow_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflow.id", ondelete="SET NULL"), index=True
    )
    instance_mode: Mapped[str] = mapped_column(String(16), default=InstanceMode.PER_RECORD.value)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    record_url_template: Mapped[str] = mapped_column(String(500), default="")
    # Settings that trigger plugins add (webhook secret, record-key path, ...), keyed by name.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Bumped by every change of the fields, settings or secrets (config_cache.changed): web
    # processes keep a copy of an integration and check this in the statement that stores.
    config_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    workflow: Mapped[Workflow | None] = relationship()


class Run(Model):
    """One import or export run of an integration."""

    __tablename__ = "run"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    total: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    integration: Mapped[Integration] = relationship()


class Instance(Model):
    """A workflow instance: where one record (or run) of an integration stands."""

    __tablename__ = "instance"
    __table_args__ = (
        UniqueConstraint("integration_id", "record_key", name="uq_instance_record"),
        UniqueConstraint("integration_id", "run_id", name="uq_instance_run"),
        # Timers live in the database; only instances with a timer are indexed.
        Index(
            "ix_instance_timeout_due",
            "timeout_due_at",
            postgresql_where=text("timeout_due_at IS NOT NULL"),
            sqlite_where=text("timeout_due_at IS NOT NULL"),
        ),
        Index("ix_instance_workflow_active", "workflow_id", "active", "state"),
        # The Workflow Instances list pages by (entered_state_at, id): one index per filter it
        # offers first (none, workflow, workflow + state, integration, integration + state).
        Index("ix_instance_entered", "entered_state_at", "id"),
        Index("ix_instance_workflow_entered", "workflow_id", "entered_state_at", "id"),
        Index("ix_instance_workflow_state_entered", "workflow_id", "state", "entered_state_at",
              "id"),
        Index("ix_instance_integration_entered", "integration_id", "entered_state_at", "id"),
        Index("ix_instance_integration_state", "integration_id", "state", "entered_state_at",
              "id"),
        # Migrations and the versions list count instances per (workflow, version, state).
        Index("ix_instance_workflow_version", "workflow_id", "workflow_version", "state"),
        # Retention finds finished instances by when they finished.
        Index("ix_instance_completed", "completed_at",
              postgresql_where=text("completed_at IS NOT NULL"),
              sqlite_where=text("completed_at IS NOT NULL")),
        # Sortable columns and the default "active" filter (migration d11_lists, which also
        # adds expression indexes on coalesce(record_key | last_transition, '') and, on
        # PostgreSQL, record_key text_pattern_ops and a GIN index on vars::jsonb).
        Index("ix_instance_active_entered", "active", "entered_state_at", "id"),
        Index("ix_instance_state_sort", "state", "id"),
        Index("ix_instance_active_state_sort", "active", "state", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    integration_id: Mapped[int] = mapped_column(ForeignKey("integration.id", ondelete="CASCADE"))
    record_key: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    entered_state_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    timeout_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    vars: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_trigger: Mapped[str | None] = mapped_column(String(40))
    last_transition: Mapped[str | None] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The workflow version whose definition this instance follows (its number, not a row id).
    workflow_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    workflow: Mapped[Workflow] = relationship()
    integration: Mapped[Integration] = relationship()


class WorkflowVersion(Model):
    """One immutable version of a workflow's definition: the export document as saved."""

    __tablename__ = "workflow_version"
    __table_args__ = (UniqueConstraint("workflow_id", "number", name="uq_workflow_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[str] = mapped_column(String(300), default="")


class MigrationStatus(str, Enum):
    """Lifecycle of a migration of instances between workflow versions."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class WorkflowMigration(Model):
    """A requested move of instances from one workflow version to another, with its progress."""

    __tablename__ = "workflow_migration"

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"),
                                             index=True)
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    state_map: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=MigrationStatus.QUEUED.value)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HistoryEntry(Model):
    """One append-only row of an instance's history."""

    __tablename__ = "history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instance.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    transition: Mapped[str | None] = mapped_column(String(20))
    trigger_type: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    notes: Mapped[str] = mapped_column(Text, default="")


class Event(Model):
    """The inbox: everything that can move an instance is stored here first."""

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("integration_id", "dedupe_key", name="uq_event_dedupe"),
        # Workers look for pending events partition by partition, in the order received.
        Index("ix_event_pending", "partition", "id",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        # The timeout sweep looks for events of a due instance still waiting, by record key.
        Index("ix_event_pending_key", "integration_id", "record_key", "received_at",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        # A poll executor asks whether other events wait, to yield to them (short range scans).
        Index("ix_event_pending_source", "source", "id",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_event_integration_id", "integration_id", "id"),
        Index("ix_event_status_id", "status", "id"),
        Index("ix_event_source_id", "source", "id"),
        Index("ix_event_integration_status", "integration_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integration.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(100), default="")
    record_key: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    # Events of one instance share a partition; one worker at a time works a partition, which
    # keeps them in the order they were received.
    partition: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.PENDING.value)
    result: Mapped[str] = mapped_column(Text, default="")
    instance_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    integration: Mapped[Integration] = relationship()


class AuditEntry(Model):
    """Who did what to which object, for actions that leave no other trace (deletions)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_key: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Lease(Model):
    """A time-limited claim on a named piece of work (an event partition) by one worker."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100), default="")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IntegrationSecret(Model):
    """A secret of an integration, encrypted at rest (wfapp.secretbox).

    `kind` is "setting" for a plugin's secret setting (webhook secret, BC client secret) or
    "named" for a secret the author named for templates (`{secret.<name>}`). A replaced value
    is kept as `previous` with `rotated_at`, so a plugin can honour a grace period.
    """

    __tablename__ = "integration_secret"

    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    previous: Mapped[str | None] = mapped_column(Text)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeliveryOutcome(str, Enum):
    """What became of one inbound delivery (a webhook request, a notification, a poll)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED = "refused"
    FAILED = "failed"


class Delivery(Model):
    """The delivery log: inbound requests that did not become (new) events, and poll failures.

    Accepted deliveries are the events themselves; this log keeps what the inbox does not
    (duplicates, refusals and why), pruned to the newest rows per integration and channel.
    """

    __tablename__ = "delivery"
    __table_args__ = (Index("ix_delivery_recent", "integration_id", "channel", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integration.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(300), default="")
    status_code: Mapped[int | None] = mapped_column(Integer)
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    remote_addr: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeliveryCounter(Model):
    """How many deliveries of each outcome a channel of an integration has seen."""

    __tablename__ = "delivery_counter"

    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(40), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_reason: Mapped[str] = mapped_column(String(300), default="")


class PluginState(Model):
    """Small JSON values a plugin keeps per integration (a BC subscription, a poll's health)."""

    __tablename__ = "plugin_state"

    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstanceTimer(Model):
    """When a scheduled trigger (a poll) is next due for one instance and transition.

    Like timeouts, these live in the database: a restart loses none, and claiming one moves
    `due_at` forward in the same transaction, so two schedulers never run it twice per interval.
    `entered_at` is the instance's `entered_state_at` when the timer was made: an instance that
    left the state (or re-entered it) no longer matches and gets a fresh timer.
    """

    __tablename__ = "instance_timer"
    __table_args__ = (
        UniqueConstraint("instance_id", "transition", name="uq_instance_timer"),
        Index("ix_instance_timer_due", "trigger_type", "due_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id", ondelete="CASCADE"))
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"), index=True)
    transition: Mapped[str] = mapped_column(String(20))
    trigger_type: Mapped[str] = mapped_column(String(40))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")


class ActionDelivery(Model):
    """The outbox: one side-effecting action of a fired transition, until it is delivered.

    Written in the transaction that moved the instance; delivered after commit by queue jobs.
    A worker takes a row by setting `lease_until` (a visibility timeout): if it dies
    mid-delivery, the lease runs out and another worker delivers the row again, with the same
    `idempotency_key`.
    """

    __tablename__ = "action_delivery"
    __table_args__ = (
        Index("ix_action_delivery_due", "status", "next_attempt_at"),
        # The pump's reads (outbox.py): due pending rows in order, running rows per integration.
        Index("ix_action_delivery_pending", "next_attempt_at", "id",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_action_delivery_running", "integration_id", "lease_until",
              postgresql_where=text("status = 'running'"),
              sqlite_where=text("status = 'running'")),
        Index("ix_action_delivery_instance", "instance_id", "id"),
        Index("ix_action_delivery_alert", "alert_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Empty for an alert's notification (`alert_id`): it belongs to no instance or workflow.
    instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("instance.id", ondelete="CASCADE"))
    workflow_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflow.id", ondelete="CASCADE"), index=True)
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"), index=True)
    alert_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("alert.id",
                                                                   ondelete="CASCADE"))
    transition: Mapped[str] = mapped_column(String(20))
    position: Mapped[int] = mapped_column(Integer, default=0)
    action_id: Mapped[str] = mapped_column(String(40), default="")
    type: Mapped[str] = mapped_column(String(40))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ActionStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str] = mapped_column(String(100), default="")
    idempotency_key: Mapped[str] = mapped_column(String(64))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    response: Mapped[Any] = mapped_column(JSON)
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TransitionTally(Model):
    """How often a transition fired, per workflow, trigger type and UTC day (the counts table).

    Each transaction that fires transitions appends one row per (transition, trigger type,
    day) it fired, so concurrent workers never contend on one row; the maintenance job rolls
    a finished day's rows up into one. The diagram's per-edge counts and the metrics read it,
    never the history.
    """

    __tablename__ = "transition_tally"
    __table_args__ = (Index("ix_transition_tally_workflow_day", "workflow_id", "day"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    transition: Mapped[str] = mapped_column(String(20))
    trigger_type: Mapped[str] = mapped_column(String(40))
    day: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class MetricCount(Model):
    """A counter kept in the database (`services.counters`): appended per transaction that
    counted something, rolled up by the maintenance job; /metrics sums the rows per key.

    What worker processes count lives here, so every web process (on any host) reports it.
    """

    __tablename__ = "metric_count"
    __table_args__ = (Index("ix_metric_count_key", "name", "labels"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    labels: Mapped[str] = mapped_column(String(500))  # the label values, as a JSON list
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class OperationStatus(str, Enum):
    """Lifecycle of a bulk operation."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class BulkOperation(Model):
    """One bulk action over every instance (or event) a filter matched, run by a queue job.

    `cursor` is the last id handled: rows are taken in id order above it, a chunk at a time, and
    the cursor moves (compare-and-set) in the same transaction as the changes to the chunk's
    rows, so a retried job never acts twice.
    """

    __tablename__ = "bulk_operation"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    target: Mapped[str] = mapped_column(String(16))  # instances | events
    action: Mapped[str] = mapped_column(String(16))
    filter: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OperationStatus.QUEUED.value)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertKind(str, Enum):
    """What an alert rule watches."""

    STUCK = "stuck_in_state"
    FAILED_EVENTS = "failed_events"
    BC_EXPIRING = "bc_subscription_expiring"


class AlertRule(Model):
    """A rule on an integration's card: when it holds, an alert is open."""

    __tablename__ = "alert_rule"

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str | None] = mapped_column(String(20))
    threshold: Mapped[float] = mapped_column(Float, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Who is told when its alert opens or resolves: e-mail addresses and subscriber URLs, one
    # a line (send_email and send_webhook deliver them through the outbox).
    notify_emails: Mapped[str] = mapped_column(Text, default="", server_default="")
    notify_webhooks: Mapped[str] = mapped_column(Text, default="", server_default="")

    integration: Mapped[Integration] = relationship()


class Alert(Model):
    """An alert a rule raised; open until the rule no longer holds (then `resolved_at`)."""

    __tablename__ = "alert"
    __table_args__ = (
        Index("ix_alert_open", "resolved_at", "id"),
        Index("ix_alert_one_open", "rule_id", unique=True,
              postgresql_where=text("resolved_at IS NULL"),
              sqlite_where=text("resolved_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rule.id", ondelete="CASCADE"),
                                         index=True)
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integration.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float] = mapped_column(Float, default=0)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    integration: Mapped[Integration] = relationship()
    rule: Mapped[AlertRule] = relationship()
