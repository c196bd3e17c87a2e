"""alerts delivered through the notification actions: rule recipients, outbox rows of alerts

Revision ID: g11_alerts
Revises: d11_lists
Create Date: 2026-11-26 00:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'g11_alerts'
down_revision = 'd11_lists'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    with op.batch_alter_table('alert_rule', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notify_emails', sa.Text(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('notify_webhooks', sa.Text(), nullable=False,
                                      server_default=''))
    # The outbox carries alert notifications too: such a row belongs to an alert, not to an
    # instance of a workflow.
    with op.batch_alter_table('action_delivery', schema=None) as batch_op:
        batch_op.alter_column('instance_id', existing_type=sa.BigInteger(), nullable=True)
        batch_op.alter_column('workflow_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('alert_id', BigId, nullable=True))
        batch_op.create_foreign_key('fk_action_delivery_alert_id_alert', 'alert', ['alert_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_index('ix_action_delivery_alert', ['alert_id', 'id'])


def downgrade():
    op.execute("DELETE FROM action_delivery WHERE alert_id IS NOT NULL")
    with op.batch_alter_table('action_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_action_delivery_alert')
        batch_op.drop_constraint('fk_action_delivery_alert_id_alert', type_='foreignkey')
        batch_op.drop_column('alert_id')
        batch_op.alter_column('workflow_id', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('instance_id', existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table('alert_rule', schema=None) as batch_op:
        batch_op.drop_column('notify_webhooks')
        batch_op.drop_column('notify_emails')
