"""The grant lifecycle service: every state change checks its transition and writes the row and
its audit events in one transaction, so the record and the state can never disagree."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from jitgate.approvals import rules
from jitgate.audit.log import AuditLog, NewEvent, append
from jitgate.clock import Clock, isoformat
from jitgate.errors import Conflict, Forbidden, InvalidRequest, JitgateError, NotFound, NotYours
from jitgate.grants import states
from jitgate.grants.credentials import Credentials, MasterKey, new_access_key_id
from jitgate.identity.service import (
    APPROVING_ROLES,
    LOCAL_ADMIN,
    IdentityService,
    Principal,
    check_name,
)
from jitgate.policy.engine import AUTO, DENIED, PolicyEngine
from jitgate.policy.source import MAX_GRANT_SECONDS
from jitgate.scope import Scope, build_scope
from jitgate.store.db import Database
from jitgate.store.driver import DriverTxn, json_from_db
from jitgate.store.schema import agents, approvals, grants, users

MAX_REASON = 1000
_OPERATION = re.compile(r"[A-Za-z][A-Za-z0-9]{0,99}")

log = logging.getLogger(__name__)


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
    requested_by: str | None = None
    # One-exact-call grants: {"operation": "DeleteObject" | None}; the grant permits one call.
    one_call: dict[str, Any] | None = None
    risk: str | None = None

    @property
    def fingerprint(self) -> str:
        """What an approver approves: see ``jitgate.approvals.rules.fingerprint``."""
        return rules.fingerprint(
            grant_id=self.id,
            agent=self.agent,
            actions=self.actions,
            resources=self.resources,
            duration_seconds=self.duration_seconds,
            reason=self.reason,
            one_call=self.one_call,
        )

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
            "requested_by": self.requested_by,
            "one_call": self.one_call,
            "risk": self.risk,
            "fingerprint": self.fingerprint,
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
        requested_by=getattr(row, "requested_by", None),
        one_call=dict(row.one_call) if getattr(row, "one_call", None) is not None else None,
        risk=getattr(row, "risk", None),
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
        # Called with each new pending grant after it is committed (jitgate.approvals.notify).
        # It must not block; whatever it raises is logged and never changes the decision.
        self.on_pending: Callable[[Grant], None] | None = None

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
        one_call: bool = False,
        operation: str | None = None,
    ) -> tuple[Grant, Credentials | None]:
        """Validate, decide and record a grant request.

        Invalid requests raise (and are recorded as ``grant.refused``); policy denials return a
        grant with status ``denied``. With ``one_call`` the grant permits exactly one call within
        its scope (of ``operation``, when named), once; its duration is the window to make it.
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
            call = check_one_call(one_call, operation, scope)
        except JitgateError as exc:
            self.record_refusal(
                principal, agent_name, actions, resources, duration_seconds, exc, now
            )
            raise
        self.policy.reload_if_changed()
        decision = self.policy.decide(agent_name, groups, scope, duration, clean_reason)
        return self._store_request(
            principal, agent_name, scope, duration, clean_reason, decision, now, one_call=call
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

        valid_agent = _is_valid_name(agent_name)
        self.audit.record(
            now,
            NewEvent(
                "grant.refused",
                principal.actor,
                agent=agent_name if valid_agent else None,
                data={
                    **({} if valid_agent else _given_agent(agent_name)),
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
        *,
        one_call: dict[str, Any] | None = None,
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
            "requested_by": principal.actor,
            "one_call": one_call,
            "risk": rules.risk_tier(scope.pairs),
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
                    **({"one_call": one_call} if one_call is not None else {}),
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
            # Disabling an agent ends its grants in one transaction; a request that was being
            # decided meanwhile must not slip in after it (the agent row is locked, then read).
            disabled = connection.execute(
                select(agents.c.disabled).where(agents.c.name == agent_name).with_for_update()
            ).scalar_one()
            if disabled:
                raise Forbidden(f"agent {agent_name!r} is disabled")
            connection.execute(insert(grants).values(**values))
            append(connection, now, events)
        row = SimpleNamespace(**({column.name: None for column in grants.columns} | values))
        grant = _grant(row)
        if status == states.PENDING and self.on_pending is not None:
            try:
                self.on_pending(grant)
            except Exception:  # a notification never changes or blocks a decision
                log.exception("notifying about pending grant %s failed", grant_id)
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
            raise NotYours(f"no grant {grant_id!r}")
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
        owner, disabled = connection.execute(
            select(agents.c.owner, agents.c.disabled).where(agents.c.name == grant.agent)
        ).one()
        if disabled:
            raise Forbidden(f"agent {grant.agent!r} is disabled; its grants cannot be decided")
        why_not = rules.may_decide(
            actor=principal.actor,
            user_name=principal.name,
            role=principal.role,
            user_groups=principal.groups,
            requested_by=grant.requested_by,
            agent_owner=owner,
            agent=grant.agent,
            groups=grant.decision.get("approver_groups", []),
        )
        if why_not is not None:
            raise Forbidden(why_not)

    def approval_state(self, connection: Connection, grant: Grant) -> rules.ApprovalState:
        """The approvals that count for ``grant`` as it is now (see ``rules.approval_state``)."""
        rows = connection.execute(
            select(approvals.c.approver, approvals.c.decision, approvals.c.fingerprint)
            .where(approvals.c.grant_id == grant.id)
            .order_by(approvals.c.id)
        ).all()
        names = [r.approver.split(":", 1)[1] for r in rows if r.approver.startswith("user:")]
        groups: dict[str, tuple[str, ...]] = {}
        standing: set[str] = {r.approver for r in rows if rules.is_break_glass(r.approver)}
        if names:
            for name, user_groups, role, disabled in connection.execute(
                select(users.c.name, users.c.groups, users.c.role, users.c.disabled).where(
                    users.c.name.in_(names)
                )
            ):
                groups[f"user:{name}"] = tuple(user_groups or ())
                if not disabled and role in APPROVING_ROLES:
                    standing.add(f"user:{name}")
        votes = [
            rules.Vote(
                r.approver,
                groups.get(r.approver, ()),
                r.decision,
                r.fingerprint,
                standing=r.approver in standing,
            )
            for r in rows
        ]
        return rules.approval_state(
            votes,
            required=grant.approvals_required,
            groups=grant.decision.get("approver_groups", []),
            current_fingerprint=grant.fingerprint,
        )

    def approve(
        self,
        principal: Principal,
        grant_id: str,
        comment: str = "",
        *,
        fingerprint: str | None = None,
    ) -> Grant:
        """Approve a pending grant. With ``fingerprint`` (what the approver was shown; the
        console and the CLI always send it) a request that differs from it is refused."""
        return self._decide(principal, grant_id, comment, approve=True, fingerprint=fingerprint)

    def deny(self, principal: Principal, grant_id: str, comment: str = "") -> Grant:
        """Deny a pending grant: any one denial ends the request."""
        return self._decide(principal, grant_id, comment, approve=False)

    def _decide(
        self,
        principal: Principal,
        grant_id: str,
        comment: str,
        *,
        approve: bool,
        fingerprint: str | None = None,
    ) -> Grant:
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
                current = grant.fingerprint
                if approve and fingerprint is not None and fingerprint != current:
                    raise Conflict(
                        f"grant {grant_id} is not the request you were shown "
                        "(its fingerprint differs); review it again before approving"
                    )
                connection.execute(
                    insert(approvals).values(
                        grant_id=grant_id,
                        approver=principal.actor,
                        decision=verb,
                        comment=comment,
                        created_at=now,
                        fingerprint=current,
                    )
                )
                data: dict[str, Any] = {"comment": comment}
                if approve:
                    data["fingerprint"] = current
                event = NewEvent(
                    "grant.approval" if approve else "grant.denied",
                    principal.actor,
                    agent=grant.agent,
                    grant_id=grant_id,
                    data=data,
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
                    state = self.approval_state(connection, grant)
                    if state.satisfied:
                        values = self._activation(now, grant.duration_seconds)
                        approved = NewEvent(
                            "grant.approved",
                            principal.actor,
                            agent=grant.agent,
                            grant_id=grant_id,
                            data={"approvals": state.approvals, "fingerprint": current},
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
                    raise NotYours(f"no grant {grant_id!r}")
            elif not principal.is_admin():
                raise Forbidden("only the owning agent or an admin can revoke a grant")
            # A used one-call grant too: its one call may still be streaming, and revoking is
            # how an operator stops it (found in review: it answered 409 and the upload went on).
            if grant.status not in (states.ACTIVE, states.PENDING, states.USED):
                raise Conflict(
                    f"grant {grant_id} is {grant.status}; only active, pending or used grants "
                    "can be revoked"
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


def check_one_call(one_call: object, operation: object, scope: Scope) -> dict[str, Any] | None:
    """The ``one_call`` column for a request: None for a time window, else the exact call."""
    if one_call is None or one_call is False:
        if operation is not None:
            raise InvalidRequest("operation is only meaningful with one_call: true")
        return None
    if one_call is not True:
        raise InvalidRequest(f"one_call must be true or false, got {one_call!r}")
    if operation is not None and (
        not isinstance(operation, str) or _OPERATION.fullmatch(operation) is None
    ):
        raise InvalidRequest(
            f"operation must be an API operation name such as DeleteObject, got {operation!r}"
        )
    prefixed = [p.resource for p in scope.pairs if p.prefix]
    if prefixed:
        raise InvalidRequest(f"a one-call grant names exact resources; {prefixed[0]} is a prefix")
    return {"operation": operation}


_ONE_CALL_OF = "SELECT one_call FROM grants WHERE id = ?"
_USE_ONE_CALL = (
    "UPDATE grants SET status = ?, ended_at = ?, ended_by = 'jitgate' WHERE id = ? AND status = ?"
)


def consume_one_call(txn: DriverTxn, grant_id: str, operation: str, now: datetime) -> str | None:
    """Use up a one-exact-call grant for a call, in the caller's transaction (the audit
    writer's, on the DBAPI cursor: this runs on the gateway's hot path).

    Returns None when the grant is not a one-call grant (nothing to do), "consumed" when this
    call used it (the grant is now ``used``), or a refusal message. The conditional UPDATE on
    the current status means that of two racing calls exactly one consumes the grant: the other
    finds it no longer active (SQLite serialises writers; PostgreSQL re-checks the row after
    the first transaction commits).
    """
    (raw,) = txn.one(_ONE_CALL_OF, (grant_id,))
    one_call = json_from_db(raw)
    if one_call is None:
        return None
    wanted = one_call.get("operation")
    if wanted and wanted != operation:
        return f"grant {grant_id} permits one {wanted} call, not {operation}"
    states.check_transition(states.ACTIVE, states.USED, grant_id)
    cursor = txn.execute(_USE_ONE_CALL, (states.USED, txn.timestamp(now), grant_id, states.ACTIVE))
    txn.memo.pop(("grant", grant_id), None)  # its status just changed
    if cursor.rowcount != 1:
        return f"grant {grant_id} permitted one call and it has been made"
    return "consumed"


__all__ = ["LOCAL_ADMIN", "Grant", "GrantService", "GrantSettings", "consume_one_call"]


def _is_valid_name(name: object) -> bool:
    try:
        check_name("agent", name)  # type: ignore[arg-type]
    except InvalidRequest:
        return False
    return True


def _given_agent(name: object) -> dict[str, str]:
    """An agent name that is not one goes in the event's data, shown, never in its agent
    column (64 characters of plain text on PostgreSQL)."""
    return {} if name is None else {"agent_given": repr(name)[:100]}
