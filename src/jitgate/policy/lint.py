"""`jitgate policy lint`: the three ways a just-in-time set-up usually fails.

1. Scope without time: a permit with no duration cap of its own, or one above an hour, that
   admits write or permission actions.
2. Time without scope: a permit that admits prefix grants over a whole account, a whole service
   or everything (the scope check already refuses "*" for actions that take ARNs).
3. Approval on everything: low-risk List/Read requests routed to a human, which trains
   approvers to click yes without reading.

Cedar conditions are arbitrary expressions, so rather than reading them the linter asks each
permit about a fixed set of probe requests (one per kind of risk) and reports what it admits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cedarpy

from jitgate.policy.durations import format_duration
from jitgate.policy.engine import PolicyEngine, cedar_entities, cedar_request
from jitgate.policy.source import LoadedPolicies
from jitgate.scope import ScopePair, build_scope

ONE_HOUR = 3600


@dataclass(frozen=True)
class Probe:
    label: str
    action: str
    resource: str


WRITE_PROBES = (
    Probe("a write (s3:PutObject)", "s3:PutObject", "arn:aws:s3:::example-bucket/object.txt"),
    Probe(
        "a write (dynamodb:PutItem)",
        "dynamodb:PutItem",
        "arn:aws:dynamodb:us-east-1:123456789012:table/example",
    ),
)
PERMISSION_PROBES = (
    Probe(
        "a permission change (iam:AttachRolePolicy)",
        "iam:AttachRolePolicy",
        "arn:aws:iam::123456789012:role/example",
    ),
    Probe(
        "privilege escalation (iam:PassRole)",
        "iam:PassRole",
        "arn:aws:iam::123456789012:role/example",
    ),
)
LOW_RISK_PROBES = (
    Probe(
        "a low-risk read (s3:GetObject)", "s3:GetObject", "arn:aws:s3:::example-bucket/object.txt"
    ),
    Probe("a low-risk list (s3:ListBucket)", "s3:ListBucket", "arn:aws:s3:::example-bucket"),
    Probe(
        "a low-risk read (dynamodb:GetItem)",
        "dynamodb:GetItem",
        "arn:aws:dynamodb:us-east-1:123456789012:table/example",
    ),
)
BROAD_PREFIX_PROBES = (
    Probe("every bucket", "s3:ListBucket", "arn:aws:s3:::*"),
    Probe(
        "every table in the account",
        "dynamodb:GetItem",
        "arn:aws:dynamodb:us-east-1:123456789012:table/*",
    ),
    Probe(
        "every secret in the account",
        "secretsmanager:GetSecretValue",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:*",
    ),
)


@dataclass(frozen=True)
class Finding:
    kind: str  # "scope-without-time" | "time-without-scope" | "approval-on-everything"
    policy_id: str
    line: int
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "policy": self.policy_id,
            "line": self.line,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.line}: {self.policy_id}: {self.kind}: {self.message}"


@cache
def _pair(probe: Probe) -> ScopePair:
    return build_scope([probe.action], [probe.resource]).pairs[0]


def _admits(single: cedarpy.PolicySet, probe: Probe, duration: int = 60) -> bool:
    """Would this one permit (parsed alone), be satisfied by the probe request?"""
    pair = _pair(probe)
    result = cedarpy.is_authorized(
        cedar_request("lint-probe-agent", pair, duration, "lint"),
        single,
        cedar_entities("lint-probe-agent", ["lint-probe-group"], [pair]),
    )
    return bool(result.allowed)


def lint(policies: LoadedPolicies) -> list[Finding]:
    findings: list[Finding] = []
    permits = [m for m in policies.by_cedar_id.values() if m.effect == "permit"]
    for meta in permits:
        single = cedarpy.PolicySet.from_str(meta.text)
        risky = [p for p in (*WRITE_PROBES, *PERMISSION_PROBES) if _admits(single, p)]
        if risky:
            if not meta.max_duration_explicit:
                findings.append(
                    Finding(
                        "scope-without-time",
                        meta.id,
                        meta.line,
                        f"admits {risky[0].label} with no @max_duration of its own; give it an explicit cap",
                    )
                )
            elif meta.max_duration_seconds > ONE_HOUR:
                findings.append(
                    Finding(
                        "scope-without-time",
                        meta.id,
                        meta.line,
                        f"admits {risky[0].label} for up to {format_duration(meta.max_duration_seconds)}; "
                        "write and permission access should last an hour or less",
                    )
                )
        if meta.allow_prefix:
            broad = [p for p in BROAD_PREFIX_PROBES if _admits(single, p)]
            if broad:
                findings.append(
                    Finding(
                        "time-without-scope",
                        meta.id,
                        meta.line,
                        f"allows prefix grants over {broad[0].label} ({broad[0].resource}); "
                        "restrict resource.arn to the prefixes you mean",
                    )
                )
    engine = PolicyEngine(policies)
    for probe in LOW_RISK_PROBES:
        decision = engine.decide(
            "lint-probe-agent",
            ["lint-probe-group"],
            build_scope([probe.action], [probe.resource]),
            60,
        )
        if decision.route == "required":
            for policy_id in decision.policies:
                meta = next(m for m in permits if m.id == policy_id)
                if meta.approval == "required":
                    findings.append(
                        Finding(
                            "approval-on-everything",
                            meta.id,
                            meta.line,
                            f"routes {probe.label} to a human; approving routine reads trains approvers "
                            'to click yes — auto-approve low-risk reads with @approval("auto")',
                        )
                    )
    unique: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        unique.setdefault((finding.kind, finding.policy_id), finding)
    return sorted(unique.values(), key=lambda f: (f.line, f.kind))
