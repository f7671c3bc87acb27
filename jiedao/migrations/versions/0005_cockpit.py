"""cockpit: early warnings (cockpit_warning)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cockpit_warning',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('matter_code', sa.String(length=20), nullable=True),
    sa.Column('grid_code', sa.String(length=15), nullable=True),
    sa.Column('street_code', sa.String(length=9), nullable=True),
    sa.Column('community_code', sa.String(length=12), nullable=True),
    sa.Column('window_start', sa.DateTime(), nullable=False),
    sa.Column('window_end', sa.DateTime(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('case_ids', sa.JSON(), nullable=False),
    sa.Column('task_case_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['task_case_id'], ['cases_case.id'],
                            name=op.f('fk_cockpit_warning_task_case_id_cases_case'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cockpit_warning')),
    sa.UniqueConstraint('key', name=op.f('uq_cockpit_warning_key'))
    )
    with op.batch_alter_table('cockpit_warning', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cockpit_warning_community_code'), ['community_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_cockpit_warning_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_cockpit_warning_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_cockpit_warning_street_code'), ['street_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_cockpit_warning_window_end'), ['window_end'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cockpit_warning', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cockpit_warning_window_end'))
        batch_op.drop_index(batch_op.f('ix_cockpit_warning_street_code'))
        batch_op.drop_index(batch_op.f('ix_cockpit_warning_status'))
        batch_op.drop_index(batch_op.f('ix_cockpit_warning_kind'))
        batch_op.drop_index(batch_op.f('ix_cockpit_warning_community_code'))
    op.drop_table('cockpit_warning')
