"""A small forward proxy for tests: CONNECT tunnels and absolute-form requests, piped as bytes.

It records every request head it is sent, can demand credentials (407 without them) and can
refuse every tunnel (403), so the tests see what jitgate asks a proxy and what it does with a
refusal.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from urllib.parse import urlsplit

from .wire import serve_each_connection


class ForwardProxy:
    def __init__(self, *, credentials: tuple[str, str] | None = None, refuse: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.heads: list[bytes] = []  # every request head received, in order
        self._expected = None
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            self._expected = f"proxy-authorization: basic {token}".lower()
        self._refuse = refuse
        serve_each_connection(self.sock, self._serve)

    @property
    def tunnels(self) -> list[bytes]:
        return [head for head in self.heads if head.startswith(b"CONNECT ")]

    def close(self) -> None:
        self.sock.close()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            read = _read_head(client)
            if read is None:
                return
            head, rest = read
            self.heads.append(head)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            if self._expected is not None and self._expected not in (
                line.lower() for line in lines[1:]
            ):
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                )
                return
            if self._refuse:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            if method == "CONNECT":
                assert not rest, "bytes sent before the tunnel was open"
                host, _, port = target.rpartition(":")
                upstream = socket.create_connection((host.strip("[]"), int(port)))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # absolute form: passed on as it came (servers must accept it)
                parts = urlsplit(target)
                upstream = socket.create_connection((parts.hostname, parts.port or 80))
                upstream.sendall(head + rest)
            _pipe_both_ways(client, upstream)
        except OSError:
            pass
        finally:
            client.close()
            if upstream is not None:
                upstream.close()


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """(the request head with its blank line, whatever came after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _pipe_both_ways(a: socket.socket, b: socket.socket) -> None:
    def copy(source: socket.socket, sink: socket.socket) -> None:
        try:
            while piece := source.recv(65536):
                sink.sendall(piece)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    other = threading.Thread(target=copy, args=(b, a), daemon=True)
    other.start()
    copy(a, b)
    other.join(10)
