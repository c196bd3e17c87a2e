"""the timeout sweep finds instances with events still waiting by key: pending events by record key

Revision ID: h13_sweep
Revises: g11_alerts
Create Date: 2026-11-26 03:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'h13_sweep'
down_revision = 'g11_alerts'
branch_labels = None
depends_on = None


def upgrade():
    # Only pending events are indexed: the sweep asks, for each due instance, whether an event
    # received before its timer fell due is still waiting (run instances use ix_event_run_id).
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_pending_key', ['integration_id', 'record_key', 'received_at'],
                              postgresql_where=sa.text("status = 'pending'"),
                              sqlite_where=sa.text("status = 'pending'"))


def downgrade():
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_pending_key', postgresql_where=sa.text("status = 'pending'"),
                            sqlite_where=sa.text("status = 'pending'"))
