"""indexes for the board and for paged workspace listings

The board reads a column of someone's tickets newest first, and counts them, from
``(assignee, status, status_category, updated_at)``; the projects someone has tickets in come
from ``(assignee, project_id)``. Both start with ``assignee``, so the single-column index on it
goes. Workspace listings page newest first by ``(created_at, id)``, someone's through
``(owner_id, created_at, id)``, which also serves every lookup by owner.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 15:00:00
"""

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_assignee_status', ['assignee', 'status', 'status_category', 'updated_at'],
                              unique=False)
        batch_op.create_index('ix_tickets_assignee_project_id', ['assignee', 'project_id'], unique=False)
        batch_op.drop_index('ix_tickets_assignee')
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.create_index('ix_workspaces_owner_id_created_at', ['owner_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_workspaces_created_at', ['created_at', 'id'], unique=False)
        batch_op.drop_index('ix_workspaces_owner_id')


def downgrade() -> None:
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.create_index('ix_workspaces_owner_id', ['owner_id'], unique=False)
        batch_op.drop_index('ix_workspaces_created_at')
        batch_op.drop_index('ix_workspaces_owner_id_created_at')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_assignee', ['assignee'], unique=False)
        batch_op.drop_index('ix_tickets_assignee_project_id')
        batch_op.drop_index('ix_tickets_assignee_status')
