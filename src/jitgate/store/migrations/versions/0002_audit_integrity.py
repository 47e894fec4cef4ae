"""Audit integrity: signed checkpoints and the cursors of the external copies (sinks).

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jitgate.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _seq() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("number", _seq(), primary_key=True, autoincrement=False),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("first_seq", _seq(), nullable=False),
        sa.Column("last_seq", _seq(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_sink_cursors",
        sa.Column("sink", sa.String(255), primary_key=True),
        sa.Column("checkpoint_number", _seq(), nullable=False),
        sa.Column("shipped_seq", _seq(), nullable=False),
        sa.Column("keys", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("failing_since", UTCDateTime, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_sink_cursors")
    op.drop_table("audit_checkpoints")
