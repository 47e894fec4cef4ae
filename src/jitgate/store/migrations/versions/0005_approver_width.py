"""approvals.approver holds an actor ("user:" + a name of up to 64 characters): 80 wide, like
grants.requested_by. At 64, a user with a 60-64 character name could never approve on
PostgreSQL. (SQLite does not enforce widths; its table is rebuilt so the schema says 80.)

Revision ID: 0005_approver_width
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_approver_width"
down_revision = "0003_workload"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.alter_column("approver", type_=sa.String(80), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.alter_column("approver", type_=sa.String(64), existing_nullable=False)
