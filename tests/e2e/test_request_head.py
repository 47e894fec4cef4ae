"""A request's head (request line and headers) has a ceiling on both listeners.

httptools, uvicorn's fast parser, keeps every header byte until the blank line: before the fix
one unauthenticated connection sending four 128 MiB headers took jitgate from 157 to 1,294 MiB
(found by review). Now the connection is answered and closed once its head passes 64 KiB.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jitgate.audit.flood import FailureThrottle
from jitgate.audit.log import StoredEvent
from jitgate.bounded_http import MAX_HEAD_BYTES, MAX_HEADERS
from jitgate.clock import SystemClock

from .conftest import Stack, object_arn, self_signed_certificate
from .wire import read_until_closed

pytestmark = pytest.mark.slow


HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
# A chunked body whose trailer section never ends: httptools reports trailers as headers.
TRAILER = b"POST /v1/grants HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"


def send_endless_header(
    url: str, start: bytes = HEAD, piece: bytes = b"a" * 16384
) -> tuple[int, bytes]:
    """Send ``start``, then ``piece`` again and again, until the server hangs up.

    Returns how many bytes got out, and the answer. The count includes what the kernel
    buffered on both sides (up to tens of MiB on loopback while the server is busy), so it
    shows only that the server hung up long before the 64 MiB."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(start)
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_until_closed(sock)
    return sent, answer


HUNG_UP_EARLY = 48 * 1024 * 1024


def logged(caplog: pytest.LogCaptureFixture, *lines: str, timeout: float = 5.0) -> bool:
    """Whether the server logged any of ``lines``: it logs from its own thread, and a client can
    see its connection end (by an early answer's close) before that line is written."""
    deadline = time.monotonic() + timeout
    while not any(line in caplog.text for line in lines):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def refused_at_the_cap(caplog: pytest.LogCaptureFixture) -> bool:
    return logged(caplog, f"larger than {MAX_HEAD_BYTES} bytes")


def test_an_endless_header_is_cut_off_on_the_aws_endpoint(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    sent, answer = send_endless_header(stack.aws_url)
    assert sent < HUNG_UP_EARLY
    assert refused_at_the_cap(caplog)
    if answer:  # the answer races the reset that unread bytes cause; when it arrives, it says:
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"<Code>RequestHeaderSectionTooLarge</Code>" in answer


def test_an_endless_header_is_cut_off_on_the_control_plane(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    sent, answer = send_endless_header(stack.control_url)
    assert sent < HUNG_UP_EARLY
    assert refused_at_the_cap(caplog)
    if answer:
        assert answer.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(
    "piece",
    [b"a" * 16384, b"X-T: " + b"t" * 100 + b"\r\n"],
    ids=["one-endless-trailer", "endless-trailers"],
)
def test_an_endless_trailer_section_is_cut_off(
    stack: Stack, piece: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    for url in (stack.control_url, stack.aws_url):
        caplog.clear()
        start = TRAILER if piece.startswith(b"X-T") else TRAILER + b"X-Pad: "
        sent, _ = send_endless_header(url, start, piece * (16384 // len(piece) or 1))
        assert sent < HUNG_UP_EARLY, url
        # endless small trailers reach the header count first
        cap = f"larger than {MAX_HEAD_BYTES} bytes"
        assert logged(caplog, cap, f"more than {MAX_HEADERS} headers"), url


def test_heads_up_to_the_limit_and_large_bodies_still_go_through(stack: Stack) -> None:
    grant = stack.grant(["s3:PutObject", "s3:GetObject"], [object_arn("head-limit.bin")])
    s3 = stack.client("s3", grant.creds)
    metadata = {f"k{i}": "v" * 900 for i in range(8)}  # ~7 KiB of user metadata, AWS's most
    body = b"b" * (3 * 1024 * 1024)  # arrives in the same socket reads as its headers
    s3.put_object(Bucket="reports", Key="head-limit.bin", Body=body, Metadata=metadata)
    assert s3.get_object(Bucket="reports", Key="head-limit.bin")["Body"].read() == body
    assert MAX_HEAD_BYTES >= 32 * 1024


# --- refused heads are on the record ------------------------------------------------------------
TOO_MANY_HEADERS = b"GET /reports/x HTTP/1.1\r\nHost: x\r\n" + b"X-N: 1\r\n" * (MAX_HEADERS + 1)
NOT_HTTP = b"\x16\x03\x01 this is no request line\r\n\r\n"


def refused(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        return read_until_closed(sock)


def recorded(stack: Stack, types: list[str], count: int) -> list[StoredEvent]:
    deadline = time.monotonic() + 10
    while True:
        events = stack.core.audit.events(types=types, limit=100)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_requests_refused_before_the_app_are_recorded_and_a_flood_of_them_counted(
    make_stack: Callable[..., Stack],
) -> None:
    """Before the fix a refused head left no trace in the audit log: anyone could probe or
    hammer either listener with oversized or garbled requests and nothing said so."""
    window = 3.0
    stack = make_stack(
        failures=FailureThrottle(
            SystemClock(), listener="aws", per_source=3, overall=100, window_seconds=window
        )
    )
    started = time.monotonic()
    answers = [refused(stack.aws_url, TOO_MANY_HEADERS) for _ in range(3)]
    answers += [refused(stack.aws_url, NOT_HTTP) for _ in range(2)]
    assert time.monotonic() - started < window, "too slow to test one window"
    assert all(a.startswith(b"HTTP/1.1 400 ") for a in answers), answers
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in answers[0]

    denied = recorded(stack, ["call.denied"], 3)
    assert [e.data["code"] for e in denied] == ["RequestHeaderSectionTooLarge"] * 3
    for event in denied:
        assert event.actor == "anonymous" and event.agent is None and event.grant_id is None
        assert event.data["source"] == "127.0.0.1"
        assert f"more than {MAX_HEADERS} headers" in event.data["message"]
    # Past the source's limit the rest are counted, and the count is written when the window ends.
    (summary,) = recorded(stack, ["denials.suppressed"], 1)
    assert summary.data["listener"] == "aws" and summary.data["source"] == "127.0.0.1"
    assert summary.data["codes"] == {"BadRequest": 2}

    # The control plane's refusals are recorded too.
    answer = refused(stack.control_url, NOT_HTTP)
    assert answer.startswith(b"HTTP/1.1 400 ")
    (event,) = recorded(stack, ["request.refused"], 1)
    assert event.actor == "anonymous"
    assert event.data["code"] == "BadRequest" and event.data["source"] == "127.0.0.1"
    assert "not HTTP" in event.data["message"]


def test_refusals_on_a_tls_listener_are_recorded_too(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """The refusal happens inside the TLS session, as on a plain listener: the caller gets S3's
    error and the audit log gets the anonymous denial."""
    stack = make_stack(tls=self_signed_certificate(tmp_path))
    parts = urlsplit(stack.aws_url)
    assert parts.hostname is not None and parts.port is not None and stack.ca_file is not None
    context = ssl.create_default_context(cafile=stack.ca_file)
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as sock,
    ):
        sock.sendall(TOO_MANY_HEADERS)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in answer
    (denied,) = recorded(stack, ["call.denied"], 1)
    assert denied.actor == "anonymous" and denied.data["source"] == "127.0.0.1"
    assert denied.data["code"] == "RequestHeaderSectionTooLarge"


# A request asking to switch protocols, whose body (by Content-Length, as any proxy in front
# frames it) is a whole request of its own.
SMUGGLED = b"GET /reports/smuggled.txt HTTP/1.1\r\nHost: x\r\n\r\n"
UPGRADE = (
    b"GET /reports/a.txt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
)


@pytest.mark.parametrize("same_read", [True, False], ids=["body in the same read", "body later"])
def test_a_request_to_switch_protocols_is_refused_and_its_body_never_parsed(
    stack: Stack, same_read: bool
) -> None:
    """Found in review: uvicorn answered an Upgrade request as plain HTTP while httptools
    stopped framing the connection, so its body was dropped, or, sent later, parsed and
    forwarded as a request of its own: a desync with any proxy in front."""
    parts = urlsplit(stack.aws_url)
    assert parts.hostname is not None and parts.port is not None
    kinds = ["call.denied", "call.allowed"]
    before = len(stack.core.audit.events(types=kinds, limit=1000))
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        if same_read:
            sock.sendall(UPGRADE + SMUGGLED)
        else:
            sock.sendall(UPGRADE)
            time.sleep(0.3)
            with contextlib.suppress(OSError):  # the server may have hung up already
                sock.sendall(SMUGGLED)
        answer = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<Code>BadRequest</Code>" in answer and b"switch protocols" in answer
    deadline = time.monotonic() + 10
    while len(stack.core.audit.events(types=kinds, limit=1000)) <= before:
        assert time.monotonic() < deadline, "the refusal was not recorded"
        time.sleep(0.05)
    (event,) = stack.core.audit.events(types=kinds, limit=1, newest_first=True)
    assert event.data["code"] == "BadRequest" and "switch protocols" in event.data["message"]
    time.sleep(0.3)  # a second request, had it been parsed, would be recorded by now
    assert len(stack.core.audit.events(types=kinds, limit=1000)) == before + 1


def test_the_control_plane_refuses_a_switch_of_protocols_too(stack: Stack) -> None:
    answer = refused(stack.control_url, UPGRADE.replace(b"/reports/a.txt", b"/healthz"))
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
    assert b"switch protocols" in answer


# ("chunked, chunked" and a Content-Length beside it httptools refuses in the head itself.)
@pytest.mark.parametrize("coding", [b"xchunked", b"gzip, chunked", b"identity", b"chunked2"])
def test_a_transfer_encoding_other_than_chunked_is_refused_before_the_app(
    stack: Stack, coding: bytes
) -> None:
    """Found in review: httptools refused such a body only once it began, after the call was
    recorded as allowed and its head sent upstream; the client then got no answer at all."""
    request = (
        b"PUT /reports/a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    answer = refused(stack.aws_url, request)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
    assert b"Transfer-Encoding other than chunked" in answer


def test_chunked_in_any_case_still_goes_through_to_the_checks(stack: Stack) -> None:
    request = (
        b"PUT /reports/a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    answer = refused(stack.aws_url, request)  # unsigned: refused by the checks, not the parser
    assert answer.startswith(b"HTTP/1.1 403 ") or answer.startswith(b"HTTP/1.1 400 ")
    assert b"Transfer-Encoding other than chunked" not in answer
