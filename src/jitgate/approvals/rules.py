"""Approval rules as pure functions: what an approval is bound to, who may give one, and when
enough have been given.

The policy decides *that* a request needs people (``@approval("required")``), *how many*
distinct ones (``@approvers("2")``) and *from where* (``@approver_group("security")``). These
functions apply that to the approvals recorded so far; the grant service calls them inside the
locked transaction that records each decision, so two approvers acting at once are counted
one after the other, never both as the last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jitgate.scope import ScopePair

# Risk tiers, lowest first. They summarise a scope for a person; the policy still decides.
LOW, MEDIUM, HIGH, CRITICAL = "low", "medium", "high", "critical"
TIERS = (LOW, MEDIUM, HIGH, CRITICAL)


def fingerprint(
    *,
    grant_id: str,
    agent: str,
    actions: Sequence[str],
    resources: Sequence[str],
    duration_seconds: int,
    reason: str,
    one_call: Mapping[str, Any] | None,
) -> str:
    """SHA-256 over exactly what an approver is shown.

    An approval records the fingerprint of the request as the approver saw it, and counts only
    while the request still has that fingerprint: nothing else can ride on it.
    """
    shown = {
        "grant": grant_id,
        "agent": agent,
        "actions": list(actions),
        "resources": list(resources),
        "duration_seconds": duration_seconds,
        "reason": reason,
        "one_call": dict(one_call) if one_call is not None else None,
    }
    text = json.dumps(shown, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pair_tier(pair: ScopePair) -> str:
    if pair.privilege_escalation or pair.access_level == "Permissions management":
        return CRITICAL
    if pair.access_level == "Write" or pair.sensitive:
        return HIGH
    if pair.access_level == "Tagging":
        return MEDIUM
    return LOW


def risk_tier(pairs: Iterable[ScopePair]) -> str:
    """The highest tier over a scope's pairs: what the worst thing this grant allows is."""
    return max((pair_tier(p) for p in pairs), key=TIERS.index, default=LOW)


@dataclass(frozen=True)
class Vote:
    """One recorded decision on a request: who, in which groups, approve or deny, and the
    fingerprint of what they were shown."""

    approver: str  # the actor, "user:alice" or "local:cli"
    groups: tuple[str, ...]
    decision: str  # "approve" | "deny"
    fingerprint: str | None
    # The approver may still approve now: an approval by someone since disabled, deleted or
    # moved to a role that cannot approve no longer counts toward the number required.
    standing: bool = True


@dataclass(frozen=True)
class ApprovalState:
    approvals: int  # approvals that count (distinct approvers, bound to the current request)
    required: int
    missing_groups: tuple[str, ...]  # required groups no counted approver belongs to
    denied: bool
    groups: tuple[str, ...] = ()  # the groups the policy names

    @property
    def satisfied(self) -> bool:
        return not self.denied and self.approvals >= self.required and not self.missing_groups

    def describe(self) -> str:
        text = f"{self.approvals} of {self.required} approval{'s' if self.required != 1 else ''}"
        if self.groups:
            text += f" from group {', '.join(self.groups)}"
        if self.missing_groups and self.approvals:
            text += f"; still needs someone from {', '.join(self.missing_groups)}"
        return text


def is_break_glass(actor: str) -> bool:
    """The host's own administrator (the local CLI) stands in for any group."""
    return actor.startswith("local:")


def approval_state(
    votes: Iterable[Vote], *, required: int, groups: Sequence[str], current_fingerprint: str
) -> ApprovalState:
    """Count the approvals that hold for the request as it is now.

    An approval counts once per approver, only if it was given to the request with the current
    fingerprint, only while its approver may still approve, and only if the approver belongs to
    one of ``groups`` (when the policy names any). Every named group must be represented among
    the counted approvers.
    """
    required = max(1, required)
    counted: dict[str, Vote] = {}
    denied = False
    for vote in votes:
        if vote.decision == "deny":
            denied = True
            continue
        if vote.fingerprint != current_fingerprint or not vote.standing:
            continue
        if groups and not is_break_glass(vote.approver) and not set(vote.groups) & set(groups):
            continue
        counted.setdefault(vote.approver, vote)
    covered: set[str] = set()
    for vote in counted.values():
        covered.update(groups if is_break_glass(vote.approver) else vote.groups)
    missing = tuple(g for g in groups if g not in covered)
    return ApprovalState(len(counted), required, missing, denied, tuple(groups))


def _same_name(owner: str, user_name: str | None) -> bool:
    """Owners are checked as user names when written; rows from before are compared loosely."""
    return user_name is not None and owner.strip().lower() == user_name.lower()


def may_decide(
    *,
    actor: str,
    user_name: str | None,
    role: str | None,
    user_groups: Sequence[str],
    requested_by: str | None,
    agent_owner: str | None,
    agent: str,
    groups: Sequence[str],
) -> str | None:
    """Why ``actor`` may not decide this request, or None when they may.

    Nobody decides a request they made or one for an agent they own; only approvers and
    admins decide; when the policy names approver groups, only their members do.
    """
    if actor.startswith("agent:"):
        return "agents cannot approve or deny grants"
    if is_break_glass(actor):
        return None
    if role not in ("admin", "approver"):
        return f"role {role!r} cannot approve or deny grants"
    if requested_by is not None and requested_by == actor:
        return f"{user_name!r} made this request and cannot decide it"
    if agent_owner is not None and _same_name(agent_owner, user_name):
        return f"{user_name!r} owns agent {agent!r} and cannot decide its grants"
    if groups and not set(user_groups) & set(groups):
        return (
            f"this request needs an approver from group {', '.join(groups)}; "
            f"{user_name!r} is in {', '.join(user_groups) or 'no group'}"
        )
    return None
