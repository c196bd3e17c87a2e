"""counters kept in the database, so what worker processes count shows in every web process's
/metrics (action outcomes)

Revision ID: h11_metric_counts
Revises: h13_sweep
Create Date: 2026-11-26 03:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'h11_metric_counts'
down_revision = 'h13_sweep'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        'metric_count',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('name', sa.String(80), nullable=False),
        sa.Column('labels', sa.String(500), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_metric_count_key', 'metric_count', ['name', 'labels'])


def downgrade():
    op.drop_index('ix_metric_count_key', table_name='metric_count')
    op.drop_table('metric_count')
