"""A client that stops sending its request body is not waited for without end.

Found in review: nothing timed a body's arrival. A DynamoDB (any non-S3) body is read whole
before its signature is checked, and counted in the endpoint's shared budget for bodies held in
memory, so anyone who knows an access key id (not a secret) could send most of a few bodies and
stall, holding that budget until every other caller got SlowDown. An S3 upload that stalls held
its pooled connection to AWS for as long.
"""

from __future__ import annotations

import hashlib
import json
import socket
from urllib.parse import urlsplit

import pytest

from jitgate.gateway import app as gateway_app

from .conftest import OBJECT_ARN, Stack, table_arn
from .recording import RecordingUpstream
from .wire import read_until_closed, sign_by_hand

pytestmark = pytest.mark.slow

STALL = 0.5


@pytest.fixture
def quick_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_app, "BODY_STALL_SECONDS", STALL)


def send_part_and_stall(stack: Stack, head: bytes, part: bytes) -> bytes:
    """Send the head and part of the body it announces, then nothing: the answer."""
    parts = urlsplit(stack.aws_url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + part)
        try:
            return read_until_closed(sock)
        except TimeoutError:
            pytest.fail("still waiting for the body after 10 s")


def request_head(method: str, path: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_stalled_body_that_is_read_whole_gives_its_memory_back(
    stack: Stack, quick_stall: None
) -> None:
    grant = stack.grant(["dynamodb:GetItem"], [table_arn("orders")])
    body = json.dumps({"TableName": "orders", "Key": {"id": {"S": "o" * 100_000}}}).encode()
    host = urlsplit(stack.aws_url).netloc
    _, headers = sign_by_hand(
        "POST",
        host,
        "/",
        creds=grant.creds,
        service="dynamodb",
        payload_line=hashlib.sha256(body).hexdigest(),
        headers={
            "x-amz-target": "DynamoDB_20120810.GetItem",
            "content-type": "application/x-amz-json-1.0",
            "content-length": str(len(body)),
        },
    )
    head = request_head("POST", "/", host, {k: v for k, v in headers.items() if k != "host"})
    answer = send_part_and_stall(stack, head, body[:60_000])
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"RequestTimeout" in answer
    assert f"no body bytes for {STALL:g} s".encode() in answer
    endpoint = stack.thread.endpoint
    assert endpoint is not None and endpoint.buffered.used == 0  # the budget is whole again


def test_a_stalled_upload_gives_its_upstream_connection_back(make_stack, quick_stall: None) -> None:  # type: ignore[no-untyped-def]
    upstream = RecordingUpstream()
    try:
        stack = make_stack(upstream=upstream.url)
        grant = stack.grant(["s3:PutObject"], [OBJECT_ARN])
        host = urlsplit(stack.aws_url).netloc
        path = "/" + OBJECT_ARN.split(":::", 1)[1]
        _, headers = sign_by_hand(
            "PUT",
            host,
            path,
            creds=grant.creds,
            service="s3",
            payload_line="UNSIGNED-PAYLOAD",
            headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "content-length": "1000000"},
        )
        head = request_head("PUT", path, host, {k: v for k, v in headers.items() if k != "host"})
        answer = send_part_and_stall(stack, head, b"p" * 300_000)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert b"RequestTimeout" in answer
        events = stack.wait_events(grant.id, lambda es: any(e.type == "call.completed" for e in es))
        (completed,) = [e.data for e in events if e.type == "call.completed"]
        assert completed["status"] == 400
        assert completed["error"] == f"the client sent no body bytes for {STALL:g} s"
        assert completed["bytes_in"] == 300_000
    finally:
        upstream.close()
