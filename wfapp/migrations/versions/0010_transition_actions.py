"""transition actions and their outbox

Revision ID: a9actions
Revises: e10_versions
Create Date: 2026-11-25 23:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'a9actions'
down_revision = 'e10_versions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('transition', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actions', sa.JSON(), nullable=False,
                                      server_default='[]'))
    op.create_table('action_delivery',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('instance_id', sa.BigInteger(), nullable=False),
    sa.Column('workflow_id', sa.Integer(), nullable=False),
    sa.Column('integration_id', sa.Integer(), nullable=False),
    sa.Column('transition', sa.String(length=20), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('action_id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('context', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('leased_by', sa.String(length=100), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=True),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['instance.id'], name=op.f('fk_action_delivery_instance_id_instance'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workflow_id'], ['workflow.id'], name=op.f('fk_action_delivery_workflow_id_workflow'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['integration_id'], ['integration.id'], name=op.f('fk_action_delivery_integration_id_integration'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_action_delivery'))
    )
    with op.batch_alter_table('action_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_action_delivery_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_action_delivery_instance', ['instance_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_action_delivery_workflow_id'), ['workflow_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_action_delivery_integration_id'), ['integration_id'], unique=False)


def downgrade():
    op.drop_table('action_delivery')
    with op.batch_alter_table('transition', schema=None) as batch_op:
        batch_op.drop_column('actions')
