"""A grant that stops being live while one of its calls is still under way.

Found in review (session 10): the grant was checked once, when the call was recorded as allowed.
A streamed upload or download then ran to its end after the grant was revoked, its agent
disabled or its expiry passed, and a body that arrived after expiry was checked against the
instant its head arrived. Revocation and disabling are how an incident is stopped, so they
must stop calls in flight too; expiry is by instant (docs/concepts.md).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from jitgate.audit.log import StoredEvent
from jitgate.gateway.liveness import STREAM_CHECK_SECONDS

from .conftest import GrantInfo, Stack, object_arn
from .recording import Forwarded, RecordingUpstream
from .wire import credentials_of, sign, sign_by_hand

pytestmark = pytest.mark.slow

PIECE = b"u" * (256 * 1024)
PIECES = 8
# Long enough for the streaming call's next piece to re-read the grant from the database.
PAST_THE_NEXT_CHECK = STREAM_CHECK_SECONDS + 0.3


def revoke(stack: Stack, grant: GrantInfo) -> None:
    response = httpx.post(
        f"{stack.control_url}/v1/grants/{grant.id}/revoke",
        headers={"authorization": f"Bearer {grant.agent.token}"},
        json={"comment": "incident"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def disable(stack: Stack, agent: str) -> None:
    response = httpx.post(
        f"{stack.control_url}/v1/agents/{agent}/disable",
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def stored(stack: Stack, key: str) -> bool:
    listed = stack.direct("s3").list_objects_v2(Bucket="reports", Prefix=key)  # type: ignore[attr-defined]
    return any(item["Key"] == key for item in listed.get("Contents", []))


def outcome(stack: Stack, grant_id: str) -> StoredEvent:
    events = stack.wait_events(grant_id, lambda es: any(e.type == "call.completed" for e in es))
    completed = [e for e in events if e.type == "call.completed"]
    assert len(completed) == 1, [e.type for e in events]
    assert not [e for e in events if e.type == "call.denied"], "an allowed call is not denied"
    return completed[0]


def upload_pausing_midway(
    stack: Stack, grant: GrantInfo, key: str, midway: Callable[[], None]
) -> httpx.Response:
    """A PUT whose body streams in pieces, calling ``midway`` halfway through."""
    url = f"{stack.aws_url}/reports/{key}"
    body = PIECE * PIECES
    headers = sign("PUT", url, credentials=credentials_of(grant.creds), body=body)
    headers["Content-Length"] = str(len(body))

    def pieces() -> Iterator[bytes]:
        for index in range(PIECES):
            if index == PIECES // 2:
                midway()
            yield PIECE

    return httpx.put(url, headers=headers, content=pieces(), timeout=30)


@pytest.mark.parametrize("how", ["revoked", "agent disabled", "expired"])
def test_an_upload_stops_mid_body_when_its_grant_ends(stack: Stack, how: str) -> None:
    """Before the fix the upload finished (200) and the object was stored."""
    key = f"in-flight/{uuid.uuid4().hex}"
    grant = stack.grant(
        ["s3:PutObject"], [object_arn(key)], duration=2 if how == "expired" else 300
    )

    def end_the_grant() -> None:
        if how == "revoked":
            revoke(stack, grant)
        elif how == "agent disabled":
            disable(stack, grant.agent.name)
        else:
            time.sleep(max(0.0, expires_in(grant)) + 0.2)
            return  # expiry is checked at every piece, with no database read
        time.sleep(PAST_THE_NEXT_CHECK)

    response = upload_pausing_midway(stack, grant, key, end_the_grant)

    code = "ExpiredToken" if how == "expired" else "AccessDenied"
    assert response.status_code in (400, 403), response.text
    assert f"<Code>{code}</Code>" in response.text
    assert "the upload was stopped mid-body" in response.text
    assert not stored(stack, key), "AWS completed an upload cut off mid-body"
    record = outcome(stack, grant.id)
    assert record.data["status"] == response.status_code
    assert "stopped mid-body" in record.data["error"]
    assert 0 < record.data["bytes_in"] < len(PIECE) * PIECES


def expires_in(grant: GrantInfo) -> float:
    from datetime import UTC, datetime

    expires = datetime.fromisoformat(grant.body["expires_at"].replace("Z", "+00:00"))
    return (expires - datetime.now(UTC)).total_seconds()


def test_a_download_is_cut_off_when_its_grant_is_revoked(stack: Stack) -> None:
    """Before the fix all 24 MiB were read after the revocation, while a new call on the same
    credentials was already refused. The cut is intended: uvicorn's ERROR line for a response
    left unfinished is not logged for it (jitgate logs why at INFO)."""
    with server_errors() as errors:
        cut_off_download(stack)
    assert not [e for e in errors if "without completing response" in e], errors


@contextlib.contextmanager
def server_errors() -> Iterator[list[str]]:
    """What uvicorn logs at ERROR meanwhile (its logger does not reach pytest's caplog)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def cut_off_download(stack: Stack) -> None:
    key = f"in-flight/{uuid.uuid4().hex}"
    body = PIECE * 96  # 24 MiB: far more than the socket buffers and jitgate's pieces hold
    stack.direct("s3").put_object(Bucket="reports", Key=key, Body=body)  # type: ignore[attr-defined]
    grant = stack.grant(["s3:GetObject"], [object_arn(key)])
    url = f"{stack.aws_url}/reports/{key}"
    received = 0
    with httpx.stream("GET", url, headers=sign("GET", url, credentials=credentials_of(grant.creds)), timeout=30) as response:  # fmt: skip
        assert response.status_code == 200
        pieces = response.iter_raw(64 * 1024)
        received += len(next(pieces))
        revoke(stack, grant)
        time.sleep(PAST_THE_NEXT_CHECK)
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in pieces:
                received += len(piece)
    assert received < len(body)
    record = outcome(stack, grant.id)
    assert record.data["status"] == 200  # what reached the client before the cut
    assert record.data["error"] == f"stopped mid-response: grant {grant.id} was revoked"
    assert record.data["bytes_out"] < len(body)


def one_call_grant(stack: Stack, key: str) -> GrantInfo:
    """A live grant for one PutObject of ``key`` (approved if policy wants a human)."""
    agent = stack.agent("one-call")
    response = httpx.post(
        f"{stack.control_url}/v1/grants",
        headers={"authorization": f"Bearer {agent.token}"},
        json={
            "actions": ["s3:PutObject"],
            "resources": [object_arn(key)],
            "duration_seconds": 300,
            "reason": "one upload",
            "one_call": True,
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text
    grant = stack.fetch_grant(GrantInfo(response.json()["id"], "", agent, None, {}))
    if grant.status == "pending":
        stack.core.grants.approve(stack.approver, grant.id, "e2e")
        grant = stack.fetch_grant(grant)
    return grant


def test_a_one_call_grant_does_not_stop_the_call_that_used_it(stack: Stack) -> None:
    """A one-call grant is ``used`` by the call it lets through, in the same transaction: that
    status must not cut off the call itself when its upload is re-checked."""
    key = f"in-flight/{uuid.uuid4().hex}"
    grant = one_call_grant(stack, key)

    uploaded = upload_pausing_midway(stack, grant, key, lambda: time.sleep(PAST_THE_NEXT_CHECK))

    assert uploaded.status_code == 200, uploaded.text
    assert stored(stack, key)
    assert stack.fetch_grant(grant).status == "used"


def test_revoking_a_one_call_grant_stops_the_call_that_used_it(stack: Stack) -> None:
    """Found in review: the call in flight had already made its one-call grant ``used``, which
    revocation refused (409), so the upload could be stopped only by disabling the agent."""
    key = f"in-flight/{uuid.uuid4().hex}"
    grant = one_call_grant(stack, key)

    def revoke_midway() -> None:
        revoke(stack, grant)
        time.sleep(PAST_THE_NEXT_CHECK)

    response = upload_pausing_midway(stack, grant, key, revoke_midway)

    assert response.status_code == 403, response.text
    assert not stored(stack, key)
    assert stack.fetch_grant(grant).status == "revoked"
    assert "was revoked; the upload was stopped mid-body" in outcome(stack, grant.id).data["error"]


def test_a_body_that_arrives_after_expiry_is_checked_at_that_instant(
    make_stack: Callable[..., Stack],
) -> None:
    """DeleteObjects is mapped from its body, read after the head. Before the fix the
    recording transaction re-checked the grant at the instant the head arrived, so a body sent
    after expiry was allowed and forwarded unless the sweeper had marked the grant expired."""
    stack = make_stack()
    stack.core.grants.sweep = lambda limit=500: (0, 0)  # type: ignore[method-assign]
    key = f"in-flight/{uuid.uuid4().hex}"
    stack.direct("s3").put_object(Bucket="reports", Key=key, Body=b"keep me")  # type: ignore[attr-defined]
    grant = stack.grant(["s3:DeleteObject"], [object_arn(key)], duration=2)
    body = (
        '<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Object><Key>{key}</Key></Object></Delete>"
    ).encode()
    url = f"{stack.aws_url}/reports?delete"
    headers = sign(
        "POST",
        url,
        credentials=credentials_of(grant.creds),
        headers={"Content-Type": "application/xml"},
        body=body,
    )
    headers["Content-Length"] = str(len(body))

    def after_expiry() -> Iterator[bytes]:
        time.sleep(max(0.0, expires_in(grant)) + 0.3)
        yield body

    response = httpx.post(url, headers=headers, content=after_expiry(), timeout=30)

    assert response.status_code == 400, response.text
    assert "<Code>ExpiredToken</Code>" in response.text
    assert stored(stack, key)
    assert stack.denial(response.headers["x-amz-request-id"]).grant_id == grant.id
    assert not [e for e in stack.events(grant.id) if e.type == "call.allowed"]


def test_an_answer_that_comes_after_revocation_is_refused_not_relayed(
    make_stack: Callable[..., Stack],
) -> None:
    """Found in review: the grant was re-checked per piece of the answer's body only, so a
    HEAD (or any answer without a body) that came after the grant was revoked reached the
    agent whole, metadata included."""
    revoked = threading.Event()

    def slow_head(connection: socket.socket, forwarded: Forwarded) -> None:
        revoked.wait(10)
        time.sleep(PAST_THE_NEXT_CHECK)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nx-amz-request-id: slow\r\nx-amz-meta-secret: s3cr3t\r\n"
            b"Content-Length: 1234\r\nConnection: close\r\n\r\n"
        )

    upstream = RecordingUpstream(slow_head)
    try:
        stack = make_stack(upstream=upstream.url)
        key = f"in-flight/{uuid.uuid4().hex}"
        grant = stack.grant(["s3:GetObject"], [object_arn(key)])
        url = f"{stack.aws_url}/reports/{key}"
        head = sign("HEAD", url, credentials=credentials_of(grant.creds))
        revoking = threading.Timer(0.3, lambda: (revoke(stack, grant), revoked.set()))
        revoking.start()
        response = httpx.head(url, headers=head, timeout=10)
        revoking.join()
    finally:
        upstream.close()
    assert response.status_code == 403
    assert "x-amz-meta-secret" not in response.headers
    record = outcome(stack, grant.id)
    assert record.data["status"] == 403
    assert record.data["error"] == f"stopped before the answer: grant {grant.id} was revoked"


def test_a_chunked_upload_whose_end_comes_after_revocation_is_not_completed(
    stack: Stack,
) -> None:
    """Found in review: every piece of a chunked body came while the grant was live, and its
    end (the last, empty chunk) after it was revoked: the end was forwarded unchecked and the
    upload completed."""
    key = f"in-flight/{uuid.uuid4().hex}"
    grant = stack.grant(["s3:PutObject"], [object_arn(key)])
    host = stack.aws_url.removeprefix("http://")
    _, headers = sign_by_hand(
        "PUT",
        host,
        f"/reports/{key}",
        creds=grant.creds,
        service="s3",
        payload_line="UNSIGNED-PAYLOAD",
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )

    def pieces_then_revocation() -> Iterator[bytes]:
        yield PIECE
        yield PIECE
        revoke(stack, grant)
        time.sleep(PAST_THE_NEXT_CHECK)  # httpx sends the body's end only after this

    response = httpx.put(
        f"{stack.aws_url}/reports/{key}", headers=headers, content=pieces_then_revocation()
    )

    assert response.status_code == 403, response.text
    assert not stored(stack, key)
    assert "stopped mid-body" in outcome(stack, grant.id).data["error"]
