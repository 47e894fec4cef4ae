"""Finding the grant behind an access key id, as of this instant.

Status and the agent's enabled flag are read on every call (a revocation or a disabled agent is
dead at once, in every process sharing the database). The scope, which never changes for a
grant, is parsed once and cached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection

from jitgate.scope import Scope, build_scope
from jitgate.store.db import Database


@dataclass(frozen=True)
class GatewayGrant:
    id: str
    agent: str
    status: str
    expires_at: datetime | None
    agent_disabled: bool
    scope: Scope
    one_call: bool = False  # a one-exact-call grant, used up by the call it lets through


@lru_cache(maxsize=4096)
def _scope(grant_id: str, actions: tuple[str, ...], resources: tuple[str, ...]) -> Scope:
    del grant_id  # part of the cache key only
    return build_scope(actions, resources)


# Written with "?" placeholders (SQLite's); PostgreSQL's driver takes "%s" instead.
_LOOKUP = (
    "SELECT g.id, g.agent, g.actions, g.resources, g.status, g.expires_at, a.disabled, g.one_call"
    " FROM grants g JOIN agents a ON a.name = g.agent WHERE g.access_key_id = ?"
)
_REFRESH = (
    "SELECT g.status, g.expires_at, a.disabled, g.one_call"
    " FROM grants g JOIN agents a ON a.name = g.agent WHERE g.id = ?"
)


def _utc(value: object) -> datetime | None:
    """A timestamp column as the driver returns it (text on SQLite) -> aware UTC datetime."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(when, datetime)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _json(value: object) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


class GrantLookup:
    """Reads on the gateway's hot path go straight to the DBAPI cursor: building the same
    SQLAlchemy statement per call cost ~120 us and most of the endpoint's CPU (see
    benchmarks/gateway_pieces.py); the raw query costs ~5 us."""

    def __init__(self, db: Database) -> None:
        self.db = db
        sqlite = db.dialect == "sqlite"
        self._lookup = _LOOKUP if sqlite else _LOOKUP.replace("?", "%s")
        self._refresh = _REFRESH if sqlite else _REFRESH.replace("?", "%s")

    def by_access_key(self, access_key_id: str) -> GatewayGrant | None:
        raw = self.db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(self._lookup, (access_key_id,))
            row = cursor.fetchone()
            cursor.close()
        finally:
            raw.close()  # back to the pool (which rolls back PostgreSQL's implicit transaction)
        if row is None:
            return None
        grant_id, agent, actions, resources, status, expires_at, disabled, one_call = row
        return GatewayGrant(
            id=grant_id,
            agent=agent,
            status=status,
            expires_at=_utc(expires_at),
            agent_disabled=bool(disabled),
            scope=_scope(grant_id, tuple(_json(actions)), tuple(_json(resources))),
            one_call=one_call is not None and _json(one_call) is not None,
        )

    def refreshed(self, connection: Connection, grant: GatewayGrant) -> GatewayGrant:
        """The same grant with its status and its agent's flag re-read on ``connection``.

        The gateway calls this inside the transaction that records ``call.allowed``, so a
        revocation or a disabled agent committed before that event is always seen.
        """
        status, expires_at, disabled, _ = connection.exec_driver_sql(
            self._refresh, (grant.id,)
        ).one()
        return replace(
            grant, status=status, expires_at=_utc(expires_at), agent_disabled=bool(disabled)
        )
