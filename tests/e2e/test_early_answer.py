"""An upstream that answers before it has read the body (S3 refusing an upload at once)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from .conftest import Stack, object_arn
from .recording import Forwarded, RecordingUpstream

pytestmark = pytest.mark.slow


def refuse_at_once(connection: socket.socket, forwarded: Forwarded) -> None:
    """403 after the head, the body never read; then the connection closes."""
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Access Denied</Message><RequestId>up-403</RequestId></Error>"
    )
    connection.sendall(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
        b"x-amz-request-id: up-403\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )


@pytest.fixture
def refusing(make_stack) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    upstream = RecordingUpstream(refuse_at_once, read_body=False)
    try:
        yield make_stack(upstream=upstream.url)
    finally:
        upstream.close()


def test_an_upload_refused_early_by_the_upstream_gets_the_upstreams_answer(
    refusing: Stack,
) -> None:
    grant = refusing.grant(["s3:PutObject"], [object_arn("early.bin")])
    s3 = refusing.client("s3", grant.creds)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="reports", Key="early.bin", Body=b"e" * (16 * 1024 * 1024))
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    events = refusing.wait_events(grant.id, lambda es: any(e.type == "call.completed" for e in es))
    (completed,) = [e.data for e in events if e.type == "call.completed"]
    assert completed["status"] == 403
    assert completed["upstream_request_id"] == "up-403"


def test_an_upload_to_an_upstream_that_never_says_continue_is_sent_after_a_wait(
    make_stack,  # type: ignore[no-untyped-def]
) -> None:
    """The recording upstream ignores Expect: 100-continue and waits for the body, as some
    servers do: after a second jitgate sends it anyway (aiohttp alone would wait for ever)."""
    upstream = RecordingUpstream()
    try:
        stack = make_stack(upstream=upstream.url)
        grant = stack.grant(["s3:PutObject"], [object_arn("patient.bin")])
        body = b"p" * (2 * 1024 * 1024)  # botocore asks for 100 Continue above 1 MiB
        stack.client("s3", grant.creds).put_object(Bucket="reports", Key="patient.bin", Body=body)
        (forwarded,) = upstream.wait(1)
    finally:
        upstream.close()
    assert forwarded.headers.get("expect") == "100-continue"
    assert forwarded.complete and forwarded.body == body
