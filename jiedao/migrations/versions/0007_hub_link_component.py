"""hub: linkage component and record fingerprint per link (incremental re-link)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 23:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hub_link', schema=None) as batch_op:
        batch_op.add_column(sa.Column('component', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('fingerprint', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('hub_link', schema=None) as batch_op:
        batch_op.drop_column('fingerprint')
        batch_op.drop_column('component')
