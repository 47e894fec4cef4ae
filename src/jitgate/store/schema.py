"""The tables. Alembic migrations under ``migrations/versions`` create exactly these.

Times are stored as timezone-aware UTC (naive UTC on SQLite, converted back on read).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime that always comes back timezone-aware UTC, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if getattr(dialect, "name", "") == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

agents = Table(
    "agents",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("groups", JSON, nullable=False),
    Column("token_id", String(32), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("owner", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_id", String(32), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False),
    Column("password_hash", String(255), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("agent", String(64), ForeignKey("agents.name"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("actions", JSON, nullable=False),
    Column("resources", JSON, nullable=False),
    Column("duration_seconds", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("route", String(16), nullable=False),
    Column("decision", JSON, nullable=False),
    Column("approvals_required", Integer, nullable=False, default=0),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("lapse_at", UTCDateTime, nullable=True),
    Column("activated_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("ended_by", String(80), nullable=True),
    Column("access_key_id", String(32), nullable=True, unique=True),
    Index("ix_grants_status_expires", "status", "expires_at"),
    Index("ix_grants_status_lapse", "status", "lapse_at"),
    Index("ix_grants_agent_requested", "agent", "requested_at"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("grant_id", String(40), ForeignKey("grants.id"), nullable=False),
    Column("approver", String(64), nullable=False),
    Column("decision", String(8), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("grant_id", "approver", name="uq_approvals_grant_approver"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("ts", UTCDateTime, nullable=False),
    Column("type", String(40), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("agent", String(64), nullable=True),
    Column("grant_id", String(40), nullable=True),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_grant", "grant_id", "seq"),
    Index("ix_audit_agent", "agent", "seq"),
    Index("ix_audit_type", "type", "seq"),
)

# One row: the chain head. Appenders lock it so concurrent writers never fork the chain.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("hash", String(64), nullable=False),
)
