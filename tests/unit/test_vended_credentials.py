"""Credentials STS hands out through jitgate may not outlive the grant that allowed the call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jitgate.awsapi.types import Operation
from jitgate.gateway.app import credentials_outliving

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ROLE = {"RoleArn": "arn:aws:iam::123456789012:role/r", "RoleSessionName": "s"}


def assume(**params: object) -> Operation:
    return Operation("sts", "AssumeRole", {**ROLE, **params})


def test_credentials_within_the_grant_are_fine() -> None:
    expires = NOW + timedelta(minutes=20)
    assert credentials_outliving(assume(DurationSeconds=900), expires, NOW) is None
    assert credentials_outliving(assume(DurationSeconds=1200), expires, NOW) is None


def test_credentials_beyond_the_grant_are_refused() -> None:
    expires = NOW + timedelta(minutes=20)
    why = credentials_outliving(assume(DurationSeconds=1201), expires, NOW)
    assert why == (
        "sts:AssumeRole would return credentials valid for 1201 seconds, longer than the 1200 "
        "seconds left on the grant"
    )
    # Without DurationSeconds AWS gives an hour.
    assert "3600 seconds" in (credentials_outliving(assume(), expires, NOW) or "")
    assert credentials_outliving(assume(), NOW + timedelta(hours=2), NOW) is None


def test_a_duration_that_is_not_a_number_is_refused() -> None:
    expires = NOW + timedelta(hours=2)
    assert credentials_outliving(assume(DurationSeconds="900"), expires, NOW) is not None


def test_other_operations_vend_nothing() -> None:
    read = Operation("s3", "GetObject", {"Bucket": "b", "Key": "k"})
    assert credentials_outliving(read, NOW, NOW) is None
