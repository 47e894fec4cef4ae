"""Agents and users: creation, listing, enabling, and authenticating a bearer token."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from jitgate.audit.log import NewEvent, append
from jitgate.clock import Clock, isoformat
from jitgate.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from jitgate.identity import passwords, tokens
from jitgate.store.db import Database
from jitgate.store.schema import agents, console_sessions, users

ROLES = ("admin", "approver", "auditor")
APPROVING_ROLES = ("admin", "approver")  # the roles that may approve or deny grants
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
        return self.kind == "local" or self.role in APPROVING_ROLES

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
        if owner is not None:
            # Written exactly as the user's name: an owner that is "Bob" or "bob " would never
            # match the user bob, who could then approve the agent's grants.
            check_name("user", owner)
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
        self,
        name: str,
        role: str,
        *,
        actor: Principal = LOCAL_ADMIN,
        groups: Sequence[str] = (),
        password: str | None = None,
        oidc_subject: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Create a person; returns the record and their API token (shown once, stored hashed).

        ``groups`` are approver groups (``@approver_group``); ``password`` enables console
        sign-in with an argon2id hash; ``oidc_subject`` links an OpenID Connect identity.
        """
        check_name("user", name)
        if role not in ROLES:
            raise InvalidRequest(f"role {role!r} is invalid: use one of {', '.join(ROLES)}")
        clean_groups = list(dict.fromkeys(check_name("group", g) for g in groups))
        password_hash = passwords.hash_password(password) if password is not None else None
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
                    password_hash=password_hash,
                    disabled=False,
                    created_at=now,
                    groups=clean_groups,
                    oidc_subject=oidc_subject,
                )
            )
            data: dict[str, Any] = {"name": name, "role": role}
            if clean_groups:
                data["groups"] = clean_groups
            if password_hash is not None:
                data["password"] = True
            if oidc_subject is not None:
                data["oidc_subject"] = oidc_subject
            append(connection, now, [NewEvent("user.created", actor.actor, data=data)])
        record = {"name": name, "role": role, "created_at": isoformat(now)}
        if clean_groups:
            record["groups"] = clean_groups
        return record, issued.token

    def list_users(self) -> list[dict[str, Any]]:
        with self.db.read() as connection:
            rows = connection.execute(select(users).order_by(users.c.name))
            return [
                {
                    "name": r.name,
                    "role": r.role,
                    "disabled": bool(r.disabled),
                    "created_at": isoformat(r.created_at),
                    "groups": list(r.groups or ()),
                    "password": r.password_hash is not None,
                    "sso": r.oidc_subject is not None,
                }
                for r in rows
            ]

    def set_user_disabled(
        self, name: str, disabled: bool, *, actor: Principal = LOCAL_ADMIN
    ) -> None:
        """Disable or enable a person; disabling also ends their console sessions at once."""
        now = self.clock.now()
        with self.db.write() as connection:
            if not self._user_exists(connection, name):
                raise NotFound(f"no user named {name!r}")
            connection.execute(update(users).where(users.c.name == name).values(disabled=disabled))
            if disabled:
                connection.execute(delete(console_sessions).where(console_sessions.c.user == name))
            event = "user.disabled" if disabled else "user.enabled"
            append(connection, now, [NewEvent(event, actor.actor, data={"name": name})])

    def set_password(self, name: str, password: str, *, actor: Principal = LOCAL_ADMIN) -> None:
        """Set a person's console password (argon2id); their other sessions end."""
        password_hash = passwords.hash_password(password)
        now = self.clock.now()
        with self.db.write() as connection:
            if not self._user_exists(connection, name):
                raise NotFound(f"no user named {name!r}")
            connection.execute(
                update(users).where(users.c.name == name).values(password_hash=password_hash)
            )
            connection.execute(delete(console_sessions).where(console_sessions.c.user == name))
            append(
                connection, now, [NewEvent("user.password_set", actor.actor, data={"name": name})]
            )

    def check_password(self, name: str, password: str) -> Principal | None:
        """The person signing in with ``name`` and ``password``, or None (same work either way)."""
        with self.db.read() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
        stored = row.password_hash if row is not None else None
        if not passwords.verify_password(stored, password) or row is None or row.disabled:
            return None
        return Principal("user", row.name, row.role, tuple(row.groups or ()))

    def user_principal(self, name: str) -> Principal | None:
        """An enabled person as a Principal (role and groups as stored now), or None."""
        with self.db.read() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
        if row is None or row.disabled:
            return None
        return Principal("user", row.name, row.role, tuple(row.groups or ()))

    # --- authentication -----------------------------------------------------------------
    def authenticate(self, token: str) -> Principal:
        """The principal behind a bearer token, or Unauthorized (never saying which part failed)."""
        parsed = tokens.parse(token)
        if parsed is None:
            if token.startswith("jgw_"):  # an agent session exchanged for an OIDC token
                from jitgate.identity.workload import authenticate_session

                return authenticate_session(self.db, self.clock, token)  # type: ignore[no-any-return]
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
        return Principal("user", row.name, row.role, tuple(row.groups or ()))

    @staticmethod
    def _agent_row(connection: Connection, name: str) -> Any:
        return connection.execute(select(agents).where(agents.c.name == name)).first()

    @staticmethod
    def _user_exists(connection: Connection, name: str) -> bool:
        return (
            connection.execute(select(users.c.name).where(users.c.name == name)).first() is not None
        )
