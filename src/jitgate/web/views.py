"""Read models for the console pages: what a person needs to see, gathered in few queries.

Nothing here changes state; every change goes through the grant and identity services.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select

from jitgate.approvals import rules
from jitgate.audit.chain import VerifyResult
from jitgate.core import Jitgate
from jitgate.errors import JitgateError
from jitgate.grants import states
from jitgate.grants.service import Grant, _grant
from jitgate.identity.service import Principal
from jitgate.scope import build_scope
from jitgate.store.schema import agents, approvals, audit_events, grants, users

WEEK = timedelta(days=7)
NOISY_PER_WEEK = 25  # a rule that sends more requests than this to people a week is flagged
HISTORY_LIMIT = 6


@dataclass(frozen=True)
class PairView:
    action: str
    resource: str
    access_level: str
    tier: str
    sensitive: bool
    privilege_escalation: bool
    prefix: bool


@lru_cache(maxsize=2048)
def _pairs(
    actions: tuple[str, ...], resources: tuple[str, ...], sensitive: tuple[str, ...]
) -> tuple[PairView, ...]:
    try:
        scope = build_scope(actions, resources, sensitive)
    except JitgateError:
        return tuple(
            PairView(a, r, "?", rules.HIGH, False, False, False) for a in actions for r in resources
        )
    return tuple(
        PairView(
            p.action,
            p.resource,
            p.access_level,
            rules.pair_tier(p),
            p.sensitive,
            p.privilege_escalation,
            p.prefix,
        )
        for p in scope.pairs
    )


def pairs_of(core: Jitgate, grant: Grant) -> tuple[PairView, ...]:
    return _pairs(grant.actions, grant.resources, tuple(core.settings.sensitive_arns))


def access_summary(pairs: Sequence[PairView]) -> str:
    """ "Write", "Read + Write", ...: the access levels a grant spans, strongest last."""
    order = ["List", "Read", "Tagging", "Write", "Permissions management"]
    levels = {p.access_level for p in pairs}
    return " + ".join(sorted(levels, key=lambda x: order.index(x) if x in order else 99))


@dataclass
class VoteView:
    approver: str
    decision: str
    comment: str
    at: datetime
    holds: bool  # bound to the request as it is now


@dataclass
class AgentHistory:
    agent: str
    owner: str | None
    groups: tuple[str, ...]
    disabled: bool
    by_status: dict[str, int]
    total: int
    denied_calls: int
    refused: int
    recent: list[Grant]


@dataclass
class InboxItem:
    grant: Grant
    pairs: tuple[PairView, ...]
    state: rules.ApprovalState
    votes: list[VoteView]
    history: AgentHistory
    why_not: str | None  # why the viewer may not decide it; None when they may

    @property
    def can_decide(self) -> bool:
        return self.why_not is None


def _votes(core: Jitgate, connection: Any, grant: Grant) -> list[VoteView]:
    rows = connection.execute(
        select(approvals).where(approvals.c.grant_id == grant.id).order_by(approvals.c.id)
    ).all()
    current = grant.fingerprint
    return [
        VoteView(r.approver, r.decision, r.comment, r.created_at, r.fingerprint == current)
        for r in rows
    ]


def agent_history(
    core: Jitgate, connection: Any, agent: str, exclude: str | None = None
) -> AgentHistory:
    since = core.clock.now() - WEEK
    record = connection.execute(select(agents).where(agents.c.name == agent)).first()
    counts = dict(
        connection.execute(
            select(grants.c.status, func.count())
            .where(grants.c.agent == agent, grants.c.requested_at >= since)
            .group_by(grants.c.status)
        ).all()
    )
    recent_rows = connection.execute(
        select(grants)
        .where(grants.c.agent == agent, grants.c.id != (exclude or ""))
        .order_by(grants.c.requested_at.desc())
        .limit(HISTORY_LIMIT)
    ).all()
    by_type = dict(
        connection.execute(
            select(audit_events.c.type, func.count())
            .where(
                audit_events.c.agent == agent,
                audit_events.c.type.in_(["call.denied", "grant.refused"]),
                audit_events.c.ts >= since,
            )
            .group_by(audit_events.c.type)
        ).all()
    )
    return AgentHistory(
        agent=agent,
        owner=record.owner if record else None,
        groups=tuple(record.groups) if record else (),
        disabled=bool(record.disabled) if record else False,
        by_status={k: int(v) for k, v in counts.items()},
        total=sum(int(v) for v in counts.values()),
        denied_calls=int(by_type.get("call.denied", 0)),
        refused=int(by_type.get("grant.refused", 0)),
        recent=[_grant(r) for r in recent_rows],
    )


def why_not(
    core: Jitgate, grant: Grant, viewer: Principal, owner: str | None, votes: list[VoteView]
) -> str | None:
    if grant.status != states.PENDING:
        return f"this request is {grant.status}"
    if grant.lapse_at is not None and core.clock.now() >= grant.lapse_at:
        return "this request has lapsed"
    reason = rules.may_decide(
        actor=viewer.actor,
        user_name=viewer.name,
        role=viewer.role,
        user_groups=viewer.groups,
        requested_by=grant.requested_by,
        agent_owner=owner,
        agent=grant.agent,
        groups=grant.decision.get("approver_groups", []),
    )
    if reason is not None:
        return reason
    if any(v.approver == viewer.actor for v in votes):
        return "you have already decided on this request"
    return None


def _state(
    grant: Grant, votes: list[VoteView], group_of: dict[str, tuple[str, ...]]
) -> rules.ApprovalState:
    current = grant.fingerprint
    return rules.approval_state(
        [
            rules.Vote(
                v.approver, group_of.get(v.approver, ()), v.decision, current if v.holds else None
            )
            for v in votes
        ],
        required=grant.approvals_required,
        groups=grant.decision.get("approver_groups", []),
        current_fingerprint=current,
    )


def _groups_of(connection: Any, votes: list[VoteView]) -> dict[str, tuple[str, ...]]:
    names = [v.approver.split(":", 1)[1] for v in votes if v.approver.startswith("user:")]
    if not names:
        return {}
    return {
        f"user:{n}": tuple(g or ())
        for n, g in connection.execute(
            select(users.c.name, users.c.groups).where(users.c.name.in_(names))
        )
    }


def inbox(core: Jitgate, viewer: Principal) -> list[InboxItem]:
    """Pending requests, the one that lapses first first."""
    items: list[InboxItem] = []
    with core.db.read() as connection:
        rows = connection.execute(
            select(grants)
            .where(grants.c.status == states.PENDING)
            .order_by(grants.c.requested_at, grants.c.id)
            .limit(200)
        ).all()
        for row in rows:
            grant = _grant(row)
            votes = _votes(core, connection, grant)
            history = agent_history(core, connection, grant.agent, exclude=grant.id)
            items.append(
                InboxItem(
                    grant=grant,
                    pairs=pairs_of(core, grant),
                    state=_state(grant, votes, _groups_of(connection, votes)),
                    votes=votes,
                    history=history,
                    why_not=why_not(core, grant, viewer, history.owner, votes),
                )
            )
    return items


def inbox_version(items: Sequence[InboxItem], counts: Sequence[RuleCount] = ()) -> str:
    """Changes whenever what the inbox shows changes (the page swaps the list only then)."""
    parts = [f"{i.grant.id}:{len(i.votes)}:{i.grant.status}:{i.why_not}" for i in items]
    parts += [f"{c.policy}={c.requests}" for c in counts]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class RuleCount:
    policy: str
    route: str
    requests: int
    by_status: Counter[str] = field(default_factory=Counter)

    @property
    def noisy(self) -> bool:
        return self.route == "required" and self.requests > NOISY_PER_WEEK


def rule_counts(core: Jitgate) -> list[RuleCount]:
    """How many requests each policy rule decided in the last seven days."""
    since = core.clock.now() - WEEK
    routes = {m.id: (m.approval or "forbid") for m in core.policy.policies.by_cedar_id.values()}
    counts: dict[str, RuleCount] = {}
    with core.db.read() as connection:
        rows = connection.execute(
            select(grants.c.decision, grants.c.status).where(grants.c.requested_at >= since)
        ).all()
    for decision, status in rows:
        if isinstance(decision, str):
            decision = json.loads(decision)
        for policy in decision.get("policies", []) or ["(no policy)"]:
            entry = counts.setdefault(policy, RuleCount(policy, routes.get(policy, "?"), 0))
            entry.requests += 1
            entry.by_status[status] += 1
    return sorted(counts.values(), key=lambda c: (-c.requests, c.policy))


@dataclass
class CallView:
    request_id: str
    ts: str
    operation: str
    service: str
    access: list[dict[str, str]]
    outcome: str  # "allowed" | "denied"
    status: int | None
    bytes_in: int | None
    bytes_out: int | None
    duration_ms: float | None
    message: str
    seq: int


def calls_of(events: Sequence[dict[str, Any]]) -> list[CallView]:
    """Pair each call's "allowed" event with its outcome; denied calls stand alone."""
    calls: dict[str, CallView] = {}
    order: list[str] = []
    for event in events:
        data = event["data"]
        request_id = str(data.get("request_id") or f"seq-{event['seq']}")
        if event["type"] in ("call.allowed", "call.denied"):
            calls[request_id] = CallView(
                request_id=request_id,
                ts=event["ts"],
                operation=str(data.get("operation", "")),
                service=str(data.get("service", "")),
                access=list(data.get("access", [])),
                outcome="allowed" if event["type"] == "call.allowed" else "denied",
                status=None,
                bytes_in=None,
                bytes_out=None,
                duration_ms=None,
                message=str(data.get("message", "")) if event["type"] == "call.denied" else "",
                seq=event["seq"],
            )
            order.append(request_id)
            if data.get("one_call"):
                calls[request_id].message = "the one call this grant permitted"
        elif event["type"] == "call.completed" and request_id in calls:
            call = calls[request_id]
            call.status = data.get("status")
            call.bytes_in = data.get("bytes_in")
            call.bytes_out = data.get("bytes_out")
            call.duration_ms = data.get("duration_ms")
            if data.get("error"):
                call.message = str(data["error"])
    return [calls[r] for r in order]


@dataclass
class GrantRecord:
    grant: Grant
    pairs: tuple[PairView, ...]
    votes: list[VoteView]
    state: rules.ApprovalState
    history: AgentHistory
    events: list[dict[str, Any]]
    calls: list[CallView]
    why_not: str | None


def _event_dict(row: Any) -> dict[str, Any]:
    body = json.loads(row.body)
    return {
        "seq": int(row.seq),
        "ts": body["ts"],
        "type": body["type"],
        "actor": body["actor"],
        "agent": body["agent"],
        "grant_id": body["grant_id"],
        "data": body["data"],
        "hash": row.hash,
    }


def grant_record(core: Jitgate, grant_id: str, viewer: Principal) -> GrantRecord:
    with core.db.read() as connection:
        row = connection.execute(select(grants).where(grants.c.id == grant_id)).first()
        if row is None:
            from jitgate.errors import NotFound

            raise NotFound(f"no grant {grant_id!r}")
        grant = _grant(row)
        votes = _votes(core, connection, grant)
        history = agent_history(core, connection, grant.agent, exclude=grant.id)
        event_rows = connection.execute(
            select(audit_events.c.seq, audit_events.c.body, audit_events.c.hash)
            .where(audit_events.c.grant_id == grant_id)
            .order_by(audit_events.c.seq)
            .limit(20_000)
        ).all()
        state = _state(grant, votes, _groups_of(connection, votes))
    events = [_event_dict(r) for r in event_rows]
    return GrantRecord(
        grant=grant,
        pairs=pairs_of(core, grant),
        votes=votes,
        state=state,
        history=history,
        events=[e for e in events if not e["type"].startswith("call.")],
        calls=calls_of([e for e in events if e["type"].startswith("call.")]),
        why_not=why_not(core, grant, viewer, history.owner, votes),
    )


def grants_by_status(
    core: Jitgate, status: str | None, agent: str | None, limit: int = 200
) -> list[Grant]:
    query = select(grants).order_by(grants.c.requested_at.desc()).limit(limit)
    if status == states.ACTIVE:
        query = (
            select(grants)
            .where(grants.c.status == states.ACTIVE, grants.c.expires_at > core.clock.now())
            .order_by(grants.c.expires_at)
            .limit(limit)
        )
    elif status:
        query = query.where(grants.c.status == status)
    if agent:
        query = query.where(grants.c.agent == agent)
    with core.db.read() as connection:
        return [_grant(r) for r in connection.execute(query)]


def call_counts(core: Jitgate, grant_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    if not grant_ids:
        return {}
    with core.db.read() as connection:
        rows = connection.execute(
            select(audit_events.c.grant_id, audit_events.c.type, func.count())
            .where(
                audit_events.c.grant_id.in_(list(grant_ids)),
                audit_events.c.type.in_(["call.allowed", "call.denied"]),
            )
            .group_by(audit_events.c.grant_id, audit_events.c.type)
        ).all()
    out: dict[str, dict[str, int]] = {}
    for grant_id, event_type, count in rows:
        out.setdefault(grant_id, {})[event_type.split(".", 1)[1]] = int(count)
    return out


# --- the audit log ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditQuery:
    agent: str | None = None
    grant: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_seq: int | None = None
    limit: int = 100


def audit_search(core: Jitgate, query: AuditQuery) -> list[dict[str, Any]]:
    """Newest first. ``type`` is exact, or a prefix when it ends with "." or "*"."""
    stmt = select(audit_events.c.seq, audit_events.c.body, audit_events.c.hash)
    if query.agent:
        stmt = stmt.where(audit_events.c.agent == query.agent)
    if query.grant:
        stmt = stmt.where(audit_events.c.grant_id == query.grant)
    if query.type:
        if query.type.endswith(("*", ".")):
            stmt = stmt.where(
                audit_events.c.type.startswith(query.type.rstrip("*"), autoescape=True)
            )
        else:
            stmt = stmt.where(audit_events.c.type == query.type)
    if query.since:
        stmt = stmt.where(audit_events.c.ts >= query.since)
    if query.until:
        stmt = stmt.where(audit_events.c.ts < query.until)
    if query.before_seq:
        stmt = stmt.where(audit_events.c.seq < query.before_seq)
    stmt = stmt.order_by(audit_events.c.seq.desc()).limit(max(1, min(query.limit, 500)))
    with core.db.read() as connection:
        return [_event_dict(r) for r in connection.execute(stmt)]


def event_types(core: Jitgate) -> list[str]:
    with core.db.read() as connection:
        return sorted(t for (t,) in connection.execute(select(audit_events.c.type).distinct()))


class VerifyCache:
    """The chain's verification, walked at most once per ``ttl`` seconds (it reads every event)."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._result: tuple[VerifyResult, float, datetime] | None = None

    def get(self, core: Jitgate, *, fresh: bool = False) -> tuple[VerifyResult, datetime]:
        with self._lock:
            if fresh or self._result is None or time.monotonic() - self._result[1] > self.ttl:
                self._result = (core.audit.verify(), time.monotonic(), core.clock.now())
            return self._result[0], self._result[2]
