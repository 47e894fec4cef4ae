"""The steps of one jitgate call, timed one by one in-process with jitgate's own objects.

What ``AwsEndpoint._handle`` and ``_forward`` do for an S3 GetObject and a DynamoDB GetItem,
step by step, with the real grant lookup (SQLite), the real audit transaction (guard + append +
commit, as the event-loop audit writer runs it for a batch of one, i.e. at concurrency 1) with
and without the fsync "fsync" durability waits for, and the real signer. No network: this shows where the per-call
microseconds go, to read beside the py-spy profile of the running server.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.gateway_launcher import issue_grants
from benchmarks.gateway_load import DDB_BODY, Creds, signed_head
from jitgate.audit.batcher import Item, write_batch
from jitgate.audit.log import NewEvent
from jitgate.audit.loop_writer import LoopAuditWriter
from jitgate.awsapi import sigv4
from jitgate.awsapi.mapping import required_access
from jitgate.awsapi.operations import identify
from jitgate.awsapi.types import AwsRequest
from jitgate.config import load_settings
from jitgate.core import build, init_home
from jitgate.gateway.lookup import GrantLookup, refreshed
from jitgate.store.driver import driver_transaction

HOST = "127.0.0.1:8750"


def _headers(raw: bytes) -> tuple[str, str, dict[str, str]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    method, path, _ = lines[0].split(" ")
    return method, path, {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}


def _time(fn: Callable[[], Any], count: int) -> float:
    """Median microseconds per call over ``count`` calls (in 10 rounds)."""
    fn()
    rounds = []
    per_round = max(1, count // 10)
    for _ in range(10):
        started = time.perf_counter()
        for _ in range(per_round):
            fn()
        rounds.append((time.perf_counter() - started) / per_round * 1e6)
    return statistics.median(rounds)


CALLS = (
    ("S3 GetObject", "s3", "GET", "/bench/obj-1k", b"", ()),
    (
        "DynamoDB GetItem",
        "dynamodb",
        "POST",
        "/",
        DDB_BODY,
        (
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.GetItem"),
        ),
    ),
)


def measure(count: int = 2000) -> list[tuple[str, str, float]]:
    """(call, step, median us) for each step of an S3 GetObject and a DynamoDB GetItem."""
    rows: list[tuple[str, str, float]] = []
    home = Path(tempfile.mkdtemp(prefix="jitgate-bench-pieces-"))
    try:
        init_home(home)
        core = build(load_settings(home))
        grants = issue_grants(core)
        lookup = GrantLookup(core.db)
        for label, service, method, path, body, extra in CALLS:
            g = grants[service]
            creds = Creds(g["AccessKeyId"], g["SecretAccessKey"], g["SessionToken"])
            rows += [
                (label, step, us)
                for step, us in _steps(
                    core, lookup, creds, service, method, path, body, extra, count
                )
            ]
        # The audit transaction of a batch of one (concurrency 1), as LoopAuditWriter runs it,
        # then the fsync of the write-ahead log that "fsync" durability waits for.
        s3_grant = lookup.by_access_key(grants["s3"]["AccessKeyId"])
        assert s3_grant is not None
        writer = LoopAuditWriter(core.db, core.clock)
        step = "audit txn, batch of 1: BEGIN IMMEDIATE + guard + append + COMMIT"
        commit = _time(lambda: _audit(writer, s3_grant), min(count, 1000))
        rows.append(("S3 GetObject", f"{step} (no fsync)", commit))
        synced = _time(lambda: (_audit(writer, s3_grant), writer._fsync_wal()), min(count, 300))
        rows.append(("S3 GetObject", f"{step} + fdatasync of the WAL", synced))
        writer.stop()
        lookup.close()
        core.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rows


def _steps(
    core: Any,
    lookup: GrantLookup,
    creds: Creds,
    service: str,
    method: str,
    path: str,
    body: bytes,
    extra: tuple[tuple[str, str], ...],
    count: int,
) -> list[tuple[str, float]]:
    payload_hash = hashlib.sha256(body).hexdigest() if body else sigv4.EMPTY_SHA256
    raw = signed_head(
        method, path, HOST, creds, service, payload_hash, extra, len(body) if body else None
    )
    method, path, headers = _headers(raw)
    now = datetime.now(UTC)
    parsed = sigv4.parse_auth(method, path, "", headers)
    grant = lookup.by_access_key(parsed.access_key_id)
    assert grant is not None
    secret = core.master_key.secret_access_key(parsed.access_key_id, grant.id)
    buffered = body if service != "s3" else None
    key_cache = sigv4.SigningKeyCache()
    upstream_cache = sigv4.SigningKeyCache()

    def verify() -> Any:
        return sigv4.verify(
            parsed,
            method=method,
            raw_path=path,
            query="",
            headers=headers,
            body=buffered,
            secret_key=secret,
            now=now,
            key_cache=key_cache,
        )

    info = verify()
    request = AwsRequest(method, path, "", headers, buffered, service, "us-east-1")
    operation = identify(request)

    def authorize() -> None:
        for access in required_access(operation, account="123456789012", region="us-east-1"):
            assert grant.scope.allows(access.action, access.arn, access.match)

    def credentials() -> None:
        core.master_key.secret_access_key(parsed.access_key_id, grant.id)
        core.master_key.session_token_matches(
            info.security_token or "", parsed.access_key_id, grant.id
        )

    def guard_queries() -> None:
        with driver_transaction(core.db) as txn:
            refreshed(txn, grant)

    forwarded = {"host": "127.0.0.1:9000", "amz-sdk-invocation-id": str(uuid.uuid4())}
    prefix, counter = uuid.uuid4().hex[:16], itertools.count(1)

    def sign() -> Any:
        return sigv4.sign_headers(
            method=method,
            raw_path=path,
            query="",
            headers=forwarded,
            payload_hash=info.payload_hash,
            access_key="AKID",
            secret_key="secret",
            session_token=None,
            region="us-east-1",
            service=service,
            now=now,
            key_cache=upstream_cache,
        )

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("parse_auth", lambda: sigv4.parse_auth(method, path, "", headers)),
        (
            "grant lookup, remembered (a live grant read less than a second ago)",
            lambda: lookup.by_access_key(parsed.access_key_id),
        ),
        (
            "grant lookup, read: SQLite on a kept DBAPI connection, on the event loop",
            lambda: lookup._read(parsed.access_key_id),
        ),
        (
            "grant secret + session token (2 HMACs; the endpoint then caches them per grant)",
            credentials,
        ),
        ("SigV4 verify (cached signing key)", verify),
        ("identify operation (botocore model)", lambda: identify(request)),
        ("required_access + scope check", authorize),
        ("re-sign for upstream", sign),
        ("request id (random prefix + counter)", lambda: f"{prefix}{next(counter):016x}"),
        (
            "audit guard's re-check of the grant (in a transaction of its own), once per batch",
            guard_queries,
        ),
    ]
    return [(step, _time(fn, count)) for step, fn in steps]


def _audit(writer: LoopAuditWriter, grant: Any) -> None:
    """What LoopAuditWriter does for a batch of one call.allowed event with the gateway's
    guard (a batch's re-check is read once per grant)."""
    event = NewEvent("call.allowed", "agent:a", "a", grant.id, {"n": 1})
    write_batch(
        writer._connection,
        writer.clock,
        [Item(event, None, lambda txn: refreshed(txn, grant) and None)],
    )
