"""An upstream that writes down exactly what jitgate forwards, and answers 200.

For the attacks where what matters is the bytes that left jitgate (path, headers, body), not
what a real service would make of them. One request per connection is enough: jitgate's pool
opens another when the answer says ``Connection: close``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable

from .wire import serve_each_connection


@dataclasses.dataclass(frozen=True)
class Forwarded:
    request_line: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    complete: bool  # the whole declared body arrived


# How the upstream answers a request it has read whole (the default: a small 200).
Respond = Callable[[socket.socket, "Forwarded"], None]


def answer_ok(connection: socket.socket, forwarded: Forwarded) -> None:
    answer = b"<ok/>"
    connection.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nx-amz-request-id: recorded\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
    )


class RecordingUpstream:
    def __init__(self, respond: Respond = answer_ok, *, read_body: bool = True) -> None:
        """``read_body=False``: answer as soon as the head is read, as a server refusing an
        upload at once does."""
        self.respond = respond
        self.read_body = read_body
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.requests: list[Forwarded] = []
        self._lock = threading.Lock()
        serve_each_connection(self._socket, self._serve)

    def close(self) -> None:
        self._socket.close()

    def wait(self, count: int, timeout: float = 5.0) -> list[Forwarded]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.requests)

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(5.0)
        received = bytearray()
        with connection:
            try:
                while b"\r\n\r\n" not in received:
                    piece = connection.recv(65536)
                    if not piece:
                        return
                    received += piece
                head, _, body = bytes(received).partition(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                data = bytearray(body)
                while self.read_body and len(data) < length:
                    piece = connection.recv(65536)
                    if not piece:
                        break
                    data += piece
                forwarded = Forwarded(request_line, headers, bytes(data), len(data) >= length)
            except (OSError, ValueError):
                return
            with self._lock:
                self.requests.append(forwarded)
            if forwarded.complete or not self.read_body:
                with contextlib.suppress(OSError):  # the peer may leave first
                    self.respond(connection, forwarded)
