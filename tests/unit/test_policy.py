"""Cedar policy: routes of the default policy, combination rules, and load-time errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jitgate.errors import PolicyError
from jitgate.policy.durations import format_duration, parse_duration
from jitgate.policy.engine import AUTO, DEFAULT_POLICY_PATH, DENIED, REQUIRED, PolicyEngine
from jitgate.policy.source import load_policies, split_statements
from jitgate.scope import build_scope

OBJECT = "arn:aws:s3:::reports/2026/q3.csv"
BUCKET = "arn:aws:s3:::reports"
ROLE = "arn:aws:iam::123456789012:role/deploy"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db"
PARAMETER = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

LOW_RISK = "auto-approve-low-risk-reads"
SENSITIVE = "sensitive-reads-need-approval"
WRITES = "writes-need-approval"
PERMISSIONS = "permission-changes-need-approval"


@pytest.fixture(scope="module")
def default() -> PolicyEngine:
    return PolicyEngine.from_file(DEFAULT_POLICY_PATH)


def decide(
    engine: PolicyEngine,
    actions: list[str],
    resources: list[str],
    duration: int = 300,
    *,
    agent: str = "agent-1",
    groups: tuple[str, ...] = (),
    sensitive_arns: tuple[str, ...] = (),
):
    scope = build_scope(actions, resources, sensitive_arns)
    return engine.decide(agent, groups, scope, duration, "a task")


# --- the default policy --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("s3:GetObject", OBJECT),
        ("s3:ListBucket", BUCKET),
        ("dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:123456789012:table/orders"),
        ("sts:GetCallerIdentity", "*"),
    ],
)
def test_low_risk_reads_are_auto_approved(
    default: PolicyEngine, action: str, resource: str
) -> None:
    decision = decide(default, [action], [resource])
    assert decision.route == AUTO
    assert decision.policies == (LOW_RISK,)
    assert decision.max_duration_seconds == 900
    assert decision.approvals_required == 0
    assert decision.reasons == (f"{action} on {resource}: auto by {LOW_RISK} (max 15m)",)


@pytest.mark.parametrize(
    ("action", "resource", "policy"),
    [
        ("secretsmanager:GetSecretValue", SECRET, SENSITIVE),
        ("ssm:GetParameter", PARAMETER, SENSITIVE),
        ("ssm:GetParameters", PARAMETER, SENSITIVE),
        ("kms:Decrypt", KEY, WRITES),  # IAM files Decrypt under Write
        ("sts:AssumeRole", ROLE, PERMISSIONS),  # sensitive and an escalation path
    ],
)
def test_sensitive_reads_need_approval(
    default: PolicyEngine, action: str, resource: str, policy: str
) -> None:
    decision = decide(default, [action], [resource])
    assert decision.route == REQUIRED
    assert decision.policies == (policy,)
    assert decision.approvals_required == 1


def test_configured_sensitive_arn_needs_approval(default: PolicyEngine) -> None:
    payroll = "arn:aws:s3:::payroll/2026.csv"
    assert decide(default, ["s3:GetObject"], [payroll]).route == AUTO
    decision = decide(
        default, ["s3:GetObject"], [payroll], sensitive_arns=("arn:aws:s3:::payroll/*",)
    )
    assert decision.route == REQUIRED
    assert decision.policies == (SENSITIVE,)


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("s3:PutObject", OBJECT),
        ("s3:DeleteObject", OBJECT),
        ("s3:PutObjectTagging", OBJECT),
        ("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:jobs"),
    ],
)
def test_writes_and_tagging_need_approval(
    default: PolicyEngine, action: str, resource: str
) -> None:
    decision = decide(default, [action], [resource])
    assert decision.route == REQUIRED
    assert decision.policies == (WRITES,)
    assert decision.max_duration_seconds == 3600


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("iam:PassRole", ROLE),
        ("iam:CreatePolicyVersion", "arn:aws:iam::123456789012:policy/ops"),
        ("iam:AttachRolePolicy", ROLE),
        ("iam:PutRolePolicy", ROLE),
        ("iam:CreateAccessKey", "arn:aws:iam::123456789012:user/bob"),
        ("lambda:UpdateFunctionCode", "arn:aws:lambda:us-east-1:123456789012:function:etl"),
    ],
)
def test_privilege_escalation_needs_approval_capped_at_15_minutes(
    default: PolicyEngine, action: str, resource: str
) -> None:
    decision = decide(default, [action], [resource], duration=900)
    assert decision.route == REQUIRED
    assert decision.policies == (PERMISSIONS,)
    assert decision.max_duration_seconds == 900

    too_long = decide(default, [action], [resource], duration=901)
    assert too_long.route == DENIED
    assert too_long.reasons == (
        f"duration 901s is above the maximum of 900s (15m) allowed by {PERMISSIONS} "
        f"for {action} on {resource}",
    )


def test_over_long_duration_names_the_maximum(default: PolicyEngine) -> None:
    assert decide(default, ["s3:GetObject"], [OBJECT], duration=900).route == AUTO
    decision = decide(default, ["s3:GetObject"], [OBJECT], duration=3600)
    assert decision.route == DENIED
    assert decision.max_duration_seconds == 900
    assert decision.reasons == (
        f"duration 3600s is above the maximum of 900s (15m) allowed by {LOW_RISK} "
        f"for s3:GetObject on {OBJECT}",
    )


def test_strictest_route_over_pairs_decides(default: PolicyEngine) -> None:
    decision = decide(default, ["s3:ListBucket", "s3:PutObject"], [BUCKET, OBJECT])
    assert decision.route == REQUIRED
    assert decision.policies == (LOW_RISK, WRITES)
    assert [p.route for p in decision.pairs] == [AUTO, REQUIRED]
    # The cap is the smallest over the pairs: 15m from the read, not 1h from the write.
    assert decision.max_duration_seconds == 900


def test_prefix_grant_needs_allow_prefix(default: PolicyEngine) -> None:
    decision = decide(default, ["s3:GetObject"], ["arn:aws:s3:::reports/2026/*"])
    assert decision.route == DENIED
    assert decision.reasons == (
        "s3:GetObject on arn:aws:s3:::reports/2026/*: a prefix grant needs a permit with "
        f'@allow_prefix("true"); {LOW_RISK} does not allow one',
    )


# --- combination rules, on policies written for the test ------------------------------------

ALLOW_ALL = """
@id("allow-all")
@approval("auto")
permit (principal, action, resource);
"""


def test_forbid_wins() -> None:
    engine = PolicyEngine.from_text(
        ALLOW_ALL
        + f"""
@id("no-reports")
forbid (principal, action, resource) when {{ resource.arn == "{OBJECT}" }};
"""
    )
    decision = decide(engine, ["s3:GetObject"], [OBJECT])
    assert decision.route == DENIED
    assert decision.policies == ("no-reports",)
    assert decision.reasons == (f"s3:GetObject on {OBJECT}: forbidden by no-reports",)
    assert decide(engine, ["s3:ListBucket"], [BUCKET]).route == AUTO


def test_no_permit_means_denied() -> None:
    engine = PolicyEngine.from_text(
        """
@id("list-only")
@approval("auto")
permit (principal, action == Action::"s3:ListBucket", resource);
"""
    )
    decision = decide(engine, ["s3:GetObject"], [OBJECT])
    assert decision.route == DENIED
    assert decision.policies == ()
    assert decision.reasons == (f"s3:GetObject on {OBJECT}: no policy permits it",)
    # One denied pair denies the whole request.
    both = decide(engine, ["s3:ListBucket", "s3:GetObject"], [BUCKET, OBJECT])
    assert both.route == DENIED
    assert both.reasons == (f"s3:GetObject on {OBJECT}: no policy permits it",)


def test_groups_are_cedar_parents() -> None:
    engine = PolicyEngine.from_text(
        """
@id("etl-reads")
@approval("auto")
permit (principal in Group::"etl", action, resource);
"""
    )
    assert decide(engine, ["s3:GetObject"], [OBJECT], groups=("etl",)).route == AUTO
    assert decide(engine, ["s3:GetObject"], [OBJECT], groups=("web",)).route == DENIED


def test_strictest_annotation_among_satisfied_permits() -> None:
    engine = PolicyEngine.from_text(
        ALLOW_ALL
        + """
@id("reports-need-two")
@approval("required")
@approvers("2")
@max_duration("10m")
@approver_group("finance")
permit (principal, action, resource) when { resource.service == "s3" };
"""
    )
    decision = decide(engine, ["s3:GetObject"], [OBJECT], duration=600)
    assert decision.route == REQUIRED
    assert decision.policies == ("allow-all", "reports-need-two")
    assert decision.approvals_required == 2
    assert decision.approver_groups == ("finance",)
    assert decision.max_duration_seconds == 600
    assert decide(engine, ["s3:GetObject"], [OBJECT], duration=601).route == DENIED


def test_allow_prefix_permits_a_prefix_grant() -> None:
    engine = PolicyEngine.from_text(
        """
@id("report-prefixes")
@approval("auto")
@allow_prefix("true")
permit (principal, action, resource) when { resource.arn like "arn:aws:s3:::reports/*" };
"""
    )
    decision = decide(engine, ["s3:GetObject"], ["arn:aws:s3:::reports/2026/*"])
    assert decision.route == AUTO
    assert decision.policies == ("report-prefixes",)


def test_context_carries_duration_and_reason() -> None:
    engine = PolicyEngine.from_text(
        """
@id("short-only")
@approval("auto")
permit (principal, action, resource) when { context.duration_seconds <= 60 };
"""
    )
    assert decide(engine, ["s3:GetObject"], [OBJECT], duration=60).route == AUTO
    assert decide(engine, ["s3:GetObject"], [OBJECT], duration=61).route == DENIED


# --- load-time errors name file, line and reason --------------------------------------------


def load_error(text: str, path: str = "team.cedar") -> str:
    with pytest.raises(PolicyError) as info:
        load_policies(text, path)
    return info.value.message


GOOD = """// a comment; with a semicolon
@id("reads")
@approval("auto")
permit (principal, action, resource);
"""  # lines 1-4


def test_parse_error_names_file_and_line() -> None:
    message = load_error(
        GOOD + '\n@id("broken")\n@approval("auto")\npermit (principal, action resource);\n'
    )
    assert message.startswith("team.cedar:6: does not parse:")


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        (
            '@approval("auto")\npermit (principal, action, resource) when { context.colour == "red" };',
            "unknown attribute context.colour (known: access_level, duration_seconds, "
            "prefix, privilege_escalation, reason, sensitive)",
        ),
        (
            '@approval("auto")\npermit (principal, action, resource) when { resource.bucket == "x" };',
            "unknown attribute resource.bucket (known: account, arn, region, service, type)",
        ),
        (
            '@approval("auto")\npermit (principal, action == Action::"s3:GetObjects", resource);',
            'Action::"s3:GetObjects" is not an IAM action',
        ),
        (
            '@approval("auto")\npermit (principal, action in [Action::"s3:GetObject", '
            'Action::"s3:Nope"], resource);',
            'Action::"s3:Nope" is not an IAM action',
        ),
        (
            '@approval("auto")\n@colour("red")\npermit (principal, action, resource);',
            "unknown annotation @colour (known: allow_prefix, approval, approver_group, "
            "approvers, description, id, max_duration)",
        ),
        (
            "permit (principal, action, resource);",
            'a permit needs @approval("auto") or @approval("required")',
        ),
        (
            '@approval("sometimes")\npermit (principal, action, resource);',
            'a permit needs @approval("auto") or @approval("required")',
        ),
        (
            '@approval("auto")\nforbid (principal, action, resource);',
            "@approval has no meaning on a forbid",
        ),
        (
            '@approval("auto")\n@max_duration("13h")\npermit (principal, action, resource);',
            "@max_duration may not exceed 12h",
        ),
        (
            '@approval("auto")\n@max_duration("soon")\npermit (principal, action, resource);',
            "@max_duration: 'soon' is not a duration like '90s', '15m' or '1h30m'",
        ),
        (
            '@approval("required")\n@approvers("0")\npermit (principal, action, resource);',
            "@approvers must be a number from 1 to 10, got '0'",
        ),
        (
            '@approval("auto")\n@allow_prefix("yes")\npermit (principal, action, resource);',
            '@allow_prefix must be "true" or "false"',
        ),
        (
            '@id("reads")\n@approval("auto")\npermit (principal, action, resource);',
            "@id('reads') is already used on line 2",
        ),
    ],
)
def test_validation_errors_name_file_line_and_reason(statement: str, reason: str) -> None:
    assert load_error(GOOD + "\n" + statement + "\n") == f"team.cedar:6: {reason}"


def test_a_policy_without_permits_is_refused() -> None:
    assert load_error("forbid (principal, action, resource);\n") == (
        "team.cedar: has no permit, so every request would be denied"
    )


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.cedar: cannot read"):
        PolicyEngine.from_file(tmp_path / "nope.cedar")


def test_statement_lines_ignore_semicolons_in_strings_and_comments() -> None:
    text = '// one; two\npermit (principal, action, resource)\n  when { context.reason == "a;b" };\n\n@id("x")\nforbid (principal, action, resource);'
    assert [line for line, _ in split_statements(text)] == [2, 5]


def test_default_policy_loads_with_its_ids() -> None:
    loaded = load_policies(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"), "default.cedar")
    assert [m.id for m in loaded.by_cedar_id.values()] == [LOW_RISK, SENSITIVE, WRITES, PERMISSIONS]


# --- reloading -------------------------------------------------------------------------------


def _write(path: Path, text: str, mtime: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_reloading_a_broken_file_keeps_the_last_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.cedar"
    _write(path, ALLOW_ALL, 1_000_000)
    engine = PolicyEngine.from_file(path)
    assert engine.reload_if_changed() is False  # unchanged

    _write(path, ALLOW_ALL + "\npermit (principal, action resource);\n", 1_000_010)
    assert engine.reload_if_changed() is False
    assert engine.last_error is not None
    assert engine.last_error.startswith(f"{path}:6: does not parse:")
    assert decide(engine, ["s3:PutObject"], [OBJECT]).route == AUTO  # still allow-all

    _write(path, DEFAULT_POLICY_PATH.read_text(encoding="utf-8"), 1_000_020)
    assert engine.reload_if_changed() is True
    assert engine.last_error is None
    assert decide(engine, ["s3:PutObject"], [OBJECT]).route == REQUIRED


def test_a_new_policy_with_the_old_timestamp_is_still_seen(tmp_path: Path) -> None:
    """`cp -p`, `rsync -t`, a config tool or a write within the filesystem's timestamp
    resolution can leave a changed file with the same mtime: the change must still count."""
    path = tmp_path / "policy.cedar"
    _write(path, DEFAULT_POLICY_PATH.read_text(encoding="utf-8"), 1_000_000)
    engine = PolicyEngine.from_file(path)
    assert decide(engine, ["s3:PutObject"], [OBJECT]).route == REQUIRED

    replacement = tmp_path / "new.cedar"
    _write(replacement, ALLOW_ALL, 1_000_000)  # same timestamp as the file it replaces
    replacement.replace(path)
    assert engine.reload_if_changed() is True
    assert decide(engine, ["s3:PutObject"], [OBJECT]).route == AUTO

    _write(path, DEFAULT_POLICY_PATH.read_text(encoding="utf-8"), 1_000_000)  # in place
    assert engine.reload_if_changed() is True
    assert decide(engine, ["s3:PutObject"], [OBJECT]).route == REQUIRED
    assert engine.reload_if_changed() is False  # and nothing changed since


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert format_duration(5400) == "1h30m"
    for bad in ("", "15", "15 m", "-5m", "0s", "1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_an_engine_built_from_text_never_reloads_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # from_text names its source "policy.cedar"; a file of that name in the working directory
    # must not replace it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.cedar").write_text(ALLOW_ALL, encoding="utf-8")
    engine = PolicyEngine.from_text(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    assert engine.reload_if_changed() is False
    assert decide(engine, ["s3:PutObject"], [OBJECT]).route == REQUIRED
