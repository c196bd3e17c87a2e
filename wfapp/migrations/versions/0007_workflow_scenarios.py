"""workflow scenarios (saved simulator test cases)

Revision ID: b10_scenarios
Revises: 0006
Create Date: 2026-11-25 23:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'b10_scenarios'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('workflow', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scenarios', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('workflow', schema=None) as batch_op:
        batch_op.drop_column('scenarios')
