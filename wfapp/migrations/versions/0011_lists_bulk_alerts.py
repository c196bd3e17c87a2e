"""lists that scale (sort and filter indexes), bulk operations, alert rules and alerts

Revision ID: d11_lists
Revises: a9actions
Create Date: 2026-11-25 23:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'd11_lists'
down_revision = 'a9actions'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.create_index('ix_instance_active_entered', ['active', 'entered_state_at', 'id'])
        batch_op.create_index('ix_instance_state_sort', ['state', 'id'])
        # Final states hold most instances: sorting the (default) active ones by state must not
        # walk past all of them first.
        batch_op.create_index('ix_instance_active_state_sort', ['active', 'state', 'id'])
    # Nullable sort columns sort as '' (the list's keyset compares coalesce(column, '')).
    op.execute("CREATE INDEX ix_instance_key_sort ON instance (coalesce(record_key, ''), id)")
    op.execute("CREATE INDEX ix_instance_last_transition_sort "
               "ON instance (coalesce(last_transition, ''), id)")
    if op.get_bind().dialect.name == "postgresql":
        # Record key prefix search (LIKE 'abc%') whatever the database's collation, and the
        # search by a captured variable (vars::jsonb @> '{"name": "value"}').
        op.execute("CREATE INDEX ix_instance_key_prefix ON instance "
                   "(record_key text_pattern_ops)")
        op.execute("CREATE INDEX ix_instance_vars ON instance USING gin "
                   "((vars::jsonb) jsonb_path_ops)")
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_source_id', ['source', 'id'])
        # "Failed events of this integration": the list's filter and the alert rule's count.
        batch_op.create_index('ix_event_integration_status', ['integration_id', 'status', 'id'])

    op.create_table(
        'bulk_operation',
        sa.Column('id', BigId, nullable=False),
        sa.Column('target', sa.String(length=16), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('filter', sa.JSON(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('done', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('cursor', sa.BigInteger(), nullable=False),
        sa.Column('errors', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'alert_rule',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('integration_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=True),
        sa.Column('threshold', sa.Float(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['integration_id'], ['integration.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_alert_rule_integration_id', 'alert_rule', ['integration_id'])
    op.create_table(
        'alert',
        sa.Column('id', BigId, nullable=False),
        sa.Column('rule_id', sa.Integer(), nullable=False),
        sa.Column('integration_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['rule_id'], ['alert_rule.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['integration_id'], ['integration.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_alert_rule_id', 'alert', ['rule_id'])
    op.create_index('ix_alert_open', 'alert', ['resolved_at', 'id'])
    # At most one open alert per rule, even if two evaluations overlap.
    op.execute("CREATE UNIQUE INDEX ix_alert_one_open ON alert (rule_id) "
               "WHERE resolved_at IS NULL")


def downgrade():
    op.drop_table('alert')
    op.drop_table('alert_rule')
    op.drop_table('bulk_operation')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_integration_status')
        batch_op.drop_index('ix_event_source_id')
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_instance_vars")
        op.execute("DROP INDEX ix_instance_key_prefix")
    op.execute("DROP INDEX ix_instance_last_transition_sort")
    op.execute("DROP INDEX ix_instance_key_sort")
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.drop_index('ix_instance_active_state_sort')
        batch_op.drop_index('ix_instance_state_sort')
        batch_op.drop_index('ix_instance_active_entered')
