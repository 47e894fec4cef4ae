"""`jitgate policy lint`: each of the three failure shapes is found, with policy id and line."""

from __future__ import annotations

from jitgate.policy.engine import DEFAULT_POLICY_PATH
from jitgate.policy.lint import lint
from jitgate.policy.source import load_policies


def findings_for(text: str) -> list[tuple[str, str, int]]:
    return [(f.kind, f.policy_id, f.line) for f in lint(load_policies(text, "p.cedar"))]


def test_the_default_policy_is_clean() -> None:
    assert lint(load_policies(DEFAULT_POLICY_PATH.read_text(), "default.cedar")) == []


def test_a_write_permit_without_its_own_cap_is_scope_without_time() -> None:
    text = '@id("writes")\n@approval("required")\npermit (principal, action, resource)\nwhen { context.access_level == "Write" };\n'
    assert findings_for(text) == [("scope-without-time", "writes", 1)]


def test_a_write_permit_above_an_hour_is_scope_without_time() -> None:
    text = (
        '@id("reads")\n@approval("auto")\n@max_duration("15m")\npermit (principal, action, resource)\n'
        'when { context.access_level == "Read" };\n\n'
        '@id("long-admin")\n@approval("required")\n@max_duration("4h")\npermit (principal, action, resource)\n'
        "when { context.privilege_escalation };\n"
    )
    assert findings_for(text) == [("scope-without-time", "long-admin", 7)]


def test_a_capped_write_permit_of_an_hour_is_fine() -> None:
    text = (
        '@id("writes")\n@approval("required")\n@max_duration("1h")\npermit (principal, action, resource)\n'
        'when { context.access_level == "Write" };\n'
    )
    assert findings_for(text) == []


def test_an_unrestricted_prefix_permit_is_time_without_scope() -> None:
    text = (
        '@id("prefix-reads")\n@approval("auto")\n@allow_prefix("true")\n@max_duration("10m")\n'
        'permit (principal, action, resource) when { context.access_level == "Read" };\n'
    )
    assert findings_for(text) == [("time-without-scope", "prefix-reads", 1)]


def test_a_prefix_permit_restricted_to_one_bucket_is_fine() -> None:
    text = (
        '@id("report-prefix")\n@approval("auto")\n@allow_prefix("true")\n@max_duration("10m")\n'
        "permit (principal, action, resource)\n"
        'when { context.access_level == "Read" && resource.arn like "arn:aws:s3:::reports/2026/*" };\n'
    )
    assert findings_for(text) == []


def test_routing_low_risk_reads_to_a_human_is_approval_on_everything() -> None:
    text = '@id("humans-for-all")\n@approval("required")\n@max_duration("15m")\npermit (principal, action, resource);\n'
    assert findings_for(text) == [("approval-on-everything", "humans-for-all", 1)]
