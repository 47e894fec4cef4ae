"""Workload identity: the OIDC token replay cache and the agent sessions exchanged for tokens.

Revision ID: 0003_workload (after 0004_console, the newest revision when it was written; the
ids are names, the order is the down_revision chain)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jitgate.store.schema import UTCDateTime

revision = "0003_workload"
down_revision = "0004_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workload_jti",
        sa.Column("issuer", sa.String(255), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_workload_jti_expires", "workload_jti", ["expires_at"])
    op.create_table(
        "workload_sessions",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("agent", sa.String(64), sa.ForeignKey("agents.name"), nullable=False),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_workload_sessions_expires", "workload_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_workload_sessions_expires", table_name="workload_sessions")
    op.drop_table("workload_sessions")
    op.drop_index("ix_workload_jti_expires", table_name="workload_jti")
    op.drop_table("workload_jti")
