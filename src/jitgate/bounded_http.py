"""uvicorn's httptools protocol with a ceiling on the size of a request's head.

httptools puts no limit on the request line and headers: it keeps appending what arrives until
the blank line, so one unauthenticated connection sending endless header bytes grew jitgate by
hundreds of MiB (four 128 MiB headers: RSS 157 -> 1,294 MiB; found by review); a chunked body's
trailers, which it reports as headers, grew without end the same way. Here a head (or trailer
section) that has not ended within ``MAX_HEAD_BYTES`` is answered once and the connection
closed, so a connection holds at most that plus one socket read. (h11, uvicorn's other parser,
has such a limit, but costs the hot path more.)

Three more holes of the same kind (found in re-review), closed here too:

- Headers are counted: 64 KiB of five-byte headers (``ab:``) became ~1.4 MiB of Python tuples.
- A head must end within ``HEAD_TIMEOUT_SECONDS`` of its first byte (or of the connection's
  opening): uvicorn times out only idle keep-alive connections, so a few hundred connections
  each holding half a head stayed open for ever.
- Pipelined requests queue behind the one in flight; uvicorn queues every one that arrives, and
  a client streaming tiny requests without reading grew jitgate by over 1 GiB. SDKs never
  pipeline: past ``MAX_PIPELINED`` queued requests the connection is closed.

And from a review of those fixes: a bare CRLF after an answer (which begins no message) held a
connection for ever, so the head clock also starts on any byte that arrives while nothing is
being answered; a client that reads none of its answers is reset after
``WRITE_STALL_SECONDS``; and a refusal is never written while an answer is under way.

Every refused request is reported to the listener's ``on_refused`` (set with ``reporting_to``),
which records it in the audit log like any other failure before authentication (D11). Silent
connections closed by the head clock, which sent no request, are not reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, NoReturn
from xml.sax.saxutils import escape

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger(__name__)

# A request line plus headers. AWS allows 8 KiB of S3 user metadata and SDKs send about 2 KiB
# of other headers; a presigned URL is a few KiB. nginx refuses beyond 32 KiB by default.
MAX_HEAD_BYTES = 64 * 1024
# Headers in one head (or trailer section). An SDK sends about 15, plus one per item of S3 user
# metadata (2 KiB of keys and values in all: past ~240 items only with keys of a character or
# two). Apache's default limit is 100. Each header costs ~150 bytes of Python objects.
MAX_HEADERS = 256
# From a connection's opening, or a request's first byte, to the end of its head (nginx: 60 s).
HEAD_TIMEOUT_SECONDS = 30.0
# Requests waiting behind the one being answered on a connection.
MAX_PIPELINED = 16
# How long answers may wait for a client that reads none of them (uvicorn waits for ever). The
# gateway gives up on a stalled download after 120 s and records why; this is the backstop.
WRITE_STALL_SECONDS = 150.0
# How long a refusal may take to reach a client before the connection is reset.
REFUSAL_FLUSH_SECONDS = 5.0

# Told of every refused request: (source address, error code, what was wrong).
RefusalReport = Callable[[str, str, str], None]
# The codes refused requests are recorded under (those of S3's own answers where it has them).
TOO_LARGE = "RequestHeaderSectionTooLarge"
TIMED_OUT = "RequestTimeout"
NOT_HTTP = "BadRequest"
TOO_MANY_PIPELINED = "TooManyPipelinedRequests"


class BoundedHeadProtocol(HttpToolsProtocol):
    """Bytes that arrive without completing a head, delivering body or ending a message are
    bytes httptools keeps: a request line and headers that never end, or a chunked body's
    trailers (httptools reports them as headers, uvicorn appends them to the request's). Past
    ``max_head_bytes`` of those in a row the connection is answered and closed."""

    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS
    head_timeout_seconds = HEAD_TIMEOUT_SECONDS
    max_pipelined = MAX_PIPELINED
    write_stall_seconds = WRITE_STALL_SECONDS
    on_refused: RefusalReport | None = None

    @classmethod
    def reporting_to(cls, report: RefusalReport) -> type[BoundedHeadProtocol]:
        """This protocol, telling ``report`` of each request it refuses (uvicorn builds the
        protocol itself, so the listener's recorder travels on a subclass of its own)."""
        return type(cls.__name__, (cls,), {"on_refused": staticmethod(report)})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept_bytes = 0  # bytes received since the last sign of progress
        self._progress = False
        self._header_count = 0  # in this message's head and trailer section
        self._head_deadline: asyncio.TimerHandle | None = None
        self._message_begun = False  # a request line has begun and its head not yet ended
        self._running: RequestResponseCycle | None = None  # the request being answered
        self._write_stall: asyncio.TimerHandle | None = None
        self._stall_buffered = 0  # bytes waiting to be sent when the stall clock was armed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        self._disarm_write_stall()
        super().connection_lost(exc)
        # uvicorn tells only the newest request on the connection that the client left; with
        # one pipelined behind it, the request being answered never heard (its response went
        # on streaming for nobody; found in re-review).
        running = self._running
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    # --- a client that stops reading -------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm_write_stall()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_writes()  # uvicorn may have closed with bytes still to send

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._watch_writes()

    def _watch_writes(self) -> None:
        """Reset the connection if the bytes waiting to be sent do not go down within
        ``write_stall_seconds`` (a client that reads, however slowly, is left alone)."""
        if self._write_stall is None and self.transport.get_write_buffer_size() > 0:
            self._stall_buffered = self.transport.get_write_buffer_size()
            self._write_stall = self.loop.call_later(self.write_stall_seconds, self._stall_check)

    def _disarm_write_stall(self) -> None:
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None

    def _stall_check(self) -> None:
        self._write_stall = None
        if self.parser is None:  # uvicorn drops the parser when the connection is lost
            return
        waiting = self.transport.get_write_buffer_size()
        if waiting == 0:
            return
        if waiting < self._stall_buffered:
            self._watch_writes()  # it reads: look again later
            return
        peer = self._peer()
        log.warning(
            "reset a connection from %s: it read nothing for %g s", peer, self.write_stall_seconds
        )
        _reset(self.transport)

    # --- heads ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and not self._answering():
            # Bytes while nothing is being answered are the start of a head, even those that
            # begin no message (a bare CRLF), and they turned uvicorn's keep-alive clock off.
            self._arm_head_deadline()
        self._progress = False
        super().data_received(data)
        if self._progress:
            self._kept_bytes = 0
            return
        if self.transport.is_closing():
            return
        self._kept_bytes += len(data)
        if self._kept_bytes > self.max_head_bytes:
            limit = f"larger than {self.max_head_bytes} bytes"
            self._refuse(f"a request head or trailer {limit}", self.too_large(limit), TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._message_begun = True
        self._arm_head_deadline()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            limit = f"more than {self.max_headers} headers"
            self._refuse(
                f"a request head or trailer with {limit}", self.too_large(limit), TOO_LARGE
            )
            # Stops httptools mid-feed; uvicorn's own 400 is then skipped (send_400_response).
            raise _HeadRefused(limit)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._progress = True
        self._message_begun = False
        self._disarm_head_deadline()
        if self.parser.should_upgrade():
            # Neither listener speaks another protocol. uvicorn answered such a request as
            # HTTP while httptools stopped framing the connection after its head: a body by
            # Content-Length (a body to any proxy in front) was dropped, or parsed as a request
            # of its own and forwarded (found in review). Refused, and the connection closed.
            self._refuse_unsupported("a request to switch protocols (Upgrade or CONNECT)")
        codings = [value for name, value in self.headers if name == b"transfer-encoding"]
        if codings and b",".join(codings).strip().lower() != b"chunked":
            # Any other coding httptools refuses only once the body begins, after the app has
            # started: the call was recorded as allowed and its head sent upstream, then cut
            # off, and the client got no answer (found in review). Refused here, before.
            self._refuse_unsupported("a Transfer-Encoding other than chunked")
        super().on_headers_complete()
        if len(self.pipeline) > self.max_pipelined:
            # Nothing is written: answers on a pipelined connection must come in order, and the
            # one in flight may be mid-response. Closing cancels it and drops the queue.
            limit = f"more than {self.max_pipelined} pipelined requests"
            self._refuse(limit, None, TOO_MANY_PIPELINED)
            self.pipeline.clear()
            raise _HeadRefused(limit)  # and the rest of this read is not parsed

    def _refuse_unsupported(self, what: str) -> NoReturn:
        """Answer 400 naming ``what``, close, and stop parsing this head."""
        self._refuse(what, self.not_supported(f"{what} is not supported"), NOT_HTTP)
        raise _HeadRefused(what)

    def on_body(self, body: bytes) -> None:
        self._progress = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._progress = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        what = f"bytes that are not HTTP ({msg})"
        if self._answering():  # never inside (or instead of) an answer under way
            self._refuse(what, None, NOT_HTTP)
        elif not self.transport.is_closing():  # unless a refusal already went out
            self._report(NOT_HTTP, what)
            super().send_400_response(msg)

    def _answering(self) -> bool:
        """A response is under way or queued: nothing else may be written now."""
        running = self._running
        return (running is not None and not running.response_complete) or bool(self.pipeline)

    def _refuse(self, what: str, answer: bytes | None, code: str | None) -> None:
        """Close the connection, answering ``answer`` if nothing else is being answered;
        ``code`` names the refused request for the record (None: there was no request)."""
        if self.transport.is_closing():
            return
        peer = self._peer()
        log.warning("closed a connection from %s: %s", peer, what)
        if code is not None:
            self._report(code, what)
        if answer is not None and not self._answering():
            self.transport.write(answer)
        self.transport.close()  # once what is written has gone, or reset if it cannot go
        self.loop.call_later(REFUSAL_FLUSH_SECONDS, self._reset_if_open)

    def _peer(self) -> str:
        return str(self.client[0]) if self.client else "unknown"

    def _report(self, code: str, what: str) -> None:
        if self.on_refused is None:
            return
        try:
            self.on_refused(self._peer(), code, what)
        except Exception:  # the refusal stands; the audit writer logs its own failures
            log.exception("could not record a refused request from %s", self._peer())

    def _reset_if_open(self) -> None:
        if self.parser is not None:  # uvicorn drops the parser when the connection is lost
            _reset(self.transport)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_seconds, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        what = f"no complete request head within {self.head_timeout_seconds:g} s"
        # Only a request that has begun is answered; bytes that begin none (a CRLF, the rest of
        # a body answered early) and silence are hung up on quietly.
        if self._message_begun:
            self._refuse(what, self.timed_out(what), TIMED_OUT)
        else:
            self._refuse(what, None, None)

    def too_large(self, limit: str) -> bytes:
        message = f"the request line and headers (or trailers) are {limit}"
        return _response(
            b"431 Request Header Fields Too Large",
            b"application/json",
            json.dumps({"error": "request_head_too_large", "message": message}).encode(),
        )

    def timed_out(self, what: str) -> bytes:
        return _response(
            b"408 Request Timeout",
            b"application/json",
            json.dumps({"error": "request_timeout", "message": what}).encode(),
        )

    def not_supported(self, message: str) -> bytes:
        return _response(
            b"400 Bad Request",
            b"application/json",
            json.dumps({"error": "bad_request", "message": message}).encode(),
        )


class AwsBoundedHeadProtocol(BoundedHeadProtocol):
    """The AWS endpoint's: refused as S3 refuses such requests, in XML."""

    def too_large(self, limit: str) -> bytes:
        message = f"Your request header section is {limit}."
        return _response(
            b"400 Bad Request",
            b"application/xml",
            _xml_error("RequestHeaderSectionTooLarge", message),
        )

    def timed_out(self, what: str) -> bytes:
        message = f"Your socket connection was closed: {what}."
        return _response(
            b"400 Bad Request", b"application/xml", _xml_error("RequestTimeout", message)
        )

    def not_supported(self, message: str) -> bytes:
        return _response(b"400 Bad Request", b"application/xml", _xml_error("BadRequest", message))


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a refused head."""


def _reset(transport: asyncio.Transport) -> None:
    """Close at once with a reset, dropping what the kernel still holds to send: a plain close
    would keep those megabytes queued for a client that reads nothing."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _xml_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    ).encode()


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close"
    return head % (status, content_type, len(body)) + b"\r\n\r\n" + body
