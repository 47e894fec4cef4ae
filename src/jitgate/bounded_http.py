"""uvicorn's httptools protocol with a ceiling on the size of a request's head.

httptools puts no limit on the request line and headers: it keeps appending what arrives until
the blank line, so one unauthenticated connection sending endless header bytes grew jitgate by
hundreds of MiB (four 128 MiB headers: RSS 157 -> 1,294 MiB; found by review); a chunked body's
trailers, which it reports as headers, grew without end the same way. Here a head (or trailer
section) that has not ended within ``MAX_HEAD_BYTES`` is answered once and the connection
closed, so a connection holds at most that plus one socket read. (h11, uvicorn's other parser,
has such a limit, but costs the hot path more.)
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# A request line plus headers. AWS allows 8 KiB of S3 user metadata and SDKs send about 2 KiB
# of other headers; a presigned URL is a few KiB. nginx refuses beyond 32 KiB by default.
MAX_HEAD_BYTES = 64 * 1024


class BoundedHeadProtocol(HttpToolsProtocol):
    """Bytes that arrive without completing a head, delivering body or ending a message are
    bytes httptools keeps: a request line and headers that never end, or a chunked body's
    trailers (httptools reports them as headers, uvicorn appends them to the request's). Past
    ``max_head_bytes`` of those in a row the connection is answered and closed."""

    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept_bytes = 0  # bytes received since the last sign of progress
        self._progress = False

    def data_received(self, data: bytes) -> None:
        self._progress = False
        super().data_received(data)
        if self._progress:
            self._kept_bytes = 0
            return
        if self.transport.is_closing():
            return
        self._kept_bytes += len(data)
        if self._kept_bytes > self.max_head_bytes:
            peer = self.client[0] if self.client else "unknown"
            log.warning(
                "refused a request head or trailer over %d bytes from %s", self.max_head_bytes, peer
            )
            self.transport.write(self.refusal())
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._progress = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._progress = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._progress = True
        super().on_message_complete()

    def refusal(self) -> bytes:
        return _response(
            b"431 Request Header Fields Too Large",
            b"application/json",
            b'{"error": "request_head_too_large", "message": "the request line and headers '
            b'are larger than %d bytes"}' % self.max_head_bytes,
        )


class AwsBoundedHeadProtocol(BoundedHeadProtocol):
    """The AWS endpoint's: refused as S3 refuses a head that is too large."""

    def refusal(self) -> bytes:
        return _response(
            b"400 Bad Request",
            b"application/xml",
            b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>RequestHeaderSectionTooLarge'
            b"</Code><Message>Your request header section exceeds the maximum allowed size "
            b"(%d bytes).</Message></Error>" % self.max_head_bytes,
        )


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close"
    return head % (status, content_type, len(body)) + b"\r\n\r\n" + body
