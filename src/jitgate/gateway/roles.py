"""Signing as a role per target account, with the agent's name as the session's source identity.

jitgate signs every call it forwards with its own identity (the botocore credential chain). An
operator can instead name, per AWS account, a role for jitgate to assume (``[aws.roles]``).
A call into that account is then signed with that role's session, assumed with
``SourceIdentity`` = the agent's name and a session name that carries it, so that AWS's own
record (CloudTrail) names the agent as well as jitgate, and the role's policy bounds what any
grant can reach in that account.

The target account of a call is the one its resource ARNs name (the grant already covers
them). S3's ARNs carry no account: a bucket listed in ``[aws.bucket_accounts]`` is in the
account listed, and S3 is told to expect that owner; any other bucket, like ``*``, is in
jitgate's default account. A call whose ARNs name two accounts cannot be signed by one role
and is refused.

Sessions are kept per (role, agent) and renewed before they expire; two calls that need the
same missing session share one AssumeRole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote

from jitgate.awsapi.operations import parse_copy_source, takes_member
from jitgate.awsapi.types import Access, Operation, UnsupportedOperation
from jitgate.clock import Clock

log = logging.getLogger(__name__)

ROLE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}")
ACCOUNT_ID = re.compile(r"\d{12}")
# S3's rules for a bucket's name (general purpose buckets): 3-63 of a-z 0-9 . -
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
SESSION_SECONDS = 3600  # asked for each session (a role's default maximum)
RENEW_BEFORE = timedelta(minutes=5)  # a session this close to its end is replaced first
KEEP_USING = timedelta(minutes=1)  # while renewal fails, a kept session serves until this close
# The longest a call waits for a session: a hung STS answers the call 503, not never. The
# AssumeRole goes on (botocore's own timeouts end it) in a small pool of jitgate's own, so a
# hung STS cannot take the event loop's shared worker threads.
WAIT_SECONDS = 15.0
STS_THREADS = 2


@dataclass(frozen=True)
class SessionCredentials:
    access_key: str
    secret_key: str
    token: str
    expires_at: datetime


# (role ARN, session name, source identity, seconds) -> the session's credentials; blocking.
AssumeRole = Callable[[str, str, str, int], SessionCredentials]


class MixedAccounts(ValueError):
    """A call whose resources lie in more than one account."""


def parse_roles(table: object, where: str = "[aws.roles]") -> dict[str, str]:
    """``{account id: role ARN}`` from the config table, each role in the account it is for."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of account id = role ARN")
    roles: dict[str, str] = {}
    for account, role in table.items():
        if not ACCOUNT_ID.fullmatch(str(account)):
            raise ValueError(f"{where}: {account!r} is not a 12-digit AWS account id")
        matched = ROLE_ARN.fullmatch(role) if isinstance(role, str) else None
        if matched is None:
            raise ValueError(f"{where}: {role!r} (for {account}) is not an IAM role ARN")
        if matched.group(1) != account:
            raise ValueError(f"{where}: the role for {account} is in account {matched.group(1)}")
        roles[str(account)] = role
    return roles


def parse_bucket_accounts(table: object, where: str = "[aws.bucket_accounts]") -> dict[str, str]:
    """``{bucket: account id}`` from the config table: the account each listed bucket is in."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of bucket name = account id")
    buckets: dict[str, str] = {}
    for bucket, account in table.items():
        if not BUCKET_NAME.fullmatch(str(bucket)):
            raise ValueError(f"{where}: {bucket!r} is not an S3 bucket name")
        if not isinstance(account, str) or not ACCOUNT_ID.fullmatch(account):
            raise ValueError(
                f"{where}: {account!r} (for {bucket}) is not a 12-digit AWS account id"
            )
        buckets[str(bucket)] = account
    return buckets


def accounts_named(
    access: Iterable[Access], default: str, buckets: Mapping[str, str] | None = None
) -> set[str]:
    """Every account the ARNs of ``access`` lie in. S3's bucket and object ARNs name no
    account: a bucket listed in ``buckets`` lies in its account there, any other in
    ``default``, the account jitgate's calls go to. ``*`` lies in none."""
    accounts = set()
    for item in access:
        parts = item.arn.split(":", 5)
        if len(parts) != 6:
            continue  # "*"
        account = parts[4]
        if not account:
            bucket = parts[5].split("/", 1)[0] if parts[2] == "s3" else ""
            account = (buckets or {}).get(bucket, default)
        if ACCOUNT_ID.fullmatch(account):
            accounts.add(account)
    return accounts


def target_account(
    access: Iterable[Access],
    default: str,
    roles: dict[str, str],
    buckets: Mapping[str, str] | None = None,
) -> str:
    """The account whose role signs the call: the one account its ARNs lie in, or ``default``.

    A call whose ARNs lie in several accounts is refused as soon as any of them has a role
    (found in review: an S3 write naming another account's KMS key was signed as that other
    account, or as jitgate itself, instead of the bucket's account's role); when none has,
    jitgate's own identity signs it, as without roles."""
    accounts = accounts_named(access, default, buckets)
    if len(accounts) > 1:
        if any(account in roles for account in accounts):
            raise MixedAccounts(
                "the call touches resources in several AWS accounts "
                f"({', '.join(sorted(accounts))}); jitgate signs each call as one account's role"
            )
        return ""  # no role applies to any of them
    return accounts.pop() if accounts else default


def expected_bucket_owner(operation: Operation, buckets: Mapping[str, str]) -> str | None:
    """The account S3 must find owns the call's bucket, for a bucket listed in ``buckets``
    (sent as ``x-amz-expected-bucket-owner``: S3 refuses the call if another account owns it,
    say after the bucket was deleted and its name taken). None when the bucket is not listed
    or the operation has no such parameter."""
    if operation.service != "s3" or not buckets:
        return None
    bucket = operation.params.get("Bucket")
    if not isinstance(bucket, str) or bucket not in buckets:
        return None
    if not takes_member("s3", operation.name, "ExpectedBucketOwner"):
        return None
    return buckets[bucket]


EXPECTED_OWNER = "x-amz-expected-bucket-owner"
SOURCE_OWNER = "x-amz-source-expected-bucket-owner"  # a copy's source bucket


class OwnerMismatch(ValueError):
    """The call names an expected bucket owner other than the one jitgate's table sets."""


def spelled_as(name: str, header: str) -> bool:
    """Whether ``name`` (lower case) is ``header`` in a spelling a server may read as it
    ('_' for '-')."""
    return name.replace("_", "-") == header


def expected_source_owner(operation: Operation, buckets: Mapping[str, str]) -> str | None:
    """For CopyObject and UploadPartCopy, the account S3 must find owns the source bucket,
    when it is listed in ``buckets`` (sent as ``x-amz-source-expected-bucket-owner``)."""
    if operation.service != "s3" or not buckets:
        return None
    if not takes_member("s3", operation.name, "ExpectedSourceBucketOwner"):
        return None
    source = operation.params.get("CopySource")
    try:
        parsed = parse_copy_source(source) if isinstance(source, str) else source
    except UnsupportedOperation:
        return None  # not a copy jitgate lets through (mapping refuses it)
    bucket = parsed.get("Bucket") if isinstance(parsed, Mapping) else None
    return buckets.get(bucket) if isinstance(bucket, str) else None


def bucket_owners(
    operation: Operation, buckets: Mapping[str, str], headers: Mapping[str, str], query: str
) -> dict[str, str]:
    """The owners S3 must find, as {header: account}: the call's bucket and a copy's source
    bucket, where the table lists them (``expected_bucket_owner``, ``expected_source_owner``).

    The table decides, not the agent (found in review: the agent's own value was kept, so it
    could point a call signed as the listed account's role at a bucket of that name in any
    account): an owner the call names otherwise, in a header (``headers``: lower-case names)
    or in the query, raises OwnerMismatch. S3 reads no such query parameter, and operation
    identification already refuses one; it is checked here as well, so this check does not
    depend on that."""
    owners = {
        header: owner
        for header, owner in (
            (EXPECTED_OWNER, expected_bucket_owner(operation, buckets)),
            (SOURCE_OWNER, expected_source_owner(operation, buckets)),
        )
        if owner is not None
    }
    for header, owner in owners.items():
        named = {value.strip() for name, value in headers.items() if spelled_as(name, header)}
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if spelled_as(unquote(name).lower(), header):
                named.add(unquote(value))
        if named - {owner}:
            which = "the copy's source bucket" if header == SOURCE_OWNER else "the bucket"
            raise OwnerMismatch(
                f"the expected owner of {which} is set by jitgate's configuration ({owner}); "
                "the call named another"
            )
    return owners


def session_name(agent: str) -> str:
    """The role session's name: shows in the assumed-role ARN AWS logs (2-64 characters)."""
    return f"jitgate.{agent}"[:64]


def source_identity(agent: str) -> str:
    """The agent's name, as AWS wants a source identity (at least 2 characters)."""
    return agent if len(agent) >= 2 else f"{agent}@jitgate"


class RoleSessions:
    """Role sessions per (role, agent), assumed in a worker thread and kept until near expiry."""

    def __init__(
        self,
        assume: AssumeRole,
        clock: Clock,
        run: Callable[..., Awaitable[SessionCredentials]] | None = None,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self._assume = assume
        self._clock = clock
        self._run = run or self._in_pool
        self._wait_seconds = wait_seconds
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._sessions: dict[tuple[str, str], SessionCredentials] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[SessionCredentials]] = {}

    def cached(self, role: str, agent: str) -> SessionCredentials | None:
        """The kept session if it has more than RENEW_BEFORE left (no I/O)."""
        session = self._sessions.get((role, agent))
        if session is not None and self._clock.now() + RENEW_BEFORE < session.expires_at:
            return session
        return None

    async def session(self, role: str, agent: str) -> SessionCredentials:
        """A live session of ``role`` for ``agent``: kept, or assumed now (raises what STS
        raised when it cannot be)."""
        session = self.cached(role, agent)
        if session is not None:
            return session
        key = (role, agent)
        fetching = self._pending.get(key)
        if fetching is None:
            # A task of its own: a caller that gives up (its client left) stops no one else.
            fetching = self._pending[key] = asyncio.ensure_future(self._fetch(key))
            fetching.add_done_callback(functools.partial(self._fetched, key))
        try:
            async with asyncio.timeout(self._wait_seconds):
                return await asyncio.shield(fetching)
        except Exception as exc:
            kept = self._sessions.get(key)
            if kept is None or self._clock.now() + KEEP_USING >= kept.expires_at:
                raise
            log.warning("renewing %s for %s failed (%r); its session serves meanwhile", *key, exc)
            return kept

    async def _in_pool(self, *call: object) -> SessionCredentials:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=STS_THREADS, thread_name_prefix="sts-assume-role"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, *call)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _fetch(self, key: tuple[str, str]) -> SessionCredentials:
        role, agent = key
        session = await self._run(
            self._assume, role, session_name(agent), source_identity(agent), SESSION_SECONDS
        )
        self._sessions[key] = session
        return session

    def _fetched(self, key: tuple[str, str], task: asyncio.Future[SessionCredentials]) -> None:
        del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved here: whoever still waits gets it too
