"""integration config version: a counter bumped by every change of an integration's settings or
secrets, so web processes may answer webhooks from a cached copy and still see a change at once

Revision ID: h7_config_version
Revises: h11_metric_counts
Create Date: 2026-11-26 02:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'h7_config_version'
down_revision = 'h11_metric_counts'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('integration', schema=None) as batch_op:
        batch_op.add_column(sa.Column('config_version', sa.Integer(), nullable=False,
                                      server_default='1'))


def downgrade():
    with op.batch_alter_table('integration', schema=None) as batch_op:
        batch_op.drop_column('config_version')
