"""Floods: unauthenticated calls cannot fill the audit log (an agent's denials all count), and
request bodies held in memory at once are capped.

The attack: anyone who can reach the AWS endpoint sends calls with made-up keys (or a real key
id and a wrong signature) as fast as it can. Each used to become a full ``call.denied`` event,
written durably before the answer. Now, past a per-source limit, such failures are counted and
written as one ``denials.suppressed`` event when the window closes. A caller that authenticated
(a real grant's signature) is accountable, and every one of its denials is still written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError

from jitgate.audit.flood import FailureThrottle
from jitgate.clock import SystemClock
from jitgate.gateway.app import MAX_BUFFERED_TOTAL

from .conftest import OBJECT_ARN, Stack, object_arn, table_arn

pytestmark = pytest.mark.slow

WINDOW_SECONDS = 3.0


def refused_code(call: Callable[[], object]) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def test_unauthenticated_flood_is_counted_and_agent_denials_are_all_written(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(
        failures=FailureThrottle(
            SystemClock(), listener="aws", per_source=3, overall=100, window_seconds=WINDOW_SECONDS
        )
    )
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    unknown = stack.client(
        "s3",
        dict(grant.creds, AccessKeyId="AKJG" + uuid.uuid4().hex[:16].upper()),
    )
    forged = stack.client(
        "s3", dict(grant.creds, SecretAccessKey=grant.creds["SecretAccessKey"][::-1])
    )
    agent = stack.client("s3", grant.creds)
    started = time.monotonic()

    codes = [
        refused_code(lambda: unknown.get_object(Bucket="reports", Key="2026/q3.csv"))
        for _ in range(6)
    ]
    codes += [
        refused_code(lambda: forged.get_object(Bucket="reports", Key="2026/q3.csv"))
        for _ in range(4)
    ]
    outside = [
        refused_code(lambda: agent.get_object(Bucket="reports", Key="2026/q4.csv"))
        for _ in range(8)
    ]
    # Every caller still gets its error, whether or not it was written singly.
    assert codes == ["InvalidAccessKeyId"] * 6 + ["SignatureDoesNotMatch"] * 4
    assert outside == ["AccessDenied"] * 8
    assert time.monotonic() - started < WINDOW_SECONDS, "too slow to test one window"

    def suppressed() -> list:
        return stack.core.audit.events(types=["denials.suppressed"], limit=100)

    deadline = time.monotonic() + 10
    while not suppressed() and time.monotonic() < deadline:
        time.sleep(0.05)
    (summary,) = suppressed()
    assert summary.actor == "jitgate"
    assert summary.data["listener"] == "aws"
    assert summary.data["source"] == "127.0.0.1"
    assert summary.data["count"] == 7
    assert summary.data["codes"] == {"InvalidAccessKeyId": 3, "SignatureDoesNotMatch": 4}

    denied = stack.core.audit.events(types=["call.denied"], limit=100)
    by_code: dict[str, int] = {}
    for event in denied:
        by_code[event.data["code"]] = by_code.get(event.data["code"], 0) + 1
    assert by_code == {"InvalidAccessKeyId": 3, "AccessDenied": 8}
    assert all(
        e.data["access"] == [{"action": "s3:GetObject", "arn": object_arn("2026/q4.csv")}]
        for e in denied
        if e.data["code"] == "AccessDenied"
    )
    # Written singly + counted = every failure.
    assert by_code["InvalidAccessKeyId"] + summary.data["count"] == len(codes)

    # The limit is per window: a new one writes again.
    assert refused_code(lambda: unknown.get_object(Bucket="reports", Key="x")) == (
        "InvalidAccessKeyId"
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        denied = stack.core.audit.events(types=["call.denied"], limit=100)
        if sum(1 for e in denied if e.data["code"] == "InvalidAccessKeyId") == 4:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the failure in a new window was not written")


def test_request_bodies_held_at_once_are_capped(make_stack: Callable[..., Stack]) -> None:
    """Non-S3 bodies are read whole (to verify them) before the signature is checked, which
    needs only a known access key id: all of them together may not exceed a memory budget."""
    stack = make_stack()
    endpoint = stack.thread.endpoint
    assert endpoint is not None
    grant = stack.grant(["dynamodb:PutItem"], [table_arn("orders")])
    dynamodb = stack.client("dynamodb", grant.creds)
    item = {"id": {"S": "big"}, "pad": {"S": "x" * 2000}}

    endpoint.buffered.limit = 1000
    with pytest.raises(ClientError) as info:
        dynamodb.put_item(TableName="orders", Item=item)
    assert info.value.response["Error"]["Code"] == "SlowDown"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert endpoint.buffered.used == 0  # what the refused call held is given back

    endpoint.buffered.limit = MAX_BUFFERED_TOTAL
    dynamodb.put_item(TableName="orders", Item=item)
    assert endpoint.buffered.used == 0
