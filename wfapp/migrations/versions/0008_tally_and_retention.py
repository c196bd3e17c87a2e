"""transition tally (diagram counts, metrics) and the retention index on finished instances

Revision ID: c11_0008
Revises: b10_scenarios
Create Date: 2026-11-25 23:05:00

"""
import sqlalchemy as sa
from alembic import op


revision = 'c11_0008'
down_revision = 'b10_scenarios'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'transition_tally',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('workflow_id', sa.Integer(), nullable=False),
        sa.Column('transition', sa.String(length=20), nullable=False),
        sa.Column('trigger_type', sa.String(length=40), nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['workflow_id'], ['workflow.id'],
                                name=op.f('fk_transition_tally_workflow_id_workflow'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_transition_tally')),
    )
    op.create_index('ix_transition_tally_workflow_day', 'transition_tally',
                    ['workflow_id', 'day'], unique=False)
    op.create_index('ix_instance_completed', 'instance', ['completed_at'], unique=False,
                    postgresql_where=sa.text('completed_at IS NOT NULL'),
                    sqlite_where=sa.text('completed_at IS NOT NULL'))


def downgrade():
    op.drop_index('ix_instance_completed', table_name='instance',
                  postgresql_where=sa.text('completed_at IS NOT NULL'),
                  sqlite_where=sa.text('completed_at IS NOT NULL'))
    op.drop_index('ix_transition_tally_workflow_day', table_name='transition_tally')
    op.drop_table('transition_tally')
