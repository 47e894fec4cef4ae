"""Approval rules as pure functions: fingerprints, risk tiers, counting, who may decide."""

from __future__ import annotations

from jitgate.approvals import rules
from jitgate.scope import build_scope

BASE = {
    "grant_id": "gr-1",
    "agent": "bot",
    "actions": ["s3:PutObject"],
    "resources": ["arn:aws:s3:::reports/a.csv"],
    "duration_seconds": 300,
    "reason": "fix",
    "one_call": None,
}


def test_fingerprint_covers_everything_an_approver_is_shown() -> None:
    original = rules.fingerprint(**BASE)
    assert len(original) == 64 and original == rules.fingerprint(**BASE)
    for key, value in {
        "grant_id": "gr-2",
        "agent": "other",
        "actions": ["s3:DeleteObject"],
        "resources": ["arn:aws:s3:::reports/b.csv"],
        "duration_seconds": 301,
        "reason": "fix!",
        "one_call": {"operation": None},
    }.items():
        assert rules.fingerprint(**{**BASE, key: value}) != original, key


def tier(action: str, resource: str, sensitive: tuple[str, ...] = ()) -> str:
    return rules.risk_tier(build_scope([action], [resource], sensitive).pairs)


def test_risk_tiers() -> None:
    assert tier("s3:GetObject", "arn:aws:s3:::reports/a.csv") == "low"
    assert tier("s3:GetObject", "arn:aws:s3:::payroll/a.csv", ("arn:aws:s3:::payroll/*",)) == "high"
    assert tier("s3:PutObject", "arn:aws:s3:::reports/a.csv") == "high"
    assert tier("s3:PutObjectTagging", "arn:aws:s3:::reports/a.csv") == "medium"
    assert tier("iam:PassRole", "arn:aws:iam::123456789012:role/x") == "critical"
    assert tier("iam:AttachRolePolicy", "arn:aws:iam::123456789012:role/x") == "critical"
    mixed = build_scope(["s3:GetObject", "s3:PutObject"], ["arn:aws:s3:::reports/a.csv"]).pairs
    assert rules.risk_tier(mixed) == "high"  # the worst thing the grant allows


FP = "f" * 64


def vote(
    who: str, decision: str = "approve", groups: tuple[str, ...] = (), fp: str | None = FP
) -> rules.Vote:
    return rules.Vote(who, groups, decision, fp)


def test_distinct_approvers_are_counted_once() -> None:
    state = rules.approval_state(
        [vote("user:a"), vote("user:a"), vote("user:b")],
        required=2,
        groups=(),
        current_fingerprint=FP,
    )
    assert (state.approvals, state.satisfied) == (2, True)
    one = rules.approval_state([vote("user:a")], required=2, groups=(), current_fingerprint=FP)
    assert (one.approvals, one.satisfied, one.describe()) == (1, False, "1 of 2 approvals")


def test_an_approval_of_something_else_does_not_count() -> None:
    state = rules.approval_state(
        [vote("user:a", fp="0" * 64), vote("user:b")], required=2, groups=(), current_fingerprint=FP
    )
    assert (state.approvals, state.satisfied) == (1, False)


def test_any_denial_ends_it() -> None:
    state = rules.approval_state(
        [vote("user:a"), vote("user:b", "deny")], required=1, groups=(), current_fingerprint=FP
    )
    assert state.denied and not state.satisfied


def test_groups_must_each_be_represented() -> None:
    groups = ("security", "data")
    only_security = rules.approval_state(
        [vote("user:a", groups=("security",)), vote("user:b", groups=("security",))],
        required=2,
        groups=groups,
        current_fingerprint=FP,
    )
    assert only_security.missing_groups == ("data",) and not only_security.satisfied
    assert "still needs someone from data" in only_security.describe()
    outsider = rules.approval_state(
        [vote("user:c", groups=("sales",))],
        required=1,
        groups=("security",),
        current_fingerprint=FP,
    )
    assert outsider.approvals == 0
    both = rules.approval_state(
        [vote("user:a", groups=("security",)), vote("user:b", groups=("data",))],
        required=2,
        groups=groups,
        current_fingerprint=FP,
    )
    assert both.satisfied
    # The host's administrator (the local CLI) stands in for any group: break-glass.
    assert rules.approval_state(
        [vote("local:cli")], required=1, groups=("security",), current_fingerprint=FP
    ).satisfied


def test_who_may_decide() -> None:
    kwargs = {
        "actor": "user:ann",
        "user_name": "ann",
        "role": "approver",
        "user_groups": (),
        "requested_by": "agent:bot",
        "agent_owner": None,
        "agent": "bot",
        "groups": (),
    }
    assert rules.may_decide(**kwargs) is None
    assert (
        rules.may_decide(**{**kwargs, "actor": "agent:bot"})
        == "agents cannot approve or deny grants"
    )
    assert (
        rules.may_decide(**{**kwargs, "role": "auditor"})
        == "role 'auditor' cannot approve or deny grants"
    )
    assert rules.may_decide(**{**kwargs, "requested_by": "user:ann"}) == (
        "'ann' made this request and cannot decide it"
    )
    assert rules.may_decide(**{**kwargs, "agent_owner": "ann"}) == (
        "'ann' owns agent 'bot' and cannot decide its grants"
    )
    assert "needs an approver from group security" in rules.may_decide(
        **{**kwargs, "groups": ("security",)}
    )
    assert (
        rules.may_decide(**{**kwargs, "groups": ("security",), "user_groups": ("security",)})
        is None
    )
