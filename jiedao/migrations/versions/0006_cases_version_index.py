"""cases: narrow (id, version, code) index for the cockpit mirror's change diff

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 20:05:00
"""

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_cases_case_id_version_code', 'cases_case', ['id', 'version', 'code'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_cases_case_id_version_code', table_name='cases_case')
