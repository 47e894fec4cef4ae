"""Agents and users: creation, listing, enabling, and authenticating a bearer token."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from jitgate.audit.log import NewEvent, append
from jitgate.clock import Clock, isoformat
from jitgate.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from jitgate.identity import tokens
from jitgate.store.db import Database
from jitgate.store.schema import agents, users

ROLES = ("admin", "approver", "auditor")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``kind`` is "agent", "user", or "local" (the CLI on the host)."""

    kind: str
    name: str
    role: str | None = None
    groups: tuple[str, ...] = ()

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"

    def can_approve(self) -> bool:
        return self.kind == "local" or self.role in ("admin", "approver")

    def can_read_audit(self) -> bool:
        return self.kind == "local" or self.role in ("admin", "approver", "auditor")

    def is_admin(self) -> bool:
        return self.kind == "local" or self.role == "admin"


LOCAL_ADMIN = Principal("local", "cli", "admin")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidRequest(
            f"{kind} name {name!r} is invalid: use 1-64 lower-case letters, digits, '.', '_' or '-'"
        )
    return name


@dataclass(frozen=True)
class AgentRecord:
    name: str
    groups: tuple[str, ...]
    disabled: bool
    owner: str | None
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "groups": list(self.groups),
            "disabled": self.disabled,
            "owner": self.owner,
            "created_at": self.created_at,
        }


def _agent(row: Any) -> AgentRecord:
    return AgentRecord(
        row.name, tuple(row.groups), bool(row.disabled), row.owner, isoformat(row.created_at)
    )


class IdentityService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # --- agents -------------------------------------------------------------------------
    def create_agent(
        self,
        name: str,
        groups: Sequence[str] = (),
        *,
        owner: str | None = None,
        actor: Principal = LOCAL_ADMIN,
    ) -> tuple[AgentRecord, str]:
        """Create an agent; returns the record and its token (shown once, stored hashed)."""
        check_name("agent", name)
        clean_groups = tuple(dict.fromkeys(check_name("group", g) for g in groups))
        issued = tokens.issue(tokens.AGENT)
        now = self.clock.now()
        with self.db.write() as connection:
            if self._agent_row(connection, name) is not None:
                raise Conflict(f"agent {name!r} already exists")
            if self._user_exists(connection, name):
                raise Conflict(f"{name!r} is already a user name; agents and users are distinct")
            connection.execute(
                insert(agents).values(
                    name=name,
                    groups=list(clean_groups),
                    token_id=issued.token_id,
                    token_hash=issued.token_hash,
                    disabled=False,
                    owner=owner,
                    created_at=now,
                    updated_at=now,
                )
            )
            append(
                connection,
                now,
                [
                    NewEvent(
                        "agent.created",
                        actor.actor,
                        agent=name,
                        data={"groups": list(clean_groups), "owner": owner},
                    )
                ],
            )
        return AgentRecord(name, clean_groups, False, owner, isoformat(now)), issued.token

    def list_agents(self) -> list[AgentRecord]:
        with self.db.read() as connection:
            rows = connection.execute(select(agents).order_by(agents.c.name))
            return [_agent(row) for row in rows]

    def get_agent(self, name: str) -> AgentRecord:
        with self.db.read() as connection:
            row = self._agent_row(connection, name)
        if row is None:
            raise NotFound(f"no agent named {name!r}")
        return _agent(row)

    def set_agent_disabled(
        self, name: str, disabled: bool, *, actor: Principal = LOCAL_ADMIN, on_disable: Any = None
    ) -> AgentRecord:
        """Disable or enable an agent.

        ``on_disable(connection, name, now, actor)`` ends its grants in the same transaction and
        returns their audit events; it runs before this appends to the chain, so grant rows are
        locked before the chain head, as in every other writer.
        """
        now = self.clock.now()
        with self.db.write() as connection:
            row = self._agent_row(connection, name)
            if row is None:
                raise NotFound(f"no agent named {name!r}")
            connection.execute(
                update(agents)
                .where(agents.c.name == name)
                .values(disabled=disabled, updated_at=now)
            )
            event = "agent.disabled" if disabled else "agent.enabled"
            ended: list[NewEvent] = []
            if disabled and on_disable is not None:
                ended = list(on_disable(connection, name, now, actor) or [])
            append(connection, now, [NewEvent(event, actor.actor, agent=name), *ended])
            row = self._agent_row(connection, name)
        return _agent(row)

    # --- users --------------------------------------------------------------------------
    def create_user(
        self, name: str, role: str, *, actor: Principal = LOCAL_ADMIN
    ) -> tuple[dict[str, Any], str]:
        check_name("user", name)
        if role not in ROLES:
            raise InvalidRequest(f"role {role!r} is invalid: use one of {', '.join(ROLES)}")
        issued = tokens.issue(tokens.USER)
        now = self.clock.now()
        with self.db.write() as connection:
            if self._user_exists(connection, name):
                raise Conflict(f"user {name!r} already exists")
            if self._agent_row(connection, name) is not None:
                raise Conflict(f"{name!r} is already an agent name; agents and users are distinct")
            connection.execute(
                insert(users).values(
                    name=name,
                    role=role,
                    token_id=issued.token_id,
                    token_hash=issued.token_hash,
                    password_hash=None,
                    disabled=False,
                    created_at=now,
                )
            )
            append(
                connection,
                now,
                [NewEvent("user.created", actor.actor, data={"name": name, "role": role})],
            )
        return {"name": name, "role": role, "created_at": isoformat(now)}, issued.token

    def list_users(self) -> list[dict[str, Any]]:
        with self.db.read() as connection:
            rows = connection.execute(select(users).order_by(users.c.name))
            return [
                {
                    "name": r.name,
                    "role": r.role,
                    "disabled": bool(r.disabled),
                    "created_at": isoformat(r.created_at),
                }
                for r in rows
            ]

    # --- authentication -----------------------------------------------------------------
    def authenticate(self, token: str) -> Principal:
        """The principal behind a bearer token, or Unauthorized (never saying which part failed)."""
        parsed = tokens.parse(token)
        if parsed is None:
            raise Unauthorized("invalid bearer token")
        table = agents if parsed.kind == tokens.AGENT else users
        with self.db.read() as connection:
            row = connection.execute(
                select(table).where(table.c.token_id == parsed.token_id)
            ).first()
        if row is None:
            tokens.secret_matches(parsed.secret, "0" * 64)  # same work either way
            raise Unauthorized("invalid bearer token")
        if not tokens.secret_matches(parsed.secret, row.token_hash):
            raise Unauthorized("invalid bearer token")
        if row.disabled:
            raise Unauthorized(f"{'agent' if table is agents else 'user'} {row.name!r} is disabled")
        if table is agents:
            return Principal("agent", row.name, None, tuple(row.groups))
        return Principal("user", row.name, row.role)

    @staticmethod
    def _agent_row(connection: Connection, name: str) -> Any:
        return connection.execute(select(agents).where(agents.c.name == name)).first()

    @staticmethod
    def _user_exists(connection: Connection, name: str) -> bool:
        return (
            connection.execute(select(users.c.name).where(users.c.name == name)).first() is not None
        )
