"""Where jitgate sends a call, and with which identity.

The agent never chooses the destination: it is either the override from jitgate's own settings
(sandbox, tests) or the service's regional AWS endpoint, built from a region that has already
been checked against a strict pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import botocore.session
from aiohttp.connector import Connection
from botocore.credentials import Credentials as BotoCredentials

_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d")
# How long an upload that asked for "100 Continue" waits for it before sending its body anyway,
# as botocore and curl do (RFC 9110 10.1.1: a server may never answer it). aiohttp alone waits
# for ever, so an upstream that ignores the header would hang the upload.
CONTINUE_WAIT_SECONDS = 1.0


class _ContinueAfterWait(aiohttp.ClientRequest):
    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        waiting = self._continue
        if waiting is not None:
            timer = self.loop.call_later(
                CONTINUE_WAIT_SECONDS, lambda: waiting.done() or waiting.set_result(True)
            )
            waiting.add_done_callback(lambda _: timer.cancel())
        return await super().send(conn)


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # host[:port] as sent in the Host header
    base_path: str  # path prefix of an override endpoint ("" normally)

    def url(self, raw_path: str, query: str) -> str:
        return f"{self.scheme}://{self.host}{self.base_path}{raw_path}" + (
            f"?{query}" if query else ""
        )


@dataclass(frozen=True)
class SigningIdentity:
    access_key: str
    secret_key: str
    token: str | None


class Upstream:
    def __init__(
        self,
        *,
        endpoint_override: str | None = None,
        credentials: BotoCredentials | None = None,
        pool_size: int = 256,
        pool_wait_seconds: float = 30.0,
    ) -> None:
        self._override: Destination | None = None
        if endpoint_override:
            parts = urlsplit(endpoint_override)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"upstream endpoint {endpoint_override!r} is not an http(s) URL")
            self._override = Destination(parts.scheme, parts.netloc, parts.path.rstrip("/"))
        self._credentials = credentials or botocore.session.get_session().get_credentials()
        self._pool_size = pool_size
        self._pool_wait_seconds = pool_wait_seconds
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, keepalive_timeout=30, ttl_dns_cache=60
            )
            self.session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
                request_class=_ContinueAfterWait,
                # connect: waiting for a pooled connection (all may be busy with slow calls)
                # plus opening one; then no silence longer than sock_read. No total: a 1 GiB
                # object may take minutes.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._pool_wait_seconds, sock_connect=10, sock_read=300
                ),
            )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def destination(self, service: str, region: str) -> Destination:
        if self._override is not None:
            return self._override
        if not _REGION.fullmatch(region):
            raise ValueError(f"invalid region {region!r}")
        suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        return Destination("https", f"{service}.{region}.{suffix}", "")

    def identity(self) -> SigningIdentity:
        if self._credentials is None:
            raise RuntimeError(
                "jitgate has no AWS credentials of its own (botocore credential chain is empty)"
            )
        frozen = self._credentials.get_frozen_credentials()
        return SigningIdentity(frozen.access_key, frozen.secret_key, frozen.token)
