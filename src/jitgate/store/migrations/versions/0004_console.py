"""The approver console: users' groups and OIDC subjects, who requested a grant, one-exact-call
grants, risk tiers, approvals bound to a fingerprint, console sessions and the sign-in throttle.

Revision ID: 0004_console
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jitgate.store.schema import UTCDateTime

revision = "0004_console"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("groups", sa.JSON, nullable=True))
    op.add_column("users", sa.Column("oidc_subject", sa.String(255), nullable=True))
    op.create_index("ux_users_oidc_subject", "users", ["oidc_subject"], unique=True)
    op.add_column("grants", sa.Column("requested_by", sa.String(80), nullable=True))
    op.add_column("grants", sa.Column("one_call", sa.JSON, nullable=True))
    op.add_column("grants", sa.Column("risk", sa.String(16), nullable=True))
    op.add_column("approvals", sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_console_sessions_user", "console_sessions", ["user"])
    op.create_table(
        "signin_throttle",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", UTCDateTime, nullable=False),
        sa.Column("locked_until", UTCDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("signin_throttle")
    op.drop_index("ix_console_sessions_user", table_name="console_sessions")
    op.drop_table("console_sessions")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("fingerprint")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("risk")
        batch.drop_column("one_call")
        batch.drop_column("requested_by")
    op.drop_index("ux_users_oidc_subject", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("oidc_subject")
        batch.drop_column("groups")
