"""events leave room on their pages: a claim counts an attempt on each event before processing
it, and with free space on the page that update stays on the page (HOT) instead of adding an
entry to each of the table's indexes

Revision ID: i9_event_fillfactor
Revises: h7_pending_source
Create Date: 2026-11-26 06:15:00

"""
from alembic import op


revision = 'i9_event_fillfactor'
down_revision = 'h7_pending_source'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        # Pages written from now on keep 30 % free; existing pages fill up as before.
        op.execute('ALTER TABLE event SET (fillfactor = 70)')


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE event RESET (fillfactor)')
