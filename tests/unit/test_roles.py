"""Signing as a role per target account: which account a call targets, the [aws.roles] table,
and how role sessions are kept, renewed and shared (gateway/roles.py)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from jitgate.awsapi.types import Access, Operation
from jitgate.clock import FakeClock
from jitgate.config import load_settings
from jitgate.errors import InvalidRequest
from jitgate.gateway.roles import (
    RENEW_BEFORE,
    MixedAccounts,
    OwnerMismatch,
    RoleSessions,
    SessionCredentials,
    bucket_owners,
    expected_bucket_owner,
    expected_source_owner,
    parse_bucket_accounts,
    parse_roles,
    session_name,
    source_identity,
    target_account,
)

HOME = "111111111111"
EXPECTED, SOURCE = "x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner"
OTHER = "222222222222"
ROLE = f"arn:aws:iam::{OTHER}:role/jitgate-agents"


def test_the_target_account_is_the_one_the_arns_name() -> None:
    roles = {OTHER: ROLE}
    table = Access("dynamodb:GetItem", f"arn:aws:dynamodb:us-east-1:{OTHER}:table/orders")
    bucket = Access("s3:GetObject", "arn:aws:s3:::reports/q3.csv")  # S3: the default account
    assert target_account([table], HOME, roles) == OTHER
    assert target_account([bucket], HOME, roles) == HOME
    assert target_account([Access("sts:GetCallerIdentity", "*")], HOME, roles) == HOME
    assert target_account([], HOME, roles) == HOME


def test_a_call_naming_two_accounts_is_refused_once_either_has_a_role() -> None:
    """Found in review: S3 ARNs counted as no account, so an S3 write naming another account's
    KMS key was signed as that account (or as jitgate itself) instead of the bucket's role."""
    bucket = Access("s3:PutObject", "arn:aws:s3:::reports/q3.csv")
    key = Access("kms:GenerateDataKey", f"arn:aws:kms:us-east-1:{OTHER}:key/k")
    for roles in ({HOME: f"arn:aws:iam::{HOME}:role/r"}, {OTHER: ROLE}):
        with pytest.raises(MixedAccounts, match=f"{HOME}, {OTHER}"):
            target_account([bucket, key], HOME, roles)
    # No role for either: jitgate's own identity signs it, as without [aws.roles] (found in
    # review: such calls were refused although no role applied).
    assert target_account([bucket, key], HOME, {"333333333333": "r"}) == ""


def test_the_roles_table_is_checked() -> None:
    assert parse_roles({OTHER: ROLE}) == {OTHER: ROLE}
    assert parse_roles({}) == {}
    with pytest.raises(ValueError, match="12-digit"):
        parse_roles({"2222": ROLE})
    with pytest.raises(ValueError, match="not an IAM role ARN"):
        parse_roles({OTHER: f"arn:aws:iam::{OTHER}:user/someone"})
    with pytest.raises(ValueError, match=f"the role for {HOME} is in account {OTHER}"):
        parse_roles({HOME: ROLE})
    with pytest.raises(ValueError, match="must be a table"):
        parse_roles(["not", "a", "table"])


def test_the_roles_table_is_read_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "jitgate.toml").write_text(f'[aws.roles]\n"{OTHER}" = "{ROLE}"\n')
    assert load_settings(tmp_path).aws_roles == {OTHER: ROLE}
    (tmp_path / "jitgate.toml").write_text(f'[aws.roles]\n"{HOME}" = "{ROLE}"\n')
    with pytest.raises(InvalidRequest, match="jitgate.toml: .*is in account"):
        load_settings(tmp_path)


def test_a_listed_bucket_is_in_its_listed_account() -> None:
    """S3 ARNs name no account: [aws.bucket_accounts] says where a bucket is, so a call on a
    partner's bucket is signed as that account's role, not the default account's."""
    roles = {HOME: f"arn:aws:iam::{HOME}:role/r", OTHER: ROLE}
    buckets = {"partner-exports": OTHER}
    listed = Access("s3:GetObject", "arn:aws:s3:::partner-exports/2026/q3.csv")
    whole = Access("s3:ListBucket", "arn:aws:s3:::partner-exports")
    other = Access("s3:GetObject", "arn:aws:s3:::reports/q3.csv")
    assert target_account([listed, whole], HOME, roles, buckets) == OTHER
    assert target_account([other], HOME, roles, buckets) == HOME
    # A bucket whose name only starts like a listed one is not it.
    near = Access("s3:GetObject", "arn:aws:s3:::partner-exports-old/q3.csv")
    assert target_account([near], HOME, roles, buckets) == HOME
    # A copy between a listed bucket and another account's is two accounts: one role cannot
    # sign it.
    with pytest.raises(MixedAccounts, match=f"{HOME}, {OTHER}"):
        target_account([listed, other], HOME, roles, buckets)
    # Only S3 ARNs are looked up: an empty account field elsewhere stays the default.
    zone = Access("route53:GetHostedZone", "arn:aws:route53:::hostedzone/partner-exports")
    assert target_account([zone], HOME, roles, buckets) == HOME


def test_the_bucket_accounts_table_is_checked(tmp_path: Path) -> None:
    assert parse_bucket_accounts({"partner-exports": OTHER}) == {"partner-exports": OTHER}
    with pytest.raises(ValueError, match="not an S3 bucket name"):
        parse_bucket_accounts({"Partner_Exports": OTHER})
    with pytest.raises(ValueError, match="12-digit"):
        parse_bucket_accounts({"partner-exports": "2222"})
    with pytest.raises(ValueError, match="12-digit"):
        parse_bucket_accounts({"partner-exports": 222222222222})
    with pytest.raises(ValueError, match="must be a table"):
        parse_bucket_accounts("partner-exports")
    (tmp_path / "jitgate.toml").write_text(
        f'[aws.bucket_accounts]\n"partner-exports" = "{OTHER}"\n'
    )
    assert load_settings(tmp_path).aws_bucket_accounts == {"partner-exports": OTHER}
    (tmp_path / "jitgate.toml").write_text('[aws.bucket_accounts]\n"partner-exports" = "x"\n')
    with pytest.raises(InvalidRequest, match="jitgate.toml: .*12-digit"):
        load_settings(tmp_path)


def test_s3_is_told_which_account_owns_a_listed_bucket() -> None:
    buckets = {"partner-exports": OTHER}
    get = Operation("s3", "GetObject", {"Bucket": "partner-exports", "Key": "k"})
    assert expected_bucket_owner(get, buckets) == OTHER
    unlisted = Operation("s3", "GetObject", {"Bucket": "reports", "Key": "k"})
    assert expected_bucket_owner(unlisted, buckets) is None
    # ListBuckets has no bucket; CreateBucket takes no ExpectedBucketOwner (per its model).
    assert expected_bucket_owner(Operation("s3", "ListBuckets", {}), buckets) is None
    create = Operation("s3", "CreateBucket", {"Bucket": "partner-exports"})
    assert expected_bucket_owner(create, buckets) is None
    table = Operation("dynamodb", "GetItem", {"TableName": "partner-exports"})
    assert expected_bucket_owner(table, buckets) is None


def named_owner(
    headers: dict[str, str], query: str = "", bucket: str = "partner-exports"
) -> str | None:
    get = Operation("s3", "GetObject", {"Bucket": bucket, "Key": "k"})
    return bucket_owners(get, {"partner-exports": OTHER}, headers, query).get(EXPECTED)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"x-amz-expected-bucket-owner": HOME}, ""),
        ({"x_amz_expected_bucket_owner": HOME}, ""),
        ({"x-amz-expected_bucket-owner": HOME}, ""),
        ({"x-amz-expected-bucket-owner": f"{OTHER},{HOME}"}, ""),  # a repeated header, joined
        ({"x-amz-expected-bucket-owner": OTHER, "x_amz_expected_bucket_owner": HOME}, ""),
        ({}, f"X-Amz-Expected-Bucket-Owner={HOME}"),
        ({}, f"x-amz-expected%2Dbucket%5Fowner={HOME}"),
        ({}, f"x-amz-expected-bucket-owner={OTHER}&x-amz-expected-bucket-owner={HOME}"),
        ({}, "x-amz-expected-bucket-owner"),  # no value is not the table's value either
    ],
)
def test_an_owner_the_call_names_must_be_the_tables(headers: dict[str, str], query: str) -> None:
    with pytest.raises(OwnerMismatch, match=f"set by jitgate's configuration \\({OTHER}\\)"):
        named_owner(headers, query)


def test_the_tables_owner_named_by_the_call_too_is_fine() -> None:
    assert named_owner({}) == OTHER
    assert named_owner({"x-amz-expected-bucket-owner": f" {OTHER} "}) == OTHER
    assert named_owner({}, f"x-amz-expected-bucket-owner={OTHER}") == OTHER
    # The name inside another parameter's value is not the parameter.
    assert named_owner({}, f"prefix=x-amz-expected-bucket-owner%3D{HOME}") == OTHER
    # A bucket the table does not list: the agent's own owner is S3's business.
    assert named_owner({"x-amz-expected-bucket-owner": HOME}, bucket="reports") is None


def test_a_copys_source_bucket_gets_its_owner_too() -> None:
    """Found in review: a copy from a listed bucket whose name another account had taken
    would have read that account's object into ours; S3 now checks the source's owner."""
    buckets = {"partner-exports": OTHER}

    def copy(name: str, bucket: str, source: object) -> Operation:
        return Operation("s3", name, {"Bucket": bucket, "Key": "k", "CopySource": source})

    for source in ("partner-exports/2026/q3.csv", "/partner-exports/q3.csv?versionId=v1"):
        assert expected_source_owner(copy("CopyObject", "reports", source), buckets) == OTHER
        assert bucket_owners(copy("CopyObject", "reports", source), buckets, {}, "") == {
            SOURCE: OTHER
        }
    part = copy("UploadPartCopy", "partner-exports", {"Bucket": "partner-exports", "Key": "s"})
    assert bucket_owners(part, buckets, {}, "") == {EXPECTED: OTHER, SOURCE: OTHER}
    assert bucket_owners(copy("CopyObject", "reports", "reports/k2"), buckets, {}, "") == {}
    inward = copy("CopyObject", "reports", "partner-exports/k")
    with pytest.raises(OwnerMismatch, match="the copy's source bucket"):
        bucket_owners(inward, buckets, {SOURCE: HOME}, "")
    # Owners of different buckets are not confused: the unlisted destination's is the agent's.
    assert bucket_owners(inward, buckets, {EXPECTED: HOME}, "") == {SOURCE: OTHER}


def test_the_session_names_the_agent_as_aws_allows() -> None:
    assert source_identity("reporter") == "reporter"
    assert source_identity("r") == "r@jitgate"  # AWS wants at least two characters
    assert session_name("reporter") == "jitgate.reporter"
    assert len(session_name("a" * 64)) == 64


class FakeSts:
    """AssumeRole that hands out numbered sessions lasting an hour from the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, str, str, int]] = []
        self.fail: Exception | None = None
        self.release = threading.Event()
        self.release.set()

    def __call__(self, role: str, name: str, source: str, seconds: int) -> SessionCredentials:
        self.release.wait(5)
        self.calls.append((role, name, source, seconds))
        if self.fail is not None:
            raise self.fail
        n = len(self.calls)
        expires = self.clock.now() + timedelta(seconds=seconds)
        return SessionCredentials(f"ASIA{n}", f"secret{n}", f"token{n}", expires)


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_a_session_is_kept_per_role_and_agent_and_renewed_before_it_ends() -> None:
    clock = FakeClock()
    sts = FakeSts(clock)
    sessions = RoleSessions(sts, clock)

    async def scenario() -> list[str]:
        keys = [(await sessions.session(ROLE, "reporter")).access_key]
        keys.append((await sessions.session(ROLE, "reporter")).access_key)  # kept
        keys.append((await sessions.session(ROLE, "auditor")).access_key)  # another agent
        clock.advance(3600 - RENEW_BEFORE.total_seconds() - 1)
        keys.append((await sessions.session(ROLE, "reporter")).access_key)  # still kept
        clock.advance(2)
        keys.append((await sessions.session(ROLE, "reporter")).access_key)  # renewed
        return keys

    assert run(scenario()) == ["ASIA1", "ASIA1", "ASIA2", "ASIA1", "ASIA3"]
    assert sts.calls[0] == (ROLE, "jitgate.reporter", "reporter", 3600)
    assert sts.calls[1][2] == "auditor"


def test_calls_waiting_for_the_same_session_share_one_assume_role() -> None:
    clock = FakeClock()
    sts = FakeSts(clock)
    sts.release.clear()
    sessions = RoleSessions(sts, clock)

    async def scenario() -> set[str]:
        waiting = [asyncio.ensure_future(sessions.session(ROLE, "reporter")) for _ in range(8)]
        await asyncio.sleep(0.05)
        waiting[0].cancel()  # one caller gives up: the others still get the session
        sts.release.set()
        done = await asyncio.gather(*waiting[1:])
        return {session.access_key for session in done}

    assert run(scenario()) == {"ASIA1"}
    assert len(sts.calls) == 1


def test_a_failed_assume_role_reaches_its_callers_and_is_not_kept() -> None:
    clock = FakeClock()
    sts = FakeSts(clock)
    sts.fail = RuntimeError("AccessDenied: not trusted")
    sessions = RoleSessions(sts, clock)

    async def scenario() -> str:
        with pytest.raises(RuntimeError, match="not trusted"):
            await sessions.session(ROLE, "reporter")
        sts.fail = None
        return (await sessions.session(ROLE, "reporter")).access_key

    assert run(scenario()) == "ASIA2"


def test_while_renewal_fails_a_kept_session_serves_until_near_its_end() -> None:
    """Found in review: a failed renewal in the last five minutes refused calls that the
    session still in hand could serve."""
    clock = FakeClock()
    sts = FakeSts(clock)
    sessions = RoleSessions(sts, clock)

    async def scenario() -> list[str]:
        keys = [(await sessions.session(ROLE, "reporter")).access_key]
        clock.advance(3600 - RENEW_BEFORE.total_seconds() + 1)  # renewal is due
        sts.fail = RuntimeError("STS throttled")
        keys.append((await sessions.session(ROLE, "reporter")).access_key)  # the kept one
        clock.advance(RENEW_BEFORE.total_seconds() - 30)  # 29 s left: too close to use
        with pytest.raises(RuntimeError, match="throttled"):
            await sessions.session(ROLE, "reporter")
        return keys

    assert run(scenario()) == ["ASIA1", "ASIA1"]


def test_a_hung_sts_answers_the_call_in_time_and_uses_no_shared_worker() -> None:
    """Found in review: a hung STS held calls without limit and, six agents at once, took all
    of asyncio's shared worker threads (the sweeper's, shutdown's)."""
    clock = FakeClock()
    sts = FakeSts(clock)
    sts.release.clear()  # STS never answers
    sessions = RoleSessions(sts, clock, wait_seconds=0.2)

    async def scenario() -> str:
        waits = [sessions.session(ROLE, f"agent{n}") for n in range(6)]
        results = await asyncio.gather(*waits, return_exceptions=True)
        assert all(isinstance(result, TimeoutError) for result in results)
        return await asyncio.wait_for(asyncio.to_thread(lambda: "shared pool free"), 1.0)

    try:
        assert run(scenario()) == "shared pool free"
    finally:
        sts.release.set()
        sessions.close()
