"""A bare pass-through HTTP proxy on jitgate's own server stack: the floor of a Python hop.

uvicorn (same configuration as jitgate's AWS endpoint: httptools, no access log, no lifespan,
no proxy headers) on the same event loop as `jitgate serve` (uvloop), serving a plain ASGI app
that forwards every request, unchanged and unchecked, streaming both ways in the same 256 KiB
pieces, over a pooled upstream client: jitgate's own (jitgate.gateway.http_client, as jitgate
uses it; the default) or aiohttp's (``--client aiohttp``: the stack jitgate used until D13,
and the one issue 3's planning numbers were measured on). No SigV4, no grant lookup, no audit:
whatever jitgate costs beyond this is its checks, its record and its re-signing.

Run: .venv/bin/python -m benchmarks.passthrough --upstream http://127.0.0.1:PORT --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvicorn
import uvloop

from jitgate.gateway.http_client import HttpClient, Origin, UpstreamError

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

STREAM_CHUNK = 256 * 1024
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)
_RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "server", "date"})


class LeanPassthrough:
    """The same hop on jitgate's own upstream client."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.origin = Origin.parse(parts.scheme, parts.netloc)
        self.client = HttpClient()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.client.close()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers, data, target = _request(scope, receive)
        try:
            async with self.client.exchange(
                scope["method"], self.origin, target, headers, data
            ) as response:
                await send(_response_start(response.status, response.raw_headers))
                while chunk := await response.read(STREAM_CHUNK):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (TimeoutError, UpstreamError):
            await _bad_gateway(send)


class Passthrough:
    """Forward every request to ``upstream`` as is (the Host header too, so signatures hold)."""

    def __init__(self, upstream: str, read_bufsize: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.read_bufsize = read_bufsize  # None: aiohttp's default, as jitgate uses
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # The same session settings as jitgate.gateway.upstream.Upstream.start.
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30, ttl_dns_cache=60)
        extra = {"read_bufsize": self.read_bufsize} if self.read_bufsize else {}
        self.session = aiohttp.ClientSession(
            **extra,  # type: ignore[arg-type]
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        assert self.session is not None
        headers, data, target = _request(scope, receive)
        url = self.upstream + target
        try:
            async with self.session.request(
                scope["method"],
                aiohttp.client.URL(url, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
            ) as response:
                await send(_response_start(response.status, response.raw_headers))
                async for chunk in response.content.iter_chunked(STREAM_CHUNK):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (TimeoutError, aiohttp.ClientError):
            await _bad_gateway(send)


def _request(
    scope: dict[str, Any], receive: Receive
) -> tuple[dict[str, str], AsyncIterator[bytes] | None, str]:
    """The headers to forward (hop-by-hop ones dropped), the body if any, and the target."""
    headers: dict[str, str] = {}
    streamed = False
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.lower()
        if name in _HOP_BY_HOP:
            streamed = streamed or name == b"transfer-encoding"
            continue
        headers[name.decode("latin-1")] = raw_value.decode("latin-1")
    length = headers.get("content-length", "0")
    data = _body(receive) if streamed or length != "0" else None
    target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return headers, data, target + (f"?{query}" if query else "")


def _response_start(status: int, raw_headers: Any) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (name.lower(), value)
            for name, value in raw_headers
            if name.lower().decode("latin-1") not in _RESPONSE_DROP
        ],
    }


async def _bad_gateway(send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 502, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise aiohttp.ClientPayloadError("client disconnected mid-body")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def serve(upstream: str, port: int, client: str, read_bufsize: int | None = None) -> None:
    app: Passthrough | LeanPassthrough = (
        Passthrough(upstream, read_bufsize) if client == "aiohttp" else LeanPassthrough(upstream)
    )
    await app.start()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    try:
        await server.serve()
    finally:
        await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT to forward to")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument(
        "--client",
        choices=("jitgate", "aiohttp"),
        default="jitgate",
        help="the upstream client: jitgate's own (as jitgate) or aiohttp's",
    )
    parser.add_argument(
        "--read-bufsize",
        type=int,
        default=None,
        help="aiohttp read buffer (experiment; default: aiohttp's, as jitgate)",
    )
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # as `jitgate serve` does (jitgate.server.settle_for_serving)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(
            serve(args.upstream, args.port, args.client, args.read_bufsize)
        )  # as `jitgate serve`


if __name__ == "__main__":
    main()
