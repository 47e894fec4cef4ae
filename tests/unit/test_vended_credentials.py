"""What an answer hands out through jitgate (STS credentials, presigned links to Lambda code)
may not outlive the grant that allowed the call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jitgate.awsapi.types import Operation
from jitgate.gateway.app import outliving_grant

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ROLE = {"RoleArn": "arn:aws:iam::123456789012:role/r", "RoleSessionName": "s"}


def assume(**params: object) -> Operation:
    return Operation("sts", "AssumeRole", {**ROLE, **params})


def test_credentials_within_the_grant_are_fine() -> None:
    expires = NOW + timedelta(minutes=20)
    assert outliving_grant(assume(DurationSeconds=900), expires, NOW) is None
    assert outliving_grant(assume(DurationSeconds=1200), expires, NOW) is None


def test_credentials_beyond_the_grant_are_refused() -> None:
    expires = NOW + timedelta(minutes=20)
    why = outliving_grant(assume(DurationSeconds=1201), expires, NOW)
    assert why == (
        "sts:AssumeRole would return credentials valid for 1201 seconds, longer than the 1200 "
        "seconds left on the grant"
    )
    # Without DurationSeconds AWS gives an hour.
    assert "3600 seconds" in (outliving_grant(assume(), expires, NOW) or "")
    assert outliving_grant(assume(), NOW + timedelta(hours=2), NOW) is None


def test_a_duration_that_is_not_a_number_is_refused() -> None:
    expires = NOW + timedelta(hours=2)
    assert outliving_grant(assume(DurationSeconds="900"), expires, NOW) is not None


def test_other_operations_vend_nothing() -> None:
    read = Operation("s3", "GetObject", {"Bucket": "b", "Key": "k"})
    assert outliving_grant(read, NOW, NOW) is None


def lambda_call(name: str, **params: object) -> Operation:
    return Operation("lambda", name, params)


def test_a_presigned_code_link_needs_ten_minutes_left_on_the_grant() -> None:
    # GetFunction and the layer calls answer with a presigned S3 link valid for 10 minutes,
    # which keeps working after the grant ends.
    for name, params in (
        ("GetFunction", {"FunctionName": "f"}),
        ("GetLayerVersion", {"LayerName": "l", "VersionNumber": 1}),
        ("GetLayerVersionByArn", {"Arn": "arn:aws:lambda:us-east-1:123456789012:layer:l:1"}),
        ("PublishLayerVersion", {"LayerName": "l", "Content": {}}),
    ):
        operation = lambda_call(name, **params)
        assert outliving_grant(operation, NOW + timedelta(seconds=600), NOW) is None
        why = outliving_grant(operation, NOW + timedelta(seconds=599), NOW)
        assert why == (
            f"lambda:{name} answers with a presigned link valid for 600 seconds, longer than "
            "the 599 seconds left on the grant"
        )
    # The configuration alone carries no link.
    config = lambda_call("GetFunctionConfiguration", FunctionName="f")
    assert outliving_grant(config, NOW + timedelta(seconds=1), NOW) is None
