"""ARN parsing and the one coverage rule: exact, prefix, and Secrets Manager's random suffix."""

from __future__ import annotations

import pytest

from jitgate.iam.arn import ArnError, covers, matches_glob, parse_arn, prefix_of

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db"


def test_parse_arn_fields() -> None:
    arn = parse_arn("arn:aws:sqs:us-east-1:123456789012:jobs")
    assert (arn.partition, arn.service, arn.region, arn.account, arn.resource) == (
        "aws",
        "sqs",
        "us-east-1",
        "123456789012",
        "jobs",
    )
    assert str(arn) == "arn:aws:sqs:us-east-1:123456789012:jobs"
    # The resource part keeps its colons.
    assert parse_arn("arn:aws:lambda:us-east-1:123456789012:function:f:1").resource == (
        "function:f:1"
    )


def test_parse_arn_refuses_non_arns() -> None:
    with pytest.raises(ArnError, match="is not an ARN"):
        parse_arn("s3://reports/q3.csv")


def test_exact_match() -> None:
    assert covers("arn:aws:s3:::reports/q3.csv", "arn:aws:s3:::reports/q3.csv")
    assert not covers("arn:aws:s3:::reports/q3.csv", "arn:aws:s3:::reports/q3.csv.bak")
    assert not covers("arn:aws:s3:::reports/q3.csv", "arn:aws:s3:::reports/Q3.csv")


def test_star_covers_only_star() -> None:
    assert covers("*", "*")
    assert not covers("*", "arn:aws:s3:::reports/q3.csv")


def test_prefix_grant_covers_everything_under_its_prefix() -> None:
    granted = "arn:aws:s3:::reports/2026/*"
    assert prefix_of(granted) == "arn:aws:s3:::reports/2026/"
    assert covers(granted, "arn:aws:s3:::reports/2026/q3.csv")
    assert covers(granted, "arn:aws:s3:::reports/2026/deep/er/key")
    assert not covers(granted, "arn:aws:s3:::reports/2025/q3.csv")
    assert not covers(granted, "arn:aws:s3:::reports/2026")
    assert not covers(granted, "arn:aws:s3:::other/reports/2026/q3.csv")


def test_prefix_of_refuses_inner_wildcards() -> None:
    assert prefix_of("arn:aws:s3:::reports/*/q3.csv") is None
    assert prefix_of("arn:aws:s3:::reports/q?/*") is None
    assert prefix_of("arn:aws:s3:::reports/q3.csv") is None


def test_a_wildcard_in_the_requested_arn_is_not_a_pattern() -> None:
    assert not covers("arn:aws:s3:::reports/q3.csv", "arn:aws:s3:::reports/*")


@pytest.mark.parametrize("granted", [SECRET, SECRET + "-??????"])
def test_a_secret_granted_by_name_covers_calls_by_that_name(granted: str) -> None:
    assert covers(granted, SECRET, match="secret-name")


@pytest.mark.parametrize(
    "requested",
    [
        SECRET + "-AbC123",  # its full ARN, or the partial ARN of a secret named "prod/db-AbC123"
        SECRET + "-backup",  # AWS reads this as the secret NAMED "prod/db-backup"
        SECRET + "-AbC12",
        SECRET + "/child-AbC123",
        SECRET + "-extra-AbC123",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/dbx-AbC123",
        "arn:aws:secretsmanager:us-east-1:210987654321:secret:prod/db-AbC123",
    ],
)
def test_a_name_grant_never_guesses_a_suffix_on_an_arn_form_call(requested: str) -> None:
    assert not covers(SECRET, requested)


def test_an_arn_form_call_needs_a_grant_of_that_exact_arn() -> None:
    granted = SECRET + "-AbC123"
    assert covers(granted, SECRET + "-AbC123")
    assert not covers(granted, SECRET + "-XyZ789")
    # A call by name does not say which suffix it resolves to, so it is not covered.
    assert not covers(granted, SECRET, match="secret-name")


def test_by_name_mode_needs_the_name_exactly() -> None:
    assert not covers(SECRET, SECRET + "-AbC123", match="secret-name")
    assert not covers(SECRET, SECRET + "x", match="secret-name")


def test_matches_glob_over_whole_arns() -> None:
    assert matches_glob("arn:aws:s3:::payroll/*", "arn:aws:s3:::payroll/2026/x.csv")
    assert not matches_glob("arn:aws:s3:::payroll/*", "arn:aws:s3:::payroll2/x.csv")
    assert matches_glob(
        "arn:aws:ssm:*:123456789012:parameter/prod/*",
        ("arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db"),
    )
