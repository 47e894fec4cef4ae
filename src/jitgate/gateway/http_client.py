"""The gateway's HTTP/1.1 client for upstream calls (decision D13).

Pooled keep-alive connections, one exchange at a time on each (no pipelining); request and
response bodies streamed with flow control both ways; responses parsed by httptools (llhttp,
the parser uvicorn already runs on the other side of the gateway). It replaces aiohttp's client
on the hot path: the benchmark measured aiohttp's request path at about 60% of a bare hop's
CPU per call, and it hid what the gateway needs to know (a refused request body surfaced as a
connection error; an upstream that ignores ``Expect: 100-continue`` hung the upload).

What it refuses to do, failing the call rather than guessing:
- send a header or request target that holds CR, LF or NUL (no request smuggling upstream);
- send a streamed body whose length differs from its declared Content-Length;
- keep a connection whose exchange did not end cleanly (the body unread, the request body not
  all sent, an answer that came early, bytes the upstream sent while nobody asked);
- accept more than ``MAX_RESPONSE_HEADERS`` response headers or a malformed response.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httptools

from jitgate.gateway.proxy import Proxy, ProxySettings

MAX_RESPONSE_HEADERS = 256
_ONE_WRITE = 64 * 1024  # a body held in memory up to this size goes out with its head
MAX_HEAD_BYTES = 64 * 1024  # a response head (1xx heads included) larger than this is refused
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # a token (RFC 9110 5.6.2)
_TOKEN = re.compile(_TCHARS)
# Header names joined by ":" (which no token holds): all checked in one match.
_TOKENS = re.compile(f"{_TCHARS}(?::{_TCHARS})*")
# A response body buffered beyond this stops reading from the socket until the caller takes it.
READ_HIGH_WATER = 512 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
_FORBIDDEN_IN_TARGET = (" ", "\t", "\r", "\n", "\x00")
# Framing is the client's own: these are never taken from the caller's headers.
_CLIENT_OWNED = frozenset(
    {"host", "content-length", "transfer-encoding", "expect", "connection", "proxy-authorization"}
)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?")


class UpstreamError(Exception):
    """The upstream could not be reached, broke off, or did not speak HTTP/1.1 correctly."""


class MalformedAnswer(UpstreamError):
    """The upstream's answer broke HTTP/1.1 (``headers``: the ones read before it did)."""

    def __init__(self, message: str, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message)
        self.headers = headers

    def header(self, name: str) -> str | None:
        return _first(self.headers, name)


@dataclass(frozen=True)
class Origin:
    scheme: str  # "http" or "https"
    host: str  # a name or address, without the port
    port: int

    @classmethod
    def parse(cls, scheme: str, host_port: str) -> Origin:
        """``host_port`` as sent in a Host header: "name", "name:port", "[v6]:port"."""
        host, port = host_port, default_port(scheme)
        if host_port.startswith("["):
            end = host_port.find("]")
            host, rest = host_port[1:end], host_port[end + 1 :]
            if rest.startswith(":"):
                port = int(rest[1:])
        elif host_port.count(":") == 1:
            host, _, number = host_port.partition(":")
            port = int(number)
        return cls(scheme, host, port)

    @property
    def authority(self) -> str:
        """ "host:port", an IPv6 address in brackets (CONNECT, absolute-form targets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        """What a Host header names: the authority, without the port when it is the scheme's."""
        if self.port == default_port(self.scheme):
            return f"[{self.host}]" if ":" in self.host else self.host
        return self.authority


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class Response:
    """The head of the upstream's final answer; its body is read piece by piece."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = connection.status
        self.raw_headers: list[tuple[bytes, bytes]] = connection.headers
        self.content_length = connection.content_length

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as Latin-1."""
        return _first(self.raw_headers, name)

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body as soon as any are here; b"" once it has ended."""
        return await self._connection.read_body(limit)

    @property
    def at_end(self) -> bool:
        """The whole body has arrived and been read (the next ``read`` returns b"")."""
        return self._connection.complete and not self._connection._chunks

    def close(self) -> None:
        """Stop reading: the rest of the body is not fetched and the connection is closed."""
        self._connection.discard()


def _first(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


class HttpClient:
    def __init__(
        self,
        *,
        limit: int = 256,
        pool_wait_seconds: float = 30.0,
        connect_seconds: float = 10.0,
        read_seconds: float = 300.0,
        keepalive_seconds: float = 30.0,
        continue_wait_seconds: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: ProxySettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.pool_wait_seconds = pool_wait_seconds  # waiting for a free connection slot
        self.connect_seconds = connect_seconds
        self.read_seconds = read_seconds  # the longest silence while the upstream owes bytes
        self.keepalive_seconds = keepalive_seconds  # an idle connection is not reused after
        self.continue_wait_seconds = continue_wait_seconds
        self._ssl_context = ssl_context
        self._proxies = proxies if proxies else None  # None: every origin directly
        self._monotonic = monotonic
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False
        self.opened = 0  # connections opened (for tests and the benchmark)

    def exchange(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: dict[str, str],
        body: bytes | AsyncIterator[bytes] | None = None,
        *,
        expect_continue: bool = False,
    ) -> _Exchange:
        """``async with client.exchange(...) as response``: the connection goes back to the
        pool on leaving only if the whole exchange ended cleanly."""
        return _Exchange(self, method, origin, target, headers, body, expect_continue)

    async def close(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.discard()
        self._idle.clear()

    # --- connections ----------------------------------------------------------------------------
    async def _acquire(self, origin: Origin) -> _Connection:
        if self._closed:
            raise UpstreamError("the upstream client is closed")
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.pool_wait_seconds):
                    await self._slots.acquire()
            except TimeoutError:
                raise UpstreamError(
                    f"all {self.limit} upstream connections stayed busy for "
                    f"{self.pool_wait_seconds:g} s"
                ) from None
        else:
            await self._slots.acquire()
        try:
            return self._pooled(origin) or await self._connect(origin)
        except BaseException:
            self._slots.release()
            raise

    def _pooled(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest_kept = self._monotonic() - self.keepalive_seconds
        while idle:
            connection = idle.pop()  # the most recently used first: the least likely closed
            if connection.usable_idle and connection.idle_since >= oldest_kept:
                return connection
            connection.discard()
        return None

    def proxy_for(self, origin: Origin) -> Proxy | None:
        """The egress proxy that reaches ``origin`` (None: connect to it directly)."""
        if self._proxies is None:
            return None
        return self._proxies.for_origin(origin.scheme, origin.host, origin.port)

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context
        proxy = self.proxy_for(origin)
        where = origin.authority + (f" through {proxy.shown}" if proxy else "")
        try:
            async with asyncio.timeout(self.connect_seconds):
                if proxy is None:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self.read_seconds),
                        origin.host,
                        origin.port,
                        ssl=context,
                        server_hostname=origin.host if context is not None else None,
                    )
                elif context is None:  # absolute-form requests to the proxy (_request_head)
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self.read_seconds), proxy.host, proxy.port
                    )
                else:
                    connection = await self._tunnel(loop, origin, proxy, context)
        except TimeoutError:
            raise UpstreamError(
                f"connecting to {where} took over {self.connect_seconds:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect to {where}: {exc}") from None
        self.opened += 1
        return connection

    async def _tunnel(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        proxy: Proxy,
        context: ssl.SSLContext,
    ) -> _Connection:
        """A CONNECT tunnel through ``proxy``, then TLS to the origin inside it (the proxy
        sees the host name and encrypted bytes, nothing else)."""
        handshake = _TunnelHandshake(loop.create_future())
        transport, _ = await loop.create_connection(lambda: handshake, proxy.host, proxy.port)
        try:
            transport.write(_connect_request(origin, proxy))
            status, reason = await handshake.answer
            if status != 200:
                raise UpstreamError(
                    f"the proxy {proxy.shown} refused to connect to {origin.authority}:"
                    f" {status} {reason}"
                )
            connection = _Connection(self.read_seconds)
            tls = await loop.start_tls(transport, connection, context, server_hostname=origin.host)
            if tls is None:  # pragma: no cover - only when the loop is closing
                raise UpstreamError("the event loop closed while starting TLS")
            connection.connection_made(tls)
            return connection
        except BaseException:
            transport.abort()
            raise

    def _release(self, origin: Origin, connection: _Connection) -> None:
        self._slots.release()
        if self._closed or not connection.reusable():
            connection.discard()
            return
        connection.idle_since = self._monotonic()
        connection.park()
        self._idle.setdefault(origin, []).append(connection)
        oldest_kept = connection.idle_since - self.keepalive_seconds
        for idle in self._idle.values():  # a few origins: one per service and region used
            while idle and (not idle[0].usable_idle or idle[0].idle_since < oldest_kept):
                idle.pop(0).discard()


class _Exchange:
    def __init__(
        self,
        client: HttpClient,
        method: str,
        origin: Origin,
        target: str,
        headers: dict[str, str],
        body: bytes | AsyncIterator[bytes] | None,
        expect_continue: bool,
    ) -> None:
        self._client = client
        self._method = method
        self._origin = origin
        self._target = target
        self._headers = headers
        self._body = body
        self._expect_continue = expect_continue and body is not None and not isinstance(body, bytes)
        self._connection: _Connection | None = None
        self._body_touched = False

    async def __aenter__(self) -> Response:
        origin = self._origin
        head, length = _request_head(
            self._method,
            origin,
            self._target,
            self._headers,
            self._body,
            self._expect_continue,
            # An http origin behind a proxy is asked in absolute form (https tunnels instead).
            self._client.proxy_for(origin) if origin.scheme == "http" else None,
        )
        connection = await self._client._acquire(self._origin)
        self._connection = connection
        try:
            try:
                await self._send(connection, head, length)
            except UpstreamError:
                if not self._may_retry(connection):
                    raise
                # A pooled connection the upstream had already closed (its FIN not yet seen):
                # nothing was answered, and a body held in memory can be sent again, once, on
                # a new connection (as the AWS SDKs would retry it).
                connection.discard()
                connection = await self._client._connect(self._origin)
                self._connection = connection
                await self._send(connection, head, length)
        except BaseException:
            self._finish(abort=True)
            raise
        return Response(connection)

    async def _send(self, connection: _Connection, head: bytes, length: int | None) -> None:
        connection.begin(self._method == "HEAD")
        body = self._body
        if isinstance(body, bytes):
            if len(body) <= _ONE_WRITE:
                connection.write(head + body)  # one system call for a small request
            else:
                connection.write(head)
                connection.write(body)
            connection.sent_all = True
        elif body is None:
            connection.write(head)
            connection.sent_all = True
        else:
            connection.write(head)
            if self._expect_continue:
                await connection.wait_for_continue(self._client.continue_wait_seconds)
            if not connection.head_done:
                self._body_touched = True
                await connection.send_stream(body, length)
            if not connection.sent_all:
                await _close_iterator(body)
        await connection.wait_for_head()

    def _may_retry(self, connection: _Connection) -> bool:
        return (
            self._method in _IDEMPOTENT
            and not self._body_touched
            and connection.exchanges > 1
            and not connection.answered
            and not isinstance(connection.failure, MalformedAnswer)
        )

    async def __aexit__(self, *exc_info: object) -> None:
        self._finish(abort=exc_info[0] is not None)

    def _finish(self, *, abort: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if abort:
            connection.discard()
        self._client._release(self._origin, connection)


def _request_head(
    method: str,
    origin: Origin,
    target: str,
    headers: dict[str, str],
    body: bytes | AsyncIterator[bytes] | None,
    expect_continue: bool,
    proxy: Proxy | None = None,
) -> tuple[bytes, int | None]:
    """The request line and headers, and the body's declared length (None: chunked).

    With ``proxy`` (an http origin reached through it): the target in absolute form and the
    proxy's credentials."""
    if not _TOKEN.fullmatch(method):
        raise UpstreamError(f"refusing to send method {method[:32]!r}")
    if headers and not _TOKENS.fullmatch(":".join(headers)):
        bad = next(name for name in headers if not _TOKEN.fullmatch(name))
        raise UpstreamError(f"refusing to send header name {bad[:64]!r}")
    if not target.startswith("/") or any(c in target for c in _FORBIDDEN_IN_TARGET):
        raise UpstreamError(f"refusing to send request target {target[:80]!r}")
    host = headers.get("host")  # as the caller signed it
    if host is None:
        host = origin.host_header
    lines = [f"host: {host}"]
    if proxy is not None:
        target = f"http://{origin.authority}{target}"
        if proxy.authorization is not None:
            lines.append(f"proxy-authorization: {proxy.authorization}")
    length: int | None = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _CLIENT_OWNED:
            if lowered == "content-length":
                length = _content_length(value)
            continue
        lines.append(f"{name}: {value}")
    if isinstance(body, bytes):
        length = len(body)
    elif body is None:
        if length not in (None, 0):
            raise UpstreamError(f"a request without a body cannot declare {length} bytes")
        if length is None and method not in ("GET", "HEAD"):
            length = 0
    if length is not None:
        lines.append(f"content-length: {length}")
    elif body is not None:
        lines.append("transfer-encoding: chunked")
    if expect_continue:
        lines.append("expect: 100-continue")
    text = "\r\n".join(lines) + "\r\n\r\n"
    breaks = len(lines) + 1
    if text.count("\n") != breaks or text.count("\r") != breaks or "\x00" in text:
        bad = next(line for line in lines if any(c in line for c in "\r\n\x00"))
        raise UpstreamError(
            f"refusing to send header {bad.split(':', 1)[0][:64]!r}: it holds CR, LF or NUL"
        )
    request_line = f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
    return request_line + text.encode("utf-8"), length


def _connect_request(origin: Origin, proxy: Proxy) -> bytes:
    authority = origin.authority
    if any(c in authority for c in _FORBIDDEN_IN_TARGET):
        raise UpstreamError(f"refusing to ask a proxy for {authority[:80]!r}")
    lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _TunnelHandshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: its status, and nothing after its head."""

    def __init__(self, answer: asyncio.Future[tuple[int, str]]) -> None:
        self.answer = answer
        self._head = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return  # bytes before our TLS hello: the handshake that follows fails on them
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD_BYTES:
                self._settle(
                    UpstreamError(f"the proxy's answer head is over {MAX_HEAD_BYTES} bytes")
                )
            return
        line = self._head[: self._head.find(b"\r\n")]
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            self._settle(UpstreamError("the proxy did not answer CONNECT in HTTP/1.1"))
        elif end + 4 != len(self._head) and match.group(1) == b"200":
            self._settle(UpstreamError("the proxy sent bytes after accepting CONNECT"))
        else:
            reason = (match.group(2) or b"").decode("latin-1")
            shown = "".join(c if c.isprintable() else "?" for c in reason[:80])
            self.answer.set_result((int(match.group(1)), shown))

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(UpstreamError("the proxy closed the connection before answering CONNECT"))

    def _settle(self, error: UpstreamError) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


def _content_length(value: str) -> int:
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise UpstreamError(f"refusing to send content-length {value[:32]!r}")
    return int(value)


async def _close_iterator(body: AsyncIterator[bytes]) -> None:
    closer = getattr(body, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


class _Connection(asyncio.Protocol):
    """One upstream connection and the exchange in progress on it (httptools' callbacks)."""

    def __init__(self, read_seconds: float) -> None:
        self._read_seconds = read_seconds
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self.failure: UpstreamError | None = None  # why this connection cannot go on
        self.closed = False
        self.active = False  # an exchange is under way (bytes from the upstream are expected)
        self.idle_since = 0.0
        self.exchanges = 0  # exchanges begun on this connection, the current one included
        self._loop: asyncio.AbstractEventLoop | None = None  # set when connected
        # Monotonic time of the upstream's last sign of life, or of a wait's start.
        self._progress = 0.0
        self._waiting_for: str | None = None  # what a wait timed by the watchdog waits for
        self._stalled: str | None = None  # why the watchdog failed a wait
        self._watchdog: asyncio.TimerHandle | None = None
        self._reset(head_only=False)

    def _reset(self, *, head_only: bool) -> None:
        self._head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self._chunked = False
        self._keep_alive = False
        self.got_continue = False
        self.head_done = False  # the final (non-1xx) head has arrived
        self.complete = False  # the whole final answer has arrived
        self.sent_all = False  # the whole request has been written
        self.answered = False  # the upstream sent a byte of its answer
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._head_bytes = 0
        self._moved = False  # the parser delivered a head, body bytes or the end
        self._stalled_bytes = 0  # bytes since it last did: chunk framing and trailers
        self._trailers = 0

    # --- the exchange, as the client drives it ----------------------------------------------------
    def begin(self, head_only: bool) -> None:
        if self._head_only:
            # A HEAD's answer ended with its head; the parser still expects the body its
            # Content-Length announced, so the next answer gets a fresh one.
            self._parser = httptools.HttpResponseParser(self)
        self._reset(head_only=head_only)
        self.active = True
        self.exchanges += 1

    def park(self) -> None:
        """Back in the pool: from now on any byte from the upstream is a protocol error."""
        self.active = False

    @property
    def usable_idle(self) -> bool:
        return not self.closed and self.failure is None

    def reusable(self) -> bool:
        return (
            self.complete
            and self.sent_all
            and self._keep_alive
            and self.failure is None
            and not self.closed
            and not self._chunks
        )

    def write(self, data: bytes) -> None:
        self._check()
        assert self._transport is not None
        self._transport.write(data)

    async def send_stream(self, body: AsyncIterator[bytes], length: int | None) -> None:
        """Write the body as it comes; stop early (keeping the answer) if the upstream answered
        before reading it all. An exception from ``body`` aborts the connection mid-request, so
        the upstream never sees a complete request."""
        sent = 0
        last: bytes | None = None  # the piece that completes the declared length, held back
        async for chunk in body:
            if self.head_done:
                return  # answered early: the rest is not sent, the connection not kept
            if not chunk:
                continue
            sent += len(chunk)
            if length is not None and sent > length:
                raise UpstreamError(f"the request body is longer than its {length} bytes")
            if length is not None and sent == length:
                last = chunk  # written once the body is known to end here
                continue
            self.write(chunk if length is not None else b"%x\r\n%b\r\n" % (len(chunk), chunk))
            while self._write_paused and not self.head_done:
                await self._wait("sending the request body")
        if self.head_done:
            return
        if last is not None:
            self.write(last)
        if length is None:
            self.write(b"0\r\n\r\n")
        elif sent != length:
            raise UpstreamError(f"the request body ended after {sent} of its {length} bytes")
        self.sent_all = True

    async def wait_for_continue(self, seconds: float) -> None:
        """Until the upstream says "100 Continue", answers at once, or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not (self.got_continue or self.head_done):
                    await self._wait("waiting for 100 Continue", timeout=False)

    async def wait_for_head(self) -> None:
        while not self.head_done:
            await self._wait("waiting for the answer")

    async def read_body(self, limit: int) -> bytes:
        while not self._chunks:
            if self.complete:
                return b""
            await self._wait("reading the answer's body")
        piece = self._chunks.popleft()
        if len(piece) > limit:
            self._chunks.appendleft(piece[limit:])
            piece = piece[:limit]
        else:
            pieces = [piece]
            size = len(piece)
            while self._chunks and size + len(self._chunks[0]) <= limit:
                more = self._chunks.popleft()
                pieces.append(more)
                size += len(more)
            if len(pieces) > 1:
                piece = b"".join(pieces)
        self._buffered -= len(piece)
        if self._read_paused and self._buffered < READ_HIGH_WATER // 2:
            self._read_paused = False
            if self._transport is not None and not self.closed:
                self._transport.resume_reading()
        return piece

    def discard(self) -> None:
        """Close the connection (an exchange that did not end cleanly is never reused)."""
        self._shut("the connection was closed by jitgate", graceful=self.complete)

    async def _wait(self, doing: str, *, timeout: bool = True) -> None:
        """Until the upstream does something; ``timeout``: at most read_seconds of silence (the
        connection's watchdog times it, so a wait costs no timer of its own)."""
        self._check()
        assert self._loop is not None, "not connected"
        waiter = self._loop.create_future()
        self._waiter = waiter
        if timeout:
            self._waiting_for = doing
            self._progress = time.monotonic()
        try:
            await waiter
        finally:
            self._waiter = None
            self._waiting_for = None
        if self._stalled is not None:
            raise TimeoutError(self._stalled)
        self._check()

    def _watch(self) -> None:
        """The watchdog: fails a wait that heard nothing for read_seconds, else looks again
        when the current silence would reach that (one timer per connection, not per wait)."""
        self._watchdog = None
        if self.closed or self._loop is None:
            return
        now = time.monotonic()
        due = self._progress + self._read_seconds
        if self._waiting_for is None:
            delay = self._read_seconds / 2  # idle: a wait that starts is seen within this
        elif now >= due:
            self._stalled = (
                f"the upstream sent nothing for {self._read_seconds:g} s while {self._waiting_for}"
            )
            self._fail(self._stalled)
            return
        else:
            delay = max(due - now, 0.001)  # at the deadline (uvloop's timers have 1 ms steps)
        self._watchdog = self._loop.call_later(delay, self._watch)

    def _check(self) -> None:
        if self.failure is not None and not (self.complete or self._chunks):
            raise self.failure

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, why: str | UpstreamError) -> None:
        self._shut(why, graceful=False)
        self._wake()

    def _shut(self, why: str | UpstreamError, *, graceful: bool) -> None:
        """Close for good, keeping the first reason; ``graceful``: let written bytes go."""
        if self.failure is None:
            self.failure = UpstreamError(why) if isinstance(why, str) else why
        if self._transport is not None and not self.closed:
            if graceful:
                self._transport.close()
            else:
                self._transport.abort()
        self.closed = True
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._progress = time.monotonic()
        self._watchdog = self._loop.call_later(self._read_seconds, self._watch)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self._fail("the upstream sent bytes while no request was waiting for them")
            return
        self.answered = True
        self._progress = time.monotonic()
        if not self.head_done:
            self._head_bytes += len(data)
        self._moved = False
        try:
            self._parser.feed_data(data)
            if not self.head_done and self._head_bytes > MAX_HEAD_BYTES:
                why = f"the upstream's answer head is over {MAX_HEAD_BYTES} bytes"
                self._fail(MalformedAnswer(why, self.headers))
            elif self.head_done and not self.complete:
                # Bytes that deliver no body: chunk sizes, extensions and trailers, which the
                # parser keeps (an endless trailer grew jitgate without limit: found in review).
                # Counted by whole reads, so the cap holds to within one read.
                self._stalled_bytes = 0 if self._moved else self._stalled_bytes + len(data)
                if self._stalled_bytes > MAX_HEAD_BYTES:
                    why = f"the upstream sent over {MAX_HEAD_BYTES} bytes of chunk framing or trailers"
                    self._fail(MalformedAnswer(why, self.headers))
        except httptools.HttpParserCallbackError as exc:
            self._fail(MalformedAnswer(str(exc.__context__ or exc), self.headers))
        except httptools.HttpParserError as exc:
            why = f"the upstream's answer is not valid HTTP/1.1 ({exc})"
            self._fail(MalformedAnswer(why, self.headers))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_watching()
        if self.head_done and not self.complete and self._until_close() and exc is None:
            self.complete = True  # a body delimited by the connection's end has ended
            self._keep_alive = False
        elif self.failure is None:
            if self.active and not self.complete:
                why = "the upstream closed the connection"
                why += " mid-answer" if self.head_done else " before answering"
                self.failure = UpstreamError(why + (f": {exc}" if exc else ""))
            else:
                self.failure = UpstreamError("the upstream closed the connection")
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._progress = time.monotonic()
        self._wake()

    # --- httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete or (self.head_done and self._head_only):
            raise UpstreamError("the upstream sent more than one answer to one request")
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a chunked body's trailer: not passed on, but counted
            self._trailers += 1
            if self._trailers > MAX_RESPONSE_HEADERS:
                raise UpstreamError(
                    f"the upstream's answer has over {MAX_RESPONSE_HEADERS} trailers"
                )
            return
        if len(self.headers) >= MAX_RESPONSE_HEADERS:
            raise UpstreamError(f"the upstream's answer has over {MAX_RESPONSE_HEADERS} headers")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._moved = True
        if not 100 <= status <= 599:
            # uvicorn cannot send it: the client would get no answer at all (found in review).
            raise UpstreamError(f"the upstream answered with status {status}, not an HTTP status")
        if status == 101:
            raise UpstreamError("the upstream switched protocols, which jitgate never asks for")
        if 100 <= status < 200:
            self.got_continue = self.got_continue or status == 100  # interim: wait on
            self._wake()
            return
        self.status = status
        self._keep_alive = bool(self._parser.should_keep_alive())
        if self._transport is not None and self._transport.get_write_buffer_size():
            # Answered while part of the request had not left (a body held in memory that the
            # upstream stopped reading): those bytes would follow the answer, where the upstream
            # expects the next request, so the connection is not kept (found in review).
            self._keep_alive = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.strip().isdigit():
                self.content_length = int(value)
            elif lowered == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
        self.head_done = True
        if self._head_only or status in _NO_BODY_STATUS:
            self.complete = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self.head_done or self.complete:
            raise UpstreamError("the upstream sent a body where none belongs")
        self._moved = True
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._read_paused:
            self._read_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self._moved = True
        if self.head_done:
            self.complete = True
            self._wake()

    def _until_close(self) -> bool:
        return self.content_length is None and not self._chunked
