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
    # Migration 0004: approver groups (@approver_group) and the OpenID Connect subject.
    Column("groups", JSON, nullable=True),
    Column("oidc_subject", String(255), nullable=True),
    Index("ux_users_oidc_subject", "oidc_subject", unique=True),
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
    # Migration 0004: who asked (no self-approval), one-exact-call grants, the risk tier.
    Column("requested_by", String(80), nullable=True),
    Column("one_call", JSON, nullable=True),
    Column("risk", String(16), nullable=True),
    Index("ix_grants_status_expires", "status", "expires_at"),
    Index("ix_grants_status_lapse", "status", "lapse_at"),
    Index("ix_grants_agent_requested", "agent", "requested_at"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("grant_id", String(40), ForeignKey("grants.id"), nullable=False),
    Column("approver", String(80), nullable=False),  # an actor: "user:" + name
    Column("decision", String(8), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    # Migration 0004: the fingerprint of exactly what the approver was shown.
    Column("fingerprint", String(64), nullable=True),
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

# Signed checkpoints over the chain (jitgate.audit.checkpoint). ``body`` is the signed canonical
# JSON; the other columns repeat fields of it for queries. Migration 0002.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column(
        "number",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("ts", UTCDateTime, nullable=False),
    Column("first_seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("last_seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("signature", Text, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Where each external copy (sink) has got to; operational state, not evidence. Migration 0002.
audit_sink_cursors = Table(
    "audit_sink_cursors",
    metadata,
    Column("sink", String(255), primary_key=True),
    Column("checkpoint_number", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("shipped_seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("keys", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("failing_since", UTCDateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
)

# Console sign-in sessions (jitgate.web). Only sha256 of the session id is stored. Migration 0004.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user", String(64), ForeignKey("users.name"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("method", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_console_sessions_user", "user"),
)

# Failed console sign-ins per account and per client address (the rate limit). Migration 0004.
signin_throttle = Table(
    "signin_throttle",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime, nullable=True),
)

# Workload identity (jitgate.identity.workload). Migration 0003_workload.
# Every accepted OIDC token's (issuer, jti) until it expires: a token is exchanged once only.
workload_jti = Table(
    "workload_jti",
    metadata,
    Column("issuer", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_workload_jti_expires", "expires_at"),
)

# Agent sessions issued for an exchanged OIDC token; only sha256 of the secret is stored.
workload_sessions = Table(
    "workload_sessions",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False),
    Column("agent", String(64), ForeignKey("agents.name"), nullable=False),
    Column("issuer", String(255), nullable=False),
    Column("subject", String(512), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_workload_sessions_expires", "expires_at"),
)
