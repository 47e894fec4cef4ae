"""Finding the grant behind an access key id, as of this instant.

Status and the agent's enabled flag are read on every call (a revocation or a disabled agent is
dead at once, in every process sharing the database). The scope, which never changes for a
grant, is parsed once and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Connection, select

from jitgate.scope import Scope, build_scope
from jitgate.store.db import Database
from jitgate.store.schema import agents, grants


@dataclass(frozen=True)
class GatewayGrant:
    id: str
    agent: str
    status: str
    expires_at: datetime | None
    agent_disabled: bool
    scope: Scope


@lru_cache(maxsize=4096)
def _scope(grant_id: str, actions: tuple[str, ...], resources: tuple[str, ...]) -> Scope:
    del grant_id  # part of the cache key only
    return build_scope(actions, resources)


class GrantLookup:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._query = (
            select(
                grants.c.id,
                grants.c.agent,
                grants.c.status,
                grants.c.expires_at,
                grants.c.actions,
                grants.c.resources,
                agents.c.disabled,
            )
            .join(agents, agents.c.name == grants.c.agent)
            .where(grants.c.access_key_id.is_not(None))
        )

    def by_access_key(self, access_key_id: str) -> GatewayGrant | None:
        with self.db.read() as connection:
            row = connection.execute(
                self._query.where(grants.c.access_key_id == access_key_id)
            ).first()
        if row is None:
            return None
        return GatewayGrant(
            id=row.id,
            agent=row.agent,
            status=row.status,
            expires_at=row.expires_at,
            agent_disabled=bool(row.disabled),
            scope=_scope(row.id, tuple(row.actions), tuple(row.resources)),
        )

    def refreshed(self, connection: Connection, grant: GatewayGrant) -> GatewayGrant:
        """The same grant with its status and its agent's flag re-read on ``connection``.

        The gateway calls this inside the transaction that records ``call.allowed``, so a
        revocation or a disabled agent committed before that event is always seen.
        """
        row = connection.execute(
            select(grants.c.status, grants.c.expires_at, agents.c.disabled)
            .join(agents, agents.c.name == grants.c.agent)
            .where(grants.c.id == grant.id)
        ).one()
        return replace(
            grant, status=row.status, expires_at=row.expires_at, agent_disabled=bool(row.disabled)
        )
