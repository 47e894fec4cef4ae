"""Evaluate a scope against the Cedar policy: one Cedar request per (action, resource) pair.

Route per pair: no satisfied permit -> denied; any satisfied forbid -> denied (forbid wins);
otherwise the strictest @approval among the satisfied permits, the smallest @max_duration and
the largest @approvers. The request takes the strictest route over all its pairs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cedarpy

from jitgate.errors import PolicyError
from jitgate.policy.durations import format_duration
from jitgate.policy.source import DEFAULT_MAX_SECONDS, LoadedPolicies, PolicyMeta, load_policies
from jitgate.scope import Scope, ScopePair

log = logging.getLogger(__name__)

AUTO, REQUIRED, DENIED = "auto", "required", "denied"
_STRICTNESS = {AUTO: 0, REQUIRED: 1, DENIED: 2}

DEFAULT_POLICY_PATH = Path(__file__).with_name("default.cedar")


@dataclass(frozen=True)
class PairDecision:
    action: str
    resource: str
    route: str
    policies: tuple[str, ...]
    max_duration_seconds: int
    approvers: int
    approver_groups: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Decision:
    route: str
    policies: tuple[str, ...]
    reasons: tuple[str, ...]
    max_duration_seconds: int
    approvals_required: int
    approver_groups: tuple[str, ...] = ()
    pairs: tuple[PairDecision, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {
            "route": self.route,
            "policies": list(self.policies),
            "reasons": list(self.reasons),
            "max_duration_seconds": self.max_duration_seconds,
            "approvals_required": self.approvals_required,
            "approver_groups": list(self.approver_groups),
        }


def cedar_entities(agent: str, groups: Sequence[str], pairs: Sequence[ScopePair]) -> list[dict]:
    entities: list[dict] = [
        {
            "uid": {"type": "Agent", "id": agent},
            "attrs": {"name": agent},
            "parents": [{"type": "Group", "id": g} for g in groups],
        }
    ]
    entities.extend({"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in groups)
    seen: set[str] = set()
    for pair in pairs:
        if pair.resource in seen:
            continue
        seen.add(pair.resource)
        if pair.resource == "*":
            attrs = {"arn": "*", "service": pair.service, "region": "", "account": "", "type": "*"}
        else:
            _, _, service, region, account, _ = pair.resource.split(":", 5)
            attrs = {
                "arn": pair.resource,
                "service": service,
                "region": region,
                "account": account,
                "type": pair.resource_type,
            }
        entities.append(
            {"uid": {"type": "Resource", "id": pair.resource}, "attrs": attrs, "parents": []}
        )
    return entities


def cedar_request(agent: str, pair: ScopePair, duration: int, reason: str) -> dict:
    return {
        "principal": {"type": "Agent", "id": agent},
        "action": {"type": "Action", "id": pair.action},
        "resource": {"type": "Resource", "id": pair.resource},
        "context": {
            "access_level": pair.access_level,
            "sensitive": pair.sensitive,
            "privilege_escalation": pair.privilege_escalation,
            "prefix": pair.prefix,
            "duration_seconds": duration,
            "reason": reason,
        },
    }


FileStamp = tuple[int, int, int, int, int]


def file_stamp(path: Path) -> FileStamp:
    """What changes whenever a file's content may have: device, inode, size, mtime, ctime."""
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class PolicyEngine:
    """Holds the policy in force. Reloading a bad file keeps the last good policy."""

    def __init__(self, loaded: LoadedPolicies) -> None:
        self._loaded = loaded
        self._lock = threading.Lock()
        self._stamp: FileStamp | None = None
        self._file_backed = False  # only an engine read from a file reloads it
        self.last_error: str | None = None

    @classmethod
    def from_file(cls, path: Path) -> PolicyEngine:
        try:
            stamp = file_stamp(path)  # before reading: a later change is seen as one
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
        engine = cls(load_policies(text, str(path)))
        engine._stamp = stamp
        engine._file_backed = True
        return engine

    @classmethod
    def from_text(cls, text: str, path: str = "policy.cedar") -> PolicyEngine:
        return cls(load_policies(text, path))

    @property
    def policies(self) -> LoadedPolicies:
        return self._loaded

    def reload_if_changed(self) -> bool:
        """Reload the file when it changed; on a bad file keep the last good policy.

        "Changed" is any difference in inode, size, mtime or ctime: a file replaced or
        rewritten with its old mtime (``cp -p``, ``rsync -t``) still changes its ctime, which no
        caller can set.

        Returns True when a new policy came into force. The error of a rejected file is kept
        in ``last_error`` and logged, naming file, line and reason.
        """
        if not self._file_backed:
            return False
        path = Path(self._loaded.path)
        try:
            stamp = file_stamp(path)
        except OSError:
            return False
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                loaded = load_policies(path.read_text(encoding="utf-8"), str(path))
            except (PolicyError, OSError) as exc:
                self.last_error = str(exc)
                log.error("policy rejected, keeping the last good policy: %s", exc)
                return False
            self._loaded = loaded
            self.last_error = None
            return True

    def decide(
        self,
        agent: str,
        groups: Sequence[str],
        scope: Scope,
        duration_seconds: int,
        reason: str = "",
    ) -> Decision:
        loaded = self._loaded
        requests = [cedar_request(agent, pair, duration_seconds, reason) for pair in scope.pairs]
        entities = json.dumps(cedar_entities(agent, groups, scope.pairs))
        results = cedarpy.is_authorized_batch(requests, loaded.policy_set, entities)
        pair_decisions = [
            self._pair_decision(loaded, pair, result)
            for pair, result in zip(scope.pairs, results, strict=True)
        ]
        return _combine(pair_decisions, duration_seconds)

    @staticmethod
    def _pair_decision(
        loaded: LoadedPolicies, pair: ScopePair, result: cedarpy.AuthzResult
    ) -> PairDecision:
        what = f"{pair.action} on {pair.resource}"
        # Cedar reports the determining policies as a set: order them as in the file, so the
        # recorded decision is the same every time.
        metas = sorted(
            (loaded.by_cedar_id[r] for r in result.diagnostics.reasons if r in loaded.by_cedar_id),
            key=lambda m: m.line,
        )
        ids = tuple(m.id for m in metas)
        if not result.allowed:
            if metas:
                why = f"{what}: forbidden by {', '.join(ids)}"
            else:
                why = f"{what}: no policy permits it"
            return PairDecision(pair.action, pair.resource, DENIED, ids, 0, 0, (), why)
        if pair.prefix:
            metas = [m for m in metas if m.allow_prefix]
            if not metas:
                return PairDecision(
                    pair.action,
                    pair.resource,
                    DENIED,
                    ids,
                    0,
                    0,
                    (),
                    f'{what}: a prefix grant needs a permit with @allow_prefix("true"); '
                    f"{', '.join(ids)} does not allow one",
                )
            ids = tuple(m.id for m in metas)
        route = max((m.approval for m in metas), key=_STRICTNESS.__getitem__)
        cap = min(m.max_duration_seconds for m in metas)
        approvers = max(m.approvers for m in metas) if route == REQUIRED else 0
        groups = tuple(sorted({m.approver_group for m in metas if m.approver_group}))
        return PairDecision(
            pair.action,
            pair.resource,
            route,
            ids,
            cap,
            approvers,
            groups,
            f"{what}: {route} by {', '.join(ids)} (max {format_duration(cap)})",
        )


def _combine(pairs: Sequence[PairDecision], duration_seconds: int) -> Decision:
    route = max((p.route for p in pairs), key=_STRICTNESS.__getitem__)
    policies = tuple(dict.fromkeys(pid for p in pairs for pid in p.policies))
    if route == DENIED:
        reasons = tuple(p.reason for p in pairs if p.route == DENIED)
        return Decision(DENIED, policies, reasons, 0, 0, (), tuple(pairs))
    cap = min(p.max_duration_seconds for p in pairs)
    deciding = min(pairs, key=lambda p: p.max_duration_seconds)
    reasons = tuple(p.reason for p in pairs)
    if duration_seconds > cap:
        why = (
            f"duration {duration_seconds}s is above the maximum of {cap}s "
            f"({format_duration(cap)}) allowed by {', '.join(deciding.policies)} "
            f"for {deciding.action} on {deciding.resource}"
        )
        return Decision(DENIED, policies, (why,), cap, 0, (), tuple(pairs))
    approvals = max(p.approvers for p in pairs) if route == REQUIRED else 0
    groups = tuple(sorted({g for p in pairs for g in p.approver_groups}))
    return Decision(route, policies, reasons, cap, approvals, groups, tuple(pairs))


def describe(meta: PolicyMeta) -> str:
    return f"{meta.id} (line {meta.line}, {meta.effect}, {meta.approval or '-'})"


__all__ = ["AUTO", "DEFAULT_MAX_SECONDS", "DENIED", "REQUIRED", "Decision", "PolicyEngine"]
