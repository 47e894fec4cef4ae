"""The grant lifecycle service: every state change checks its transition and writes the row and
its audit events in one transaction, so the record and the state can never disagree."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from jitgate.audit.log import AuditLog, NewEvent, append
from jitgate.clock import Clock, isoformat
from jitgate.errors import Conflict, Forbidden, InvalidRequest, JitgateError, NotFound
from jitgate.grants import states
from jitgate.grants.credentials import Credentials, MasterKey, new_access_key_id
from jitgate.identity.service import LOCAL_ADMIN, IdentityService, Principal, check_name
from jitgate.policy.engine import AUTO, DENIED, PolicyEngine
from jitgate.policy.source import MAX_GRANT_SECONDS
from jitgate.scope import Scope, build_scope
from jitgate.store.db import Database
from jitgate.store.schema import agents, approvals, grants

MAX_REASON = 1000


@dataclass(frozen=True)
class GrantSettings:
    default_duration_seconds: int = 300
    lapse_seconds: int = 900
    sensitive_arns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    id: str
    agent: str
    status: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    duration_seconds: int
    reason: str
    route: str
    decision: dict[str, Any]
    approvals_required: int
    requested_at: datetime
    lapse_at: datetime | None
    activated_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None
    ended_by: str | None
    access_key_id: str | None
    approvals: tuple[dict[str, Any], ...] = field(default=())

    def is_live(self, now: datetime) -> bool:
        return (
            self.status == states.ACTIVE and self.expires_at is not None and now < self.expires_at
        )

    def as_dict(self, credentials: Credentials | None = None) -> dict[str, Any]:
        def ts(value: datetime | None) -> str | None:
            return isoformat(value) if value else None

        out: dict[str, Any] = {
            "id": self.id,
            "agent": self.agent,
            "status": self.status,
            "actions": list(self.actions),
            "resources": list(self.resources),
            "duration_seconds": self.duration_seconds,
            "reason": self.reason,
            "requested_at": ts(self.requested_at),
            "lapse_at": ts(self.lapse_at),
            "activated_at": ts(self.activated_at),
            "expires_at": ts(self.expires_at),
            "ended_at": ts(self.ended_at),
            "ended_by": self.ended_by,
            "decision": self.decision,
            "approvals_required": self.approvals_required,
            "approvals": list(self.approvals),
        }
        if credentials is not None:
            out["credentials"] = credentials.as_dict()
        return out


def _grant(row: Any, approval_rows: Sequence[Any] = ()) -> Grant:
    return Grant(
        id=row.id,
        agent=row.agent,
        status=row.status,
        actions=tuple(row.actions),
        resources=tuple(row.resources),
        duration_seconds=row.duration_seconds,
        reason=row.reason,
        route=row.route,
        decision=dict(row.decision),
        approvals_required=row.approvals_required,
        requested_at=row.requested_at,
        lapse_at=row.lapse_at,
        activated_at=row.activated_at,
        expires_at=row.expires_at,
        ended_at=row.ended_at,
        ended_by=row.ended_by,
        access_key_id=row.access_key_id,
        approvals=tuple(
            {
                "approver": a.approver,
                "decision": a.decision,
                "comment": a.comment,
                "at": isoformat(a.created_at),
            }
            for a in approval_rows
        ),
    )


def new_grant_id() -> str:
    return "gr-" + secrets.token_hex(10)


def check_duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"duration_seconds must be a whole number of seconds, got {value!r}")
    if value <= 0:
        raise InvalidRequest(f"duration_seconds must be positive, got {value}")
    if value > MAX_GRANT_SECONDS:
        raise InvalidRequest(
            f"duration_seconds {value} is above the hard limit of {MAX_GRANT_SECONDS} (12h)"
        )
    return value


def check_reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("reason is required: say what the task needs this access for")
    if len(value) > MAX_REASON:
        raise InvalidRequest(f"reason is too long ({len(value)} characters, at most {MAX_REASON})")
    if any(ord(ch) < 0x20 and ch not in "\t" for ch in value):
        raise InvalidRequest("reason must be one line of text without control characters")
    return value.strip()


class GrantService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        policy: PolicyEngine,
        identity: IdentityService,
        master_key: MasterKey,
        settings: GrantSettings | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        self.identity = identity
        self.master_key = master_key
        self.settings = settings or GrantSettings()
        self.audit = AuditLog(db)

    # --- requesting -----------------------------------------------------------------------
    def request(
        self,
        principal: Principal,
        *,
        actions: Sequence[str],
        resources: Sequence[str],
        duration_seconds: int | None = None,
        reason: str = "",
        agent: str | None = None,
    ) -> tuple[Grant, Credentials | None]:
        """Validate, decide and record a grant request.

        Invalid requests raise (and are recorded as ``grant.refused``); policy denials return a
        grant with status ``denied``.
        """
        now = self.clock.now()
        agent_name = principal.name if principal.is_agent else agent
        try:
            if principal.is_agent:
                if agent is not None and agent != principal.name:
                    raise Forbidden("an agent can request grants only for itself")
            elif not principal.is_admin():
                raise Forbidden("only agents (or an admin acting for one) request grants")
            if agent_name is None:
                raise InvalidRequest("name the agent the grant is for")
            check_name("agent", agent_name)
            duration = check_duration(
                self.settings.default_duration_seconds
                if duration_seconds is None
                else duration_seconds
            )
            clean_reason = check_reason(reason)
            if principal.is_agent:
                groups = principal.groups  # authenticated just now, as an enabled agent
            else:
                record = self.identity.get_agent(agent_name)
                if record.disabled:
                    raise Forbidden(f"agent {agent_name!r} is disabled")
                groups = record.groups
            scope = build_scope(actions, resources, self.settings.sensitive_arns)
        except JitgateError as exc:
            self.record_refusal(
                principal, agent_name, actions, resources, duration_seconds, exc, now
            )
            raise
        self.policy.reload_if_changed()
        decision = self.policy.decide(agent_name, groups, scope, duration, clean_reason)
        return self._store_request(
            principal, agent_name, scope, duration, clean_reason, decision, now
        )

    def record_refusal(
        self,
        principal: Principal,
        agent_name: str | None,
        actions: object,
        resources: object,
        duration: object,
        error: JitgateError,
        now: datetime,
    ) -> None:
        def listed(value: object) -> list[str]:
            if isinstance(value, list | tuple):
                return [str(v)[:300] for v in list(value)[:100]]
            return [str(value)[:300]]

        self.audit.record(
            now,
            NewEvent(
                "grant.refused",
                principal.actor,
                agent=agent_name if isinstance(agent_name, str) else None,
                data={
                    "actions": listed(actions),
                    "resources": listed(resources),
                    "duration_seconds": duration
                    if isinstance(duration, int)
                    else str(duration)[:40],
                    "error": error.code,
                    "message": error.message,
                },
            ),
        )

    def _store_request(
        self,
        principal: Principal,
        agent_name: str,
        scope: Scope,
        duration: int,
        reason: str,
        decision: Any,
        now: datetime,
    ) -> tuple[Grant, Credentials | None]:
        grant_id = new_grant_id()
        status = {AUTO: states.ACTIVE, DENIED: states.DENIED}.get(decision.route, states.PENDING)
        states.check_transition(states.REQUESTED, status, grant_id)
        values: dict[str, Any] = {
            "id": grant_id,
            "agent": agent_name,
            "status": status,
            "actions": list(scope.actions),
            "resources": list(scope.resources),
            "duration_seconds": duration,
            "reason": reason,
            "route": decision.route,
            "decision": decision.as_dict(),
            "approvals_required": decision.approvals_required,
            "requested_at": now,
        }
        events = [
            NewEvent(
                "grant.requested",
                principal.actor,
                agent=agent_name,
                grant_id=grant_id,
                data={
                    "actions": list(scope.actions),
                    "resources": list(scope.resources),
                    "duration_seconds": duration,
                    "reason": reason,
                },
            ),
            NewEvent(
                "grant.decided",
                "policy",
                agent=agent_name,
                grant_id=grant_id,
                data=decision.as_dict(),
            ),
        ]
        if status == states.ACTIVE:
            values.update(self._activation(now, duration))
            events.append(self._activated_event(grant_id, agent_name, values))
        elif status == states.PENDING:
            values["lapse_at"] = now + timedelta(seconds=self.settings.lapse_seconds)
            events.append(
                NewEvent(
                    "grant.pending",
                    "policy",
                    agent=agent_name,
                    grant_id=grant_id,
                    data={
                        "approvals_required": decision.approvals_required,
                        "approver_groups": list(decision.approver_groups),
                        "lapse_at": isoformat(values["lapse_at"]),
                    },
                ),
            )
        else:
            values.update(ended_at=now, ended_by="policy")
            events.append(
                NewEvent(
                    "grant.denied",
                    "policy",
                    agent=agent_name,
                    grant_id=grant_id,
                    data={"reasons": list(decision.reasons)},
                )
            )
        with self.db.write() as connection:
            connection.execute(insert(grants).values(**values))
            append(connection, now, events)
        row = SimpleNamespace(**({column.name: None for column in grants.columns} | values))
        grant = _grant(row)
        # Credentials go only to the agent itself, never to an admin acting for it.
        return grant, self._credentials_for(grant) if principal.is_agent else None

    @staticmethod
    def _activation(now: datetime, duration: int) -> dict[str, Any]:
        return {
            "activated_at": now,
            "expires_at": now + timedelta(seconds=duration),
            "access_key_id": new_access_key_id(),
        }

    @staticmethod
    def _activated_event(grant_id: str, agent: str, values: dict[str, Any]) -> NewEvent:
        return NewEvent(
            "grant.activated",
            "jitgate",
            agent=agent,
            grant_id=grant_id,
            data={
                "expires_at": isoformat(values["expires_at"]),
                "access_key_id": values["access_key_id"],
            },
        )

    def _credentials_for(self, grant: Grant) -> Credentials | None:
        if (
            not grant.is_live(self.clock.now())
            or grant.access_key_id is None
            or grant.expires_at is None
        ):
            return None
        return self.master_key.credentials(grant.access_key_id, grant.id, grant.expires_at)

    # --- reading --------------------------------------------------------------------------
    def _load(self, connection: Connection, grant_id: str, *, lock: bool = False) -> Grant:
        query = select(grants).where(grants.c.id == grant_id)
        if lock:
            query = query.with_for_update()
        row = connection.execute(query).first()
        if row is None:
            raise NotFound(f"no grant {grant_id!r}")
        approval_rows = connection.execute(
            select(approvals).where(approvals.c.grant_id == grant_id).order_by(approvals.c.id)
        ).all()
        return _grant(row, approval_rows)

    def get(self, principal: Principal, grant_id: str) -> tuple[Grant, Credentials | None]:
        """A grant as its viewer may see it: agents see only their own, and only they get
        credentials, and only while the grant is live."""
        with self.db.read() as connection:
            grant = self._load(connection, grant_id)
            disabled = connection.execute(
                select(agents.c.disabled).where(agents.c.name == grant.agent)
            ).scalar_one()
        if principal.is_agent and principal.name != grant.agent:
            raise NotFound(f"no grant {grant_id!r}")
        credentials = None
        if principal.is_agent and not disabled:
            credentials = self._credentials_for(grant)
        return grant, credentials

    def list(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 100,
    ) -> list[Grant]:
        if status is not None and status not in states.STATUSES:
            raise InvalidRequest(
                f"status {status!r} is invalid: use one of {', '.join(states.STATUSES)}"
            )
        if principal.is_agent:
            if agent not in (None, principal.name):
                raise Forbidden("an agent can list only its own grants")
            agent = principal.name
        query = (
            select(grants).order_by(grants.c.requested_at.desc()).limit(max(1, min(limit, 1000)))
        )
        if status is not None:
            query = query.where(grants.c.status == status)
        if agent is not None:
            query = query.where(grants.c.agent == agent)
        with self.db.read() as connection:
            return [_grant(row) for row in connection.execute(query)]

    # --- deciding -------------------------------------------------------------------------
    def _check_approver(self, principal: Principal, grant: Grant, connection: Connection) -> None:
        if principal.is_agent:
            raise Forbidden("agents cannot approve or deny grants")
        if not principal.can_approve():
            raise Forbidden(f"role {principal.role!r} cannot approve or deny grants")
        owner = connection.execute(
            select(agents.c.owner).where(agents.c.name == grant.agent)
        ).scalar_one()
        if principal.kind == "user" and owner == principal.name:
            raise Forbidden(
                f"{principal.name!r} owns agent {grant.agent!r} and cannot decide its grants"
            )

    def approve(self, principal: Principal, grant_id: str, comment: str = "") -> Grant:
        return self._decide(principal, grant_id, comment, approve=True)

    def deny(self, principal: Principal, grant_id: str, comment: str = "") -> Grant:
        return self._decide(principal, grant_id, comment, approve=False)

    def _decide(self, principal: Principal, grant_id: str, comment: str, *, approve: bool) -> Grant:
        if not isinstance(comment, str) or len(comment) > MAX_REASON:
            raise InvalidRequest(f"comment must be text of at most {MAX_REASON} characters")
        now = self.clock.now()
        verb = "approve" if approve else "deny"
        try:
            with self.db.write() as connection:
                grant = self._load(connection, grant_id, lock=True)
                self._check_approver(principal, grant, connection)
                if grant.status != states.PENDING:
                    raise Conflict(
                        f"grant {grant_id} is {grant.status}, not pending; nothing to {verb}"
                    )
                if grant.lapse_at is not None and now >= grant.lapse_at:
                    raise Conflict(
                        f"grant {grant_id} lapsed at {isoformat(grant.lapse_at)}; nothing to {verb}"
                    )
                connection.execute(
                    insert(approvals).values(
                        grant_id=grant_id,
                        approver=principal.actor,
                        decision=verb,
                        comment=comment,
                        created_at=now,
                    )
                )
                event = NewEvent(
                    "grant.approval" if approve else "grant.denied",
                    principal.actor,
                    agent=grant.agent,
                    grant_id=grant_id,
                    data={"comment": comment},
                )
                if not approve:
                    self._transition(
                        connection,
                        grant,
                        states.DENIED,
                        {"ended_at": now, "ended_by": principal.actor},
                        [event],
                        now,
                    )
                else:
                    count = connection.execute(
                        select(func.count())
                        .select_from(approvals)
                        .where(approvals.c.grant_id == grant_id, approvals.c.decision == "approve")
                    ).scalar_one()
                    if count >= max(1, grant.approvals_required):
                        values = self._activation(now, grant.duration_seconds)
                        approved = NewEvent(
                            "grant.approved",
                            principal.actor,
                            agent=grant.agent,
                            grant_id=grant_id,
                            data={"approvals": count},
                        )
                        self._transition(
                            connection,
                            grant,
                            states.ACTIVE,
                            values,
                            [event, approved, self._activated_event(grant_id, grant.agent, values)],
                            now,
                        )
                    else:
                        append(connection, now, [event])
        except IntegrityError:
            raise Conflict(f"{principal.actor} has already decided on grant {grant_id}") from None
        with self.db.read() as connection:
            return self._load(connection, grant_id)

    def revoke(self, principal: Principal, grant_id: str, reason: str = "") -> Grant:
        now = self.clock.now()
        with self.db.write() as connection:
            grant = self._load(connection, grant_id, lock=True)
            if principal.is_agent:
                if principal.name != grant.agent:
                    raise NotFound(f"no grant {grant_id!r}")
            elif not principal.is_admin():
                raise Forbidden("only the owning agent or an admin can revoke a grant")
            if grant.status not in (states.ACTIVE, states.PENDING):
                raise Conflict(
                    f"grant {grant_id} is {grant.status}; only active or pending grants can be revoked"
                )
            event = NewEvent(
                "grant.revoked",
                principal.actor,
                agent=grant.agent,
                grant_id=grant_id,
                data={"reason": reason[:MAX_REASON]},
            )
            self._transition(
                connection,
                grant,
                states.REVOKED,
                {"ended_at": now, "ended_by": principal.actor},
                [event],
                now,
            )
            return self._load(connection, grant_id)

    def end_all_for_agent(
        self, connection: Connection, agent: str, now: datetime, actor: Principal
    ) -> list[NewEvent]:
        """Revoke every live or pending grant of an agent (used when it is disabled).

        Returns the events for the caller to append: the rows are locked and changed here
        before anything touches the audit chain head, the lock order every writer keeps
        (grant rows, then the head), so this never deadlocks with a revoke or a sweeper.
        """
        rows = connection.execute(
            select(grants.c.id, grants.c.status)
            .where(grants.c.agent == agent, grants.c.status.in_([states.ACTIVE, states.PENDING]))
            .order_by(grants.c.id)
            .with_for_update()
        ).all()
        events: list[NewEvent] = []
        for grant_id, status in rows:
            states.check_transition(status, states.REVOKED, grant_id)
            connection.execute(
                update(grants)
                .where(grants.c.id == grant_id, grants.c.status == status)
                .values(status=states.REVOKED, ended_at=now, ended_by=actor.actor)
            )
            events.append(
                NewEvent(
                    "grant.revoked",
                    actor.actor,
                    agent=agent,
                    grant_id=grant_id,
                    data={"reason": "agent disabled"},
                )
            )
        return events

    def _transition(
        self,
        connection: Connection,
        grant: Grant,
        target: str,
        values: dict[str, Any],
        events: Sequence[NewEvent],
        now: datetime,
    ) -> None:
        states.check_transition(grant.status, target, grant.id)
        result = connection.execute(
            update(grants)
            .where(grants.c.id == grant.id, grants.c.status == grant.status)
            .values(status=target, **values)
        )
        if result.rowcount != 1:
            raise Conflict(f"grant {grant.id} changed while being updated; try again")
        append(connection, now, events)

    # --- time -----------------------------------------------------------------------------
    def sweep(self, limit: int = 500) -> tuple[int, int]:
        """Expire active grants past their expiry and lapse pending ones past their deadline.

        Safe with several processes on one database: each change is a conditional UPDATE on
        the current status, so exactly one sweeper wins each grant and writes its event.
        """
        now = self.clock.now()
        expired = self._sweep_status(
            states.ACTIVE, grants.c.expires_at, states.EXPIRED, "grant.expired", now, limit
        )
        lapsed = self._sweep_status(
            states.PENDING, grants.c.lapse_at, states.LAPSED, "grant.lapsed", now, limit
        )
        return expired, lapsed

    def _sweep_status(
        self, current: str, deadline: Any, target: str, event_type: str, now: datetime, limit: int
    ) -> int:
        due = (grants.c.status == current) & (deadline <= now)
        with self.db.read() as connection:
            if connection.execute(select(grants.c.id).where(due).limit(1)).first() is None:
                return 0
        with self.db.write() as connection:
            # Lock the due rows first, in one order, and append all events after: grant rows
            # before the chain head, like every other writer, so a sweeper never waits in a
            # cycle with a revoke or another sweeper. Rows another transaction holds are left
            # to it (SKIP LOCKED; PostgreSQL) or to the next pass.
            rows = connection.execute(
                select(grants.c.id, grants.c.agent, deadline)
                .where(due)
                .order_by(deadline, grants.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            events: list[NewEvent] = []
            for grant_id, agent, when in rows:
                result = connection.execute(
                    update(grants)
                    .where(grants.c.id == grant_id, grants.c.status == current)
                    .values(status=target, ended_at=when, ended_by="jitgate")
                )
                if result.rowcount == 1:
                    events.append(
                        NewEvent(
                            event_type,
                            "jitgate",
                            agent=agent,
                            grant_id=grant_id,
                            data={"at": isoformat(when)},
                        )
                    )
            append(connection, now, events)
        return len(events)


__all__ = ["LOCAL_ADMIN", "Grant", "GrantService", "GrantSettings"]
