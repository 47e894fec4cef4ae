"""Least privilege, measured: what a grant allowed against what its calls used.

A grant covers (action, resource) pairs; every call the AWS endpoint forwarded under it is in the
audit log as ``call.allowed`` with ``data.access = [{action, arn}, ...]``. Comparing the two
flags actions and resources that were granted and never used, prefix grants of which only a few
objects were touched, and suggests the tighter scope that would have done the same work. The
same comparison over an agent's recent grants is the per-agent report.

Pure functions over the JSON shapes the API returns (grant dicts and audit event dicts), so the
server, the CLI in local mode and tests all use them alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jitgate.errors import ScopeError
from jitgate.iam.arn import covers, prefix_of
from jitgate.scope import build_scope

#: Under a prefix grant, suggest the exact ARNs used when there are at most this many.
MAX_EXACT_SUGGESTIONS = 10

_LIVE = ("active", "pending")


def _accesses(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    data = event.get("data") or {}
    return [
        (str(a.get("action")), str(a.get("arn")))
        for a in data.get("access", [])
        if isinstance(a, Mapping) and a.get("action") and a.get("arn")
    ]


def _covers(granted: str, arn: str) -> bool:
    return covers(granted, arn, "exact") or covers(granted, arn, "secret-name")


def grant_usage(grant: Mapping[str, Any], calls: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The least-privilege report of one grant from its call record (``call.*`` events)."""
    actions = list(grant.get("actions", []))
    resources = list(grant.get("resources", []))
    used: Counter[tuple[str, str]] = Counter()
    refused: Counter[tuple[str, str]] = Counter()
    counts = Counter()
    for event in calls:
        kind = event.get("type")
        if kind == "call.allowed":
            counts["allowed"] += 1
            used.update(_accesses(event))
        elif kind == "call.denied":
            counts["denied"] += 1
            refused.update(_accesses(event))
    try:
        pairs = [(p.action, p.resource) for p in build_scope(actions, resources).pairs]
    except ScopeError:  # a grant stored before a catalog change: compare action by action
        pairs = [(a, r) for a in actions for r in resources]

    granted_rows: list[dict[str, Any]] = []
    uses_by_pair: dict[tuple[str, str], list[str]] = {}
    for action, resource in pairs:
        arns = [arn for (a, arn) in used if a == action and _covers(resource, arn)]
        uses_by_pair[(action, resource)] = arns
        granted_rows.append(
            {
                "action": action,
                "resource": resource,
                "used": bool(arns),
                "calls": sum(used[(action, arn)] for arn in arns),
            }
        )
    used_actions = {row["action"] for row in granted_rows if row["used"]}
    used_resources = {row["resource"] for row in granted_rows if row["used"]}
    unused_actions = [a for a in actions if a not in used_actions]
    unused_resources = [r for r in resources if r not in used_resources]

    suggested_resources: list[str] = []
    findings: list[str] = []
    for resource in resources:
        if resource not in used_resources:
            continue
        touched = sorted(
            {arn for (a, r), arns in uses_by_pair.items() if r == resource for arn in arns}
        )
        if prefix_of(resource) is not None and len(touched) <= MAX_EXACT_SUGGESTIONS:
            suggested_resources.extend(touched)
            findings.append(
                f"prefix {resource} was granted; only {len(touched)} exact ARN(s) under it were used"
            )
        else:
            suggested_resources.append(resource)
    for action in unused_actions:
        findings.append(f"{action} was granted and never used")
    for resource in unused_resources:
        findings.append(f"{resource} was granted and never used")
    for (action, arn), n in sorted(refused.items()):
        if not any(a == action and _covers(r, arn) for a, r in pairs):
            findings.append(f"{action} on {arn} was tried {n} time(s) outside the grant")

    suggested: dict[str, Any] | None = None
    if used_actions:
        suggested = {
            "actions": [a for a in actions if a in used_actions],
            "resources": list(dict.fromkeys(suggested_resources)),
        }
    tight = (
        suggested is not None
        and suggested["actions"] == actions
        and suggested["resources"] == resources
    )
    return {
        "grant_id": grant.get("id"),
        "agent": grant.get("agent"),
        "status": grant.get("status"),
        "complete": grant.get("status") not in _LIVE,
        "calls": {"allowed": counts["allowed"], "denied": counts["denied"]},
        "granted": granted_rows,
        "used": [
            {"action": action, "arn": arn, "calls": n} for (action, arn), n in sorted(used.items())
        ],
        "unused_actions": unused_actions,
        "unused_resources": unused_resources,
        "suggested": suggested,
        "tight": tight,
        "findings": findings,
    }


def agent_report(
    agent: str, grants: Sequence[Mapping[str, Any]], usages: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The per-agent least-privilege summary over its recent grants (``usages`` in the same
    order as ``grants``): which actions it asks for and never uses, and, for each scope it
    requests repeatedly, the tighter scope that its calls show would have done."""
    statuses = Counter(str(g.get("status")) for g in grants)
    granted_count: Counter[str] = Counter()
    used_count: Counter[str] = Counter()
    by_scope: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Mapping[str, Any]]] = {}
    for grant, usage in zip(grants, usages, strict=True):
        if grant.get("status") in ("denied", "lapsed") or grant.get("activated_at") is None:
            continue  # never usable: says nothing about what the agent needs
        for action in grant.get("actions", []):
            granted_count[action] += 1
            if action not in usage["unused_actions"]:
                used_count[action] += 1
        key = (tuple(sorted(grant.get("actions", []))), tuple(sorted(grant.get("resources", []))))
        by_scope.setdefault(key, []).append(usage)

    actions_rows = [
        {
            "action": action,
            "granted": granted_count[action],
            "used": used_count[action],
        }
        for action in sorted(granted_count)
    ]
    suggestions: list[dict[str, Any]] = []
    for (actions, resources), group in by_scope.items():
        complete = [u for u in group if u["complete"]]
        if not complete:
            continue
        used_actions: set[str] = set()
        used_resources: list[str] = []
        for usage in complete:
            if usage["suggested"]:
                used_actions.update(usage["suggested"]["actions"])
                used_resources.extend(usage["suggested"]["resources"])
        suggested_actions = [a for a in actions if a in used_actions]
        suggested_resources = sorted(set(used_resources))
        if suggested_actions == list(actions) and suggested_resources == list(resources):
            continue
        entry: dict[str, Any] = {
            "requested": {"actions": list(actions), "resources": list(resources)},
            "grants": len(complete),
            "unused_actions": [a for a in actions if a not in used_actions],
        }
        if suggested_actions:
            entry["suggested"] = {
                "actions": suggested_actions,
                "resources": suggested_resources,
            }
        else:
            entry["suggested"] = None
            entry["note"] = "none of these grants was used; the agent may not need this at all"
        suggestions.append(entry)
    never_used = [row["action"] for row in actions_rows if row["used"] == 0]
    findings = [f"{a} was granted {granted_count[a]} time(s) and never used" for a in never_used]
    return {
        "agent": agent,
        "grants": len(grants),
        "by_status": dict(sorted(statuses.items())),
        "actions": actions_rows,
        "never_used_actions": never_used,
        "suggestions": suggestions,
        "findings": findings,
        "per_grant": [
            {
                "grant_id": u["grant_id"],
                "status": u["status"],
                "calls": u["calls"],
                "unused_actions": u["unused_actions"],
                "unused_resources": u["unused_resources"],
                "tight": u["tight"],
            }
            for u in usages
        ],
    }
