"""The listeners' HTTP protocol refuses heads that would make jitgate keep what a client sends.

Each case here was an attack found in review, written as a test before the fix: many tiny
headers (memory ~22x the bytes sent), heads that never end (connections held for ever), and
pipelined requests that queue without limit (20 connections grew jitgate by 1.4 GiB). A plain
ASGI app behind the real protocol (uvicorn in a thread) is the server; a raw socket the client.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from e2e.wire import read_until_closed
from jitgate.bounded_http import (
    MAX_HEADERS,
    MAX_PIPELINED,
    AwsBoundedHeadProtocol,
    BoundedHeadProtocol,
)
from jitgate.sandbox.moto import free_port

RELEASE = threading.Event()  # /slow answers once this is set
HEARD_LEFT = threading.Event()  # /stream heard that its client left


async def app(scope: dict, receive: object, send: object) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/slow":
        while not RELEASE.is_set():
            await _sleep()
    if scope["path"] == "/stream":
        await stream_until_the_client_leaves(receive, send)
        return
    sizes = {"/big": 1024 * 1024, "/mid": 300 * 1024}
    body = b"b" * sizes[scope["path"]] if scope["path"] in sizes else scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,  # type: ignore[operator]
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


async def _sleep() -> None:
    await asyncio.sleep(0.01)


async def stream_until_the_client_leaves(receive: Any, send: Any) -> None:
    async def client_left() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    left = asyncio.ensure_future(client_left())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while not left.done():
        await send({"type": "http.response.body", "body": b"s" * 4096, "more_body": True})
        await asyncio.sleep(0.005)
    HEARD_LEFT.set()


class SlowLink:
    """Small socket buffers on the server's side, as over a WAN: what a client does not read
    stays in the server's own buffer (loopback's kernel buffers would swallow megabytes)."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # /mid (300 KiB) then never fills the buffer enough to pause writing
        transport.set_write_buffer_limits(high=1024 * 1024)
        super().connection_made(transport)  # type: ignore[misc]


class QuickHeadTimeout(SlowLink, BoundedHeadProtocol):
    head_timeout_seconds = 0.3
    write_stall_seconds = 0.5


class QuickHeadTimeoutAws(SlowLink, AwsBoundedHeadProtocol):
    head_timeout_seconds = 0.3
    write_stall_seconds = 0.5


def _serve(protocol: type) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=protocol,
        log_level="critical",
        lifespan="off",
        loop="asyncio",  # where writing to a closed connection fails silently, unlike uvloop
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def control_port() -> Iterator[int]:
    yield from _serve(QuickHeadTimeout)


@pytest.fixture(scope="module")
def aws_port() -> Iterator[int]:
    yield from _serve(QuickHeadTimeoutAws)


@pytest.fixture(autouse=True)
def _released() -> Iterator[None]:
    RELEASE.clear()
    yield
    RELEASE.set()


def exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` and read until the server closes; a server that never does fails."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        if data:
            sock.sendall(data)
        try:
            return read_until_closed(sock)
        except TimeoutError:
            pytest.fail(f"the connection was still open after {wait} s")


def head(headers: int) -> bytes:
    lines = b"".join(b"h%d:\r\n" % i for i in range(headers))
    return b"GET /ok HTTP/1.1\r\nHost: x\r\n" + lines + b"Connection: close\r\n\r\n"


def test_a_head_with_too_many_headers_is_refused(control_port: int, aws_port: int) -> None:
    answer = exchange(control_port, head(MAX_HEADERS + 50))
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"more than %d headers" % MAX_HEADERS in answer
    answer = exchange(aws_port, head(MAX_HEADERS + 50))
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in answer


def test_a_head_within_the_header_limit_is_answered(control_port: int) -> None:
    answer = exchange(control_port, head(MAX_HEADERS - 10))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"/ok")


def test_a_head_that_stops_arriving_is_timed_out(control_port: int, aws_port: int) -> None:
    answer = exchange(control_port, b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Half: ")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"no complete request head within 0.3 s" in answer
    answer = exchange(aws_port, b"GET /ok HTTP/1.1\r\nHost")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<Code>RequestTimeout</Code>" in answer


def test_a_connection_that_sends_nothing_is_closed_quietly(control_port: int) -> None:
    assert exchange(control_port, b"") == b""


def test_a_connection_kept_alive_between_requests_still_works(control_port: int) -> None:
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        for path in (b"/a", b"/b"):
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            answer = sock.recv(65536)
            while not answer.endswith(path) and len(answer) < 1024:  # head and body may part
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(path)
            time.sleep(0.5)  # longer than the head timeout: only an unfinished head is timed


def test_too_many_pipelined_requests_close_the_connection(control_port: int) -> None:
    tiny = b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(control_port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + tiny * 2000)
    assert answer == b""  # closed without answering: the in-flight answer would come first


def test_a_few_pipelined_requests_are_answered_in_order(control_port: int) -> None:
    tiny = [
        b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(MAX_PIPELINED - 1)
    ]  # + /end: a full queue
    last = b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    RELEASE.set()
    answer = exchange(
        control_port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + b"".join(tiny) + last
    )
    paths = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert paths == [b"/slow", *[b"/p%d" % i for i in range(MAX_PIPELINED - 1)], b"/end"]


def test_a_client_that_leaves_is_heard_by_the_request_in_flight_behind_a_pipelined_one(
    control_port: int,
) -> None:
    HEARD_LEFT.clear()
    pipelined = b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /p HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        sock.sendall(pipelined)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert HEARD_LEFT.wait(5), "the streaming request never heard that its client left"


def test_a_bare_line_break_after_an_answer_does_not_hold_the_connection(
    control_port: int, aws_port: int
) -> None:
    """Bytes cancel uvicorn's keep-alive timer, but a CRLF between requests begins no message:
    one answered request and two bytes held a connection for ever (found in review)."""
    for port in (control_port, aws_port):
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
            while not answer.endswith(b"/ok"):
                answer += sock.recv(65536)
            sock.sendall(b"\r\n")  # after the answer: uvicorn's keep-alive timer is off
            try:  # well within uvicorn's 5 s keep-alive
                assert sock.recv(65536) == b""  # closed quietly: no request had begun
            except TimeoutError:
                pytest.fail("the connection was still open after 3 s")


def test_a_client_that_never_reads_its_answers_is_cut_off(control_port: int) -> None:
    """uvicorn waits for the client to read with no time limit: sending requests and never
    reading held a connection, and megabytes of buffers, for ever (found in review)."""
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 8)
        poller = select.poll()
        poller.register(sock, select.POLLERR | select.POLLHUP | select.POLLRDHUP)
        events = poller.poll(10_000)  # reading nothing meanwhile
        assert events, "the connection was still open after 10 s"


@pytest.mark.parametrize(
    ("then", "never_written"),
    [
        # a pipelined head over the limits got its 431 written into the streaming body
        (head(MAX_HEADERS + 50), b"HTTP/1.1 431"),
        # uvicorn answered bytes that are not HTTP with its 400 there, or instead of the answer
        (b"\x00\x01 this is not HTTP\r\n\r\n", b"400 Bad Request"),
    ],
    ids=["too-many-headers", "not-http"],
)
def test_a_refusal_is_never_written_into_an_answer_under_way(
    control_port: int, then: bytes, never_written: bytes
) -> None:
    """Found in review: the connection is closed instead."""
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
        sock.sendall(then)
        answer = read_until_closed(sock, answer)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert never_written not in answer


def test_a_closed_connection_with_an_unread_answer_is_not_kept(control_port: int) -> None:
    """uvicorn closes a connection-close answer once written; with less still to send than
    pauses writing, to a client that reads nothing, no timer ran and the connection stayed for
    ever (found in review)."""
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /mid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        poller = select.poll()
        poller.register(sock, select.POLLERR | select.POLLHUP)
        assert poller.poll(5_000), "the connection was still open after 5 s"


def test_a_client_that_reads_slowly_but_steadily_is_not_cut_off(control_port: int) -> None:
    """The stall clock ran from the moment writing paused, however much the client was
    reading: a steady slow reader was reset (found in review)."""
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = 0
        started = time.monotonic()
        while chunk := sock.recv(16384):
            received += len(chunk)
            time.sleep(0.01)  # the megabyte takes longer than the 0.5 s stall
    assert received > 1024 * 1024
    assert time.monotonic() - started > 0.5


def test_the_rest_of_a_body_answered_early_gets_no_408(control_port: int) -> None:
    """Bytes after a complete answer started the head clock, which then answered 408 on a
    connection whose request had been answered (found in review): closed quietly instead."""
    with socket.create_connection(("127.0.0.1", control_port), timeout=5) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        answer = sock.recv(65536)
        while not answer.endswith(b"early"):
            answer += sock.recv(65536)
        sock.sendall(b"12345")  # half the body the answer did not wait for
        rest = read_until_closed(sock)
    assert b"408" not in rest


REPORTS: list[tuple[str, str, str]] = []  # what the reporting listener told its recorder


@pytest.fixture(scope="module")
def reporting_port() -> Iterator[int]:
    yield from _serve(QuickHeadTimeout.reporting_to(lambda *report: REPORTS.append(report)))


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        (head(MAX_HEADERS + 1), "RequestHeaderSectionTooLarge"),
        (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Half: ", "RequestTimeout"),
        (
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n" * 200,
            "TooManyPipelinedRequests",
        ),
        (b"\x16\x03\x01 no request line\r\n\r\n", "BadRequest"),
        (b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 70_000, "RequestHeaderSectionTooLarge"),
        (b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03 not http\r\n\r\n", "BadRequest"),
        (b"", None),  # silence: no request, nothing to record
        (b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", None),  # answered
    ],
    ids=[
        "too-many-headers",
        "head-timed-out",
        "pipelined",
        "not-http",
        "head-too-large",
        "not-http-while-answering",
        "silent",
        "answered",
    ],
)
def test_every_refused_request_is_reported_and_nothing_else(
    reporting_port: int, sent: bytes, code: str | None
) -> None:
    """The listener's recorder hears of each request it refused, from where and why; before
    the fix refusals were only logged, so the audit log had no trace of them."""
    REPORTS.clear()
    exchange(reporting_port, sent)  # the report is made before the close that ends this
    assert [(source, got) for source, got, _ in REPORTS] == ([("127.0.0.1", code)] if code else [])
    if code:
        assert REPORTS[0][2]  # says what was wrong
