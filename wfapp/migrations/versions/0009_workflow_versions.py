"""workflow versions and migrations of instances between them

Revision ID: e10_versions
Revises: c11_0008
Create Date: 2026-11-25 23:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'e10_versions'
down_revision = 'c11_0008'
branch_labels = None
depends_on = None


def _number(value):
    if value is None:
        return None
    return int(value) if float(value).is_integer() else float(value)


def _json(value, default):
    # Stored JSON comes back as text from some drivers (SQLite through a raw select).
    import json

    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def _when(value):
    from datetime import UTC, datetime

    if isinstance(value, str):  # SQLite through a raw select
        value = datetime.fromisoformat(value)
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _document(conn, workflow):
    """Version 1 of an existing workflow: its rows as the export document.

    A migration is a frozen snapshot, so this copies the shape of
    `definitions.workflow_to_dict` at this revision instead of importing application code that
    will go on changing.
    """
    states = conn.execute(sa.text(
        "SELECT code, description, is_initial, is_final, timeout_hours, on_timeout_transition "
        "FROM state WHERE workflow_id = :w ORDER BY position, id"), {"w": workflow.id}).all()
    transitions = conn.execute(sa.text(
        "SELECT code, description, from_state, to_state, trigger_type, enabled, priority, "
        "trigger_config, conditions, capture FROM transition WHERE workflow_id = :w "
        "ORDER BY position, id"), {"w": workflow.id}).all()
    return {"format": "wfapp.workflow/v1", "workflow": {
        "code": workflow.code, "description": workflow.description or "",
        "initial_state": workflow.initial_state, "enabled": bool(workflow.enabled),
        "states": [{"code": s.code, "description": s.description or "",
                    "is_initial": bool(s.is_initial), "is_final": bool(s.is_final),
                    "timeout_hours": _number(s.timeout_hours),
                    "on_timeout_transition": s.on_timeout_transition or None} for s in states],
        "transitions": [{"code": t.code, "description": t.description or "",
                         "from_state": t.from_state, "to_state": t.to_state,
                         "trigger_type": t.trigger_type, "enabled": bool(t.enabled),
                         "priority": t.priority,
                         "trigger_config": dict(_json(t.trigger_config, {})),
                         "conditions": [dict(c) for c in _json(t.conditions, [])],
                         "capture": dict(_json(t.capture, {}))} for t in transitions],
    }}


def upgrade():
    op.create_table(
        'workflow_version',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('workflow_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('document', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('summary', sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(['workflow_id'], ['workflow.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('workflow_id', 'number', name='uq_workflow_version'),
    )
    op.create_table(
        'workflow_migration',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('workflow_id', sa.Integer(), nullable=False),
        sa.Column('from_version', sa.Integer(), nullable=False),
        sa.Column('to_version', sa.Integer(), nullable=False),
        sa.Column('state_map', sa.JSON(), nullable=False),
        sa.Column('filters', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('done', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['workflow_id'], ['workflow.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_workflow_migration_workflow_id', 'workflow_migration', ['workflow_id'])
    with op.batch_alter_table('workflow', schema=None) as batch_op:
        batch_op.add_column(sa.Column('latest_version', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('pinned_version', sa.Integer(), nullable=True))
    with op.batch_alter_table('instance', schema=None) as batch_op:
        # Existing instances follow version 1, made below from the rows they ran on.
        batch_op.add_column(sa.Column('workflow_version', sa.Integer(), server_default='1',
                                      nullable=False))
        batch_op.create_index('ix_instance_workflow_version',
                              ['workflow_id', 'workflow_version', 'state'], unique=False)

    conn = op.get_bind()
    version = sa.table('workflow_version', sa.column('workflow_id', sa.Integer),
                       sa.column('number', sa.Integer), sa.column('document', sa.JSON),
                       sa.column('created_at', sa.DateTime(timezone=True)),
                       sa.column('created_by', sa.String), sa.column('summary', sa.String))
    for workflow in conn.execute(sa.text(
            "SELECT id, code, description, initial_state, enabled, updated_at FROM workflow"
    )).all():
        conn.execute(version.insert().values(
            workflow_id=workflow.id, number=1, document=_document(conn, workflow),
            created_at=_when(workflow.updated_at), created_by="migration",
            summary="version 1: the definition as it was when versions were introduced"))
    conn.execute(sa.text("UPDATE workflow SET latest_version = 1"))


def downgrade():
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.drop_index('ix_instance_workflow_version')
        batch_op.drop_column('workflow_version')
    with op.batch_alter_table('workflow', schema=None) as batch_op:
        batch_op.drop_column('pinned_version')
        batch_op.drop_column('latest_version')
    op.drop_index('ix_workflow_migration_workflow_id', table_name='workflow_migration')
    op.drop_table('workflow_migration')
    op.drop_table('workflow_version')
