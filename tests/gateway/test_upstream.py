"""The upstream pool: a call that cannot get a connection in time fails, it does not hang."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from botocore.credentials import Credentials

from e2e.conftest import self_signed_certificate
from jitgate.gateway.http_client import UpstreamError
from jitgate.gateway.upstream import Upstream, ca_bundle, upstream_tls


def silent_server() -> tuple[socket.socket, list[socket.socket]]:
    """Accepts connections, reads nothing, answers nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, held


def test_a_call_waiting_for_a_busy_pool_gives_up_after_the_pool_wait() -> None:
    server, held = silent_server()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    upstream = Upstream(
        endpoint_override=url,
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        pool_size=1,
        pool_wait_seconds=0.3,
    )

    async def two_calls() -> tuple[float, BaseException | None]:
        await upstream.start()
        client = upstream.client
        assert client is not None
        destination = upstream.destination("s3", "us-east-1")

        async def get(path: str) -> None:
            async with client.exchange("GET", destination.origin, path, {}):
                pass

        try:
            first = asyncio.ensure_future(get("/held"))
            await asyncio.sleep(0.1)  # the only connection is now taken by a silent call
            started = time.monotonic()
            error: BaseException | None = None
            try:
                await get("/second")
            except (TimeoutError, UpstreamError) as exc:
                error = exc
            first.cancel()
            return time.monotonic() - started, error
        finally:
            await upstream.close()

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            waited, error = pool.submit(asyncio.run, two_calls()).result(timeout=20)
    finally:
        server.close()
        for connection in held:
            connection.close()
    assert isinstance(error, UpstreamError)
    assert "all 1 upstream connections stayed busy for 0.3 s" in str(error)
    assert waited < 5  # not the 300 s read timeout, nor forever


@pytest.mark.parametrize("override", ["ftp://x", "localhost:9000", "http://"])
def test_an_override_must_be_an_http_url(override: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Upstream(endpoint_override=override, credentials=Credentials("a", "b"))


def test_upstream_tls_trusts_only_aws_ca_bundle_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = self_signed_certificate(tmp_path, dns_names=("private.example",))
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    assert ca_bundle() == str(cert)  # read as botocore reads it
    trusted = {c["subject"] for c in upstream_tls(ca_bundle()).get_ca_certs()}
    assert trusted == {((("commonName", "jitgate e2e"),),)}  # that bundle, and only it
    context = upstream_tls(None)  # no bundle: the system's store
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_bad_ca_bundle_names_itself_at_start_and_only_when_tls_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", "/nonexistent/private-ca.pem")
    credentials = Credentials("AKIDEXAMPLE", "secret")
    with pytest.raises(RuntimeError, match=r"CA bundle '/nonexistent/private-ca.pem' \(AWS_CA"):
        asyncio.run(Upstream(credentials=credentials).start())
    plain = Upstream(endpoint_override="http://127.0.0.1:9", credentials=credentials)
    asyncio.run(plain.start())  # no TLS upstream: the bundle is not read
    assert plain.client is not None


def test_a_proxy_setting_jitgate_cannot_use_stops_it_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An egress proxy it cannot use is not quietly gone around: AWS would be reached some
    other way than the network's owner decided."""
    for name in ("https_proxy", "http_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.internal:3128")
    credentials = Credentials("AKIDEXAMPLE", "secret")
    with pytest.raises(RuntimeError, match=r"HTTPS_PROXY: jitgate reaches proxies over http://"):
        asyncio.run(Upstream(credentials=credentials).start())
