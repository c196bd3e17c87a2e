"""poll executors yield to other events: pending events by source

Revision ID: h7_pending_source
Revises: h7_config_version
Create Date: 2026-11-27 06:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'h7_pending_source'
down_revision = 'h7_config_version'
branch_labels = None
depends_on = None


def upgrade():
    # Only pending events are indexed: a poll executor asks, every fraction of a second while
    # it polls, whether events of other sources wait (two range scans around its own source).
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_pending_source', ['source', 'id'],
                              postgresql_where=sa.text("status = 'pending'"),
                              sqlite_where=sa.text("status = 'pending'"))


def downgrade():
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_pending_source',
                            postgresql_where=sa.text("status = 'pending'"),
                            sqlite_where=sa.text("status = 'pending'"))
