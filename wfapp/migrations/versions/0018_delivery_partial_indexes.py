"""the delivery pump reads small indexes: due pending deliveries, running ones per integration

Revision ID: i9_delivery_due
Revises: i9_event_fillfactor
Create Date: 2026-11-26 09:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'i9_delivery_due'
down_revision = 'i9_event_fillfactor'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")
RUNNING = sa.text("status = 'running'")


def upgrade():
    # Every pump round reads the due deliveries and counts the running ones of their
    # integrations. Each delivery row is rewritten twice (leased, then recorded), so the
    # (status, next_attempt_at) index fills with dead entries and the planner falls back to a
    # scan of the whole table, finished deliveries included; indexes of only the pending and
    # only the running rows stay the size of the work in flight.
    with op.batch_alter_table('action_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_action_delivery_pending', ['next_attempt_at', 'id'],
                              postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.create_index('ix_action_delivery_running', ['integration_id', 'lease_until'],
                              postgresql_where=RUNNING, sqlite_where=RUNNING)


def downgrade():
    with op.batch_alter_table('action_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_action_delivery_running', postgresql_where=RUNNING,
                            sqlite_where=RUNNING)
        batch_op.drop_index('ix_action_delivery_pending', postgresql_where=PENDING,
                            sqlite_where=PENDING)
