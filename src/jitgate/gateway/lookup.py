"""Finding the grant behind an access key id, as of this instant.

Status and the agent's enabled flag are read on every call (a revocation or a disabled agent is
dead at once, in every process sharing the database). The scope, which never changes for a
grant, is parsed once and cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from json import dumps as json_dumps
from typing import Any

from jitgate.scope import Scope, build_scope
from jitgate.store.db import Database
from jitgate.store.driver import (
    DedicatedConnection,
    DriverTxn,
    json_from_db,
    placeholders,
    utc_from_db,
)


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
def _scope(grant_id: str, actions: object, resources: object) -> Scope:
    """A grant's scope from its columns as the driver returns them (JSON text on SQLite, so
    the text itself is the cache key and is parsed once)."""
    del grant_id  # part of the cache key only
    return build_scope(tuple(json_from_db(actions)), tuple(json_from_db(resources)))


def _hashable(value: object) -> object:
    return value if isinstance(value, str | bytes) else json_dumps(value)


_RECENT_MAX = 10_000

_LOOKUP = (
    "SELECT g.id, g.agent, g.actions, g.resources, g.status, g.expires_at, a.disabled, g.one_call"
    " FROM grants g JOIN agents a ON a.name = g.agent WHERE g.access_key_id = ?"
)
_REFRESH = (
    "SELECT g.status, g.expires_at, a.disabled"
    " FROM grants g JOIN agents a ON a.name = g.agent WHERE g.id = ?"
)


class GrantLookup:
    """Reads on the gateway's hot path go straight to a DBAPI cursor of their own: building the
    same SQLAlchemy statement per call cost ~120 us and checking a connection out of the pool
    ~50 us, most of the endpoint's CPU (see benchmarks/gateway_pieces.py); the raw query on a
    kept connection costs a few microseconds."""

    def __init__(
        self,
        db: Database,
        *,
        fresh_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.fresh_seconds = fresh_seconds
        self._monotonic = monotonic
        self._connection = DedicatedConnection(db, autocommit=True)
        self._lock = threading.Lock()
        self._lookup = placeholders(db.dialect, _LOOKUP)
        self._refresh = placeholders(db.dialect, _REFRESH)
        self._recent: dict[str, tuple[float, GatewayGrant]] = {}

    def by_access_key(self, access_key_id: str) -> GatewayGrant | None:
        """The grant behind ``access_key_id`` as read at most ``fresh_seconds`` ago.

        A grant read that recently is not read again: this is the first check, the one that
        picks the grant, its secret and its scope. What makes a revocation or a disabled agent
        take effect at once is the second check, ``refreshed``, which always reads the row in
        the transaction that records the call. Unknown keys are never remembered, so a grant
        issued a moment ago works at once.
        """
        now = self._monotonic()
        recent = self._recent.get(access_key_id)
        if recent is not None and now - recent[0] < self.fresh_seconds:
            return recent[1]
        grant = self._read(access_key_id)
        if grant is None or grant.status != "active" or grant.agent_disabled:
            self._recent.pop(access_key_id, None)
        else:
            if len(self._recent) >= _RECENT_MAX:
                self._recent.clear()  # simplest bound: start over (each entry is one query)
            self._recent[access_key_id] = (now, grant)
        return grant

    def current(self, grant: GatewayGrant) -> GatewayGrant | None:
        """``grant`` with its status, expiry and agent's flag read now (None if it is gone):
        for a call that streams long after it was checked (see jitgate.gateway.liveness)."""
        row = self._fetchone(self._refresh, (grant.id,))
        return None if row is None else _as_read(grant, row)

    def _fetchone(self, sql: str, params: tuple[str, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            try:
                cursor = self._connection.raw().cursor()
                cursor.execute(sql, params)
                row = cursor.fetchone()
                cursor.close()
            except Exception:
                self._connection.drop()  # replaced on the next call
                raise
        return row

    def _read(self, access_key_id: str) -> GatewayGrant | None:
        row = self._fetchone(self._lookup, (access_key_id,))
        if row is None:
            return None
        grant_id, agent, actions, resources, status, expires_at, disabled, one_call = row
        return GatewayGrant(
            id=grant_id,
            agent=agent,
            status=status,
            expires_at=utc_from_db(expires_at),
            agent_disabled=bool(disabled),
            scope=_scope(grant_id, _hashable(actions), _hashable(resources)),
            one_call=one_call is not None and json_from_db(one_call) is not None,
        )

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def refreshed(txn: DriverTxn, grant: GatewayGrant) -> GatewayGrant:
    """The same grant with its status and its agent's flag re-read in ``txn``.

    The gateway calls this inside the transaction that records ``call.allowed``, so a
    revocation or a disabled agent committed before that event is always seen. Calls on one
    grant batched into one transaction share a single read.
    """
    key = ("grant", grant.id)
    fresh = txn.memo.get(key)
    if fresh is None:
        fresh = txn.memo[key] = _as_read(grant, txn.one(_REFRESH, (grant.id,)))
    return fresh


def _as_read(grant: GatewayGrant, row: tuple[Any, ...]) -> GatewayGrant:
    """``grant`` with the status, expiry and agent's flag of a ``_REFRESH`` row."""
    status, expires_at, disabled = row
    return replace(
        grant, status=status, expires_at=utc_from_db(expires_at), agent_disabled=bool(disabled)
    )
