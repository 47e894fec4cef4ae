"""Scope validation against the IAM catalog: every refusal names the offending item and why."""

from __future__ import annotations

import pytest

from jitgate.errors import ScopeError
from jitgate.scope import MAX_ACTIONS, build_scope

BUCKET = "arn:aws:s3:::reports"
OBJECT = "arn:aws:s3:::reports/2026/q3.csv"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:jobs"


def refusal(actions: list[str], resources: list[str], **kwargs: object) -> str:
    with pytest.raises(ScopeError) as info:
        build_scope(actions, resources, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == 400
    assert info.value.code == "invalid_scope"
    return info.value.message


@pytest.mark.parametrize("action", ["*", "s3:*", "s3:Get*", "s3:GetObjec?", "*:GetObject"])
def test_wildcard_actions_are_refused(action: str) -> None:
    message = refusal([action], [OBJECT])
    assert message == (
        f"action {action!r} is a wildcard; jitgate grants exact actions only, name each one"
    )


def test_a_wildcard_action_is_refused_even_beside_valid_ones() -> None:
    message = refusal(["s3:GetObject", "s3:*"], [OBJECT])
    assert message.startswith("action 's3:*' is a wildcard")


def test_unknown_action_of_a_known_service() -> None:
    assert (
        refusal(["s3:GetObjects"], [OBJECT])
        == "action 's3:GetObjects' is not an IAM action of service 's3'"
    )


def test_unknown_service() -> None:
    assert (
        refusal(["nosuchsvc:GetThing"], [OBJECT])
        == "action 'nosuchsvc:GetThing': unknown service prefix 'nosuchsvc'"
    )


def test_action_without_service_prefix() -> None:
    assert (
        refusal(["GetObject"], [OBJECT]) == "action 'GetObject' is not of the form service:Action"
    )


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ("not-an-arn", "is not an ARN (expected arn:partition:service:region:account:resource)"),
        (
            "arn:aws:s3::reports",
            "is not an ARN (expected arn:partition:service:region:account:resource)",
        ),
        ("arn:nope:s3:::reports/k", "has unknown partition 'nope'"),
        ("arn:aws:S3:::reports/k", "has invalid service 'S3'"),
        ("arn:aws:sqs:useast1:123456789012:jobs", "has invalid region 'useast1'"),
        ("arn:aws:sqs:us-east-1:1234:jobs", "has invalid account '1234' (expected 12 digits)"),
        ("arn:aws:s3:::", "has an empty resource part"),
        ("arn:aws:s3:::reports/\x00k", "contains control characters"),
    ],
)
def test_malformed_arns_are_refused(resource: str, reason: str) -> None:
    assert refusal(["s3:GetObject"], [resource]) == f"resource {resource!r} {reason}"


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        ("arn:aws:sqs:us-east-1:*:jobs", "account"),
        ("arn:aws:sqs:us-east-1:12345678901*:jobs", "account"),
        ("arn:aws:sqs:us-*:123456789012:jobs", "region"),
        ("arn:aws:sq*:us-east-1:123456789012:jobs", "service"),
    ],
)
def test_wildcards_in_service_region_or_account_are_refused(resource: str, field: str) -> None:
    assert refusal(["sqs:ReceiveMessage"], [resource]) == (
        f"resource {resource!r} has a wildcard in its {field}"
    )


@pytest.mark.parametrize(
    "resource",
    ["arn:aws:s3:::reports/*/q3.csv", "arn:aws:s3:::rep*rts/q3.csv", "arn:aws:s3:::reports/q?.csv"],
)
def test_a_wildcard_in_the_middle_of_an_arn_is_refused(resource: str) -> None:
    assert refusal(["s3:GetObject"], [resource]) == (
        f"resource {resource!r}: wildcards are allowed only as one trailing '*' "
        "(a prefix grant, which the policy must allow)"
    )


def test_object_action_on_a_bucket_arn_is_refused_naming_what_it_takes() -> None:
    message = refusal(["s3:GetObject"], [BUCKET])
    assert message.startswith(
        "action 's3:GetObject' fits none of the requested resources; it takes "
    )
    assert "object arn:${Partition}:s3:::${BucketName}/${ObjectName}" in message


def test_star_is_refused_for_an_action_that_has_resource_types() -> None:
    message = refusal(["s3:GetObject"], ["*"])
    assert message.startswith("action 's3:GetObject' fits none of the requested resources")


def test_star_is_accepted_for_an_action_without_resource_types() -> None:
    scope = build_scope(["sts:GetCallerIdentity"], ["*"])
    assert [(p.action, p.resource, p.resource_type) for p in scope.pairs] == [
        ("sts:GetCallerIdentity", "*", "*")
    ]


def test_an_arn_is_refused_for_an_action_without_resource_types() -> None:
    message = refusal(["sts:GetCallerIdentity"], [OBJECT])
    assert message == (
        "action 'sts:GetCallerIdentity' fits none of the requested resources; "
        'it takes "*" (it has no resource types)'
    )


def test_an_action_fitting_no_requested_resource_is_refused() -> None:
    message = refusal(["s3:GetObject", "s3:ListBucket"], [OBJECT])
    assert message.startswith("action 's3:ListBucket' fits none of the requested resources")
    assert "bucket arn:${Partition}:s3:::${BucketName}" in message


def test_a_resource_fitting_no_requested_action_is_refused() -> None:
    assert refusal(["s3:GetObject"], [OBJECT, QUEUE]) == (
        f"resource {QUEUE!r} fits none of the requested actions (s3:GetObject)"
    )


def test_bucket_and_object_with_list_and_get_make_exactly_two_pairs() -> None:
    scope = build_scope(["s3:ListBucket", "s3:GetObject"], [BUCKET, OBJECT])
    assert scope.actions == ("s3:ListBucket", "s3:GetObject")
    assert scope.resources == (BUCKET, OBJECT)
    assert [(p.action, p.resource, p.resource_type, p.access_level) for p in scope.pairs] == [
        ("s3:ListBucket", BUCKET, "bucket", "List"),
        ("s3:GetObject", OBJECT, "object", "Read"),
    ]
    assert scope.allows("s3:GetObject", OBJECT)
    assert not scope.allows("s3:GetObject", BUCKET)
    assert not scope.allows("s3:ListBucket", OBJECT)


def test_action_names_are_case_insensitive_and_canonicalised() -> None:
    scope = build_scope(["S3:getobject", "s3:LISTBUCKET", "s3:GetObject"], [OBJECT, BUCKET])
    assert scope.actions == ("s3:GetObject", "s3:ListBucket")
    assert {p.action for p in scope.pairs} == {"s3:GetObject", "s3:ListBucket"}
    assert len(scope.pairs) == 2


def test_duplicate_resources_are_collapsed() -> None:
    scope = build_scope(["s3:GetObject"], [OBJECT, OBJECT])
    assert scope.resources == (OBJECT,)
    assert len(scope.pairs) == 1


def test_prefix_grant_is_a_valid_scope_marked_as_prefix() -> None:
    scope = build_scope(["s3:GetObject"], ["arn:aws:s3:::reports/2026/*"])
    (pair,) = scope.pairs
    assert pair.prefix is True
    assert pair.resource_type == "object"
    assert scope.allows("s3:GetObject", "arn:aws:s3:::reports/2026/q4.csv")
    assert not scope.allows("s3:GetObject", "arn:aws:s3:::reports/2025/q4.csv")


def test_a_prefix_must_still_fit_the_action() -> None:
    # A bucket-name prefix ("rep*") is not an object prefix.
    message = refusal(["s3:GetObject"], ["arn:aws:s3:::rep*"])
    assert message.startswith("action 's3:GetObject' fits none of the requested resources")


def test_risk_flags_and_access_levels_on_pairs() -> None:
    (secret,) = build_scope(
        ["secretsmanager:GetSecretValue"],
        ["arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db"],
    ).pairs
    assert (secret.sensitive, secret.privilege_escalation, secret.access_level) == (
        True,
        False,
        "Read",
    )
    (pass_role,) = build_scope(["iam:PassRole"], ["arn:aws:iam::123456789012:role/deploy"]).pairs
    # PassRole is "Write" in IAM, but it is treated as permissions management.
    assert (pass_role.privilege_escalation, pass_role.access_level) == (
        True,
        "Permissions management",
    )


def test_configured_sensitive_arns_mark_pairs_sensitive() -> None:
    scope = build_scope(
        ["s3:GetObject"],
        ["arn:aws:s3:::payroll/2026.csv", OBJECT],
        sensitive_arns=["arn:aws:s3:::payroll/*"],
    )
    assert {p.resource: p.sensitive for p in scope.pairs} == {
        "arn:aws:s3:::payroll/2026.csv": True,
        OBJECT: False,
    }


@pytest.mark.parametrize(
    ("actions", "resources", "message"),
    [
        ([], [OBJECT], "actions must be a non-empty list of strings"),
        ("s3:GetObject", [OBJECT], "actions must be a non-empty list of strings"),
        (["s3:GetObject"], [], "resources must be a non-empty list of strings"),
        (["s3:GetObject"], None, "resources must be a non-empty list of strings"),
        ([7], [OBJECT], "actions must be non-empty strings, got 7"),
        (["s3:GetObject"], [""], "resources must be non-empty strings, got ''"),
        ([" s3:GetObject"], [OBJECT], "action ' s3:GetObject' has leading or trailing whitespace"),
        (
            ["s3:GetObject"] * (MAX_ACTIONS + 1),
            [OBJECT],
            f"too many actions: {MAX_ACTIONS + 1} (at most {MAX_ACTIONS})",
        ),
    ],
)
def test_shape_of_the_lists(actions: object, resources: object, message: str) -> None:
    assert refusal(actions, resources) == message  # type: ignore[arg-type]


def test_over_long_arn_is_refused() -> None:
    resource = "arn:aws:s3:::reports/" + "k" * 3000
    message = refusal(["s3:GetObject"], [resource])
    assert message.startswith(f"resource {resource[:60]!r}... is longer than 2048 characters")
