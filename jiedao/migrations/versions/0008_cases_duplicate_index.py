"""cases: (grid, matter, received_at) index for the duplicate finder's candidate query

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:40:00
"""

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_cases_case_grid_matter_received', 'cases_case',
                    ['grid_code', 'matter_code', 'received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_cases_case_grid_matter_received', table_name='cases_case')
