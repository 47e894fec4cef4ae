"""Egress through a proxy: HTTPS_PROXY/HTTP_PROXY/NO_PROXY as botocore reads them, a CONNECT
tunnel with TLS end to end for https origins, absolute-form requests for http ones."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from e2e.forward_proxy import ForwardProxy
from jitgate.gateway.http_client import HttpClient, Origin, UpstreamError
from jitgate.gateway.proxy import ProxyConfigError, ProxySettings, parse_proxy

from .test_http_client import OK, Scripted, answering, serve, serve_tls

PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def proxies() -> Iterator[list[ForwardProxy]]:
    started: list[ForwardProxy] = []
    yield started
    for proxy in started:
        proxy.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _proxy(proxies: list[ForwardProxy], **options: object) -> tuple[ForwardProxy, ProxySettings]:
    """A forward proxy for this test, and settings that send https origins through it."""
    proxy = ForwardProxy(**options)  # type: ignore[arg-type]
    proxies.append(proxy)
    return proxy, ProxySettings(https=parse_proxy(proxy.url, "HTTPS_PROXY"))


def _tls_server(tmp_path: Path, answers: int) -> tuple[int, ssl.SSLContext, Scripted]:
    server, trusting = serve_tls(tmp_path, *[OK] * answers)
    return server.port, trusting, server


async def _get(client: HttpClient, origin: Origin) -> tuple[int, bytes]:
    async with client.exchange("GET", origin, "/", {}) as answer:
        return answer.status, await answer.read(100)


def _run(coroutine: object, loop: str = "asyncio") -> object:
    runner = uvloop.run if loop == "uvloop" else asyncio.run
    return runner(asyncio.wait_for(coroutine, 20))  # type: ignore[arg-type]


# --- settings ---------------------------------------------------------------------------------
def test_the_environment_names_the_proxies_as_botocore_reads_it(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("HTTPS_PROXY", "proxy.internal:3128")  # no scheme: http, as curl reads it
    clean_env.setenv("NO_PROXY", "localhost,.corp.example")
    settings = ProxySettings.from_environment()
    assert settings.https is not None and settings.http is None
    assert (settings.https.host, settings.https.port) == ("proxy.internal", 3128)
    assert settings.for_origin("https", "s3.us-east-1.amazonaws.com", 443) == settings.https
    assert settings.for_origin("https", "localhost", 443) is None
    assert settings.for_origin("https", "db.corp.example", 443) is None
    assert settings.for_origin("http", "s3.us-east-1.amazonaws.com", 80) is None
    clean_env.setenv("https_proxy", "http://lower.internal:8080")  # the lower-case one wins
    assert ProxySettings.from_environment().https.host == "lower.internal"  # type: ignore[union-attr]
    clean_env.setenv("no_proxy", "*")
    assert ProxySettings.from_environment().for_origin("https", "anything", 443) is None


def test_no_proxy_settings_means_every_origin_directly(clean_env: pytest.MonkeyPatch) -> None:
    settings = ProxySettings.from_environment()
    assert not settings
    assert settings.for_origin("https", "s3.amazonaws.com", 443) is None


def test_proxy_credentials_become_basic_auth_and_are_never_shown() -> None:
    proxy = parse_proxy("http://svc%40corp:p%3Ass@proxy:3128", "HTTPS_PROXY")
    assert proxy.authorization == "Basic c3ZjQGNvcnA6cDpzcw=="  # "svc@corp:p:ss"
    assert proxy.shown == "http://proxy:3128"
    assert "p:ss" not in repr(proxy.shown)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://proxy:3128", "http:// only"),
        ("socks5://proxy:1080", "http:// only"),
        ("http://proxy:notaport", "not valid"),
        ("http://:3128", "names no host"),
        ("http://proxy:3128/some/path", "scheme, host and port only"),
    ],
)
def test_a_proxy_setting_jitgate_cannot_use_stops_it_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ProxyConfigError, match=why) as raised:
        parse_proxy(url, "HTTPS_PROXY")
    assert "HTTPS_PROXY" in str(raised.value)


# --- through a proxy ----------------------------------------------------------------------------
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # jitgate serve runs on uvloop
def test_an_https_origin_is_reached_through_one_connect_tunnel_with_tls_end_to_end(
    tmp_path: Path, proxies: list[ForwardProxy], loop: str
) -> None:
    port, trusting, server = _tls_server(tmp_path, answers=2)
    proxy, settings = _proxy(proxies)

    async def go() -> None:
        client = HttpClient(ssl_context=trusting, proxies=settings)
        origin = Origin("https", "localhost", port)
        assert [await _get(client, origin) for _ in range(2)] == [(200, b"ok")] * 2
        assert client.opened == 1  # the tunnel is pooled like any connection
        await client.close()

    _run(go(), loop)
    assert proxy.tunnels == [
        b"CONNECT localhost:%d HTTP/1.1\r\nhost: localhost:%d\r\n\r\n" % (port, port)
    ]
    # The request went inside the tunnel, encrypted: the proxy saw no more than CONNECT.
    assert server.received[0].startswith(b"GET / HTTP/1.1\r\nhost: localhost:%d\r\n" % port)


def test_the_origins_certificate_is_checked_through_the_tunnel(
    tmp_path: Path, proxies: list[ForwardProxy]
) -> None:
    port, _, _ = _tls_server(tmp_path, answers=1)
    proxy, settings = _proxy(proxies)

    async def go() -> None:
        client = HttpClient(proxies=settings)  # the system store does not know this certificate
        with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED") as raised:
            await _get(client, Origin("https", "localhost", port))
        assert f"through {proxy.url}" in str(raised.value)
        await client.close()

    _run(go())


def test_proxy_credentials_are_sent_and_a_refusal_names_the_proxy_without_them(
    tmp_path: Path, proxies: list[ForwardProxy]
) -> None:
    port, trusting, _ = _tls_server(tmp_path, answers=1)
    proxy = ForwardProxy(credentials=("svc", "s3cret"))
    proxies.append(proxy)
    right = ProxySettings(https=parse_proxy(f"http://svc:s3cret@127.0.0.1:{proxy.port}", "p"))
    wrong = ProxySettings(https=parse_proxy(f"http://svc:guess@127.0.0.1:{proxy.port}", "p"))

    async def go() -> None:
        origin = Origin("https", "localhost", port)
        client = HttpClient(ssl_context=trusting, proxies=right)
        assert await _get(client, origin) == (200, b"ok")
        await client.close()
        refused = HttpClient(ssl_context=trusting, proxies=wrong)
        with pytest.raises(UpstreamError, match="refused to connect") as raised:
            await _get(refused, origin)
        message = str(raised.value)
        assert "407 Proxy Authentication Required" in message
        assert "guess" not in message and "svc" not in message
        await refused.close()

    _run(go())
    assert b"proxy-authorization: Basic c3ZjOnMzY3JldA==\r\n" in proxy.tunnels[0]


def test_a_proxy_that_refuses_or_breaks_off_is_an_upstream_error(
    tmp_path: Path, proxies: list[ForwardProxy]
) -> None:
    refusing = ForwardProxy(refuse=True)
    proxies.append(refusing)
    silent = serve(lambda sock, number: sock.recv(65536))  # reads CONNECT, closes unanswered
    garbage = serve(lambda sock, number: (sock.recv(65536), sock.sendall(b"SSH-2.0-x\r\n\r\n")))

    async def go() -> None:
        origin = Origin("https", "localhost", 443)
        for url, why in [
            (refusing.url, "refused to connect to localhost:443: 403 Forbidden"),
            (f"http://127.0.0.1:{silent.port}", "closed the connection before answering"),
            (f"http://127.0.0.1:{garbage.port}", "did not answer CONNECT in HTTP/1.1"),
        ]:
            client = HttpClient(proxies=ProxySettings(https=parse_proxy(url, "HTTPS_PROXY")))
            with pytest.raises(UpstreamError, match=why):
                await _get(client, origin)
            await client.close()

    _run(go())


def test_an_http_origin_is_asked_in_absolute_form_through_an_http_proxy(
    proxies: list[ForwardProxy],
) -> None:
    server = serve(answering(OK))
    proxy = ForwardProxy(credentials=("u", "p"))
    proxies.append(proxy)
    settings = ProxySettings(http=parse_proxy(f"http://u:p@127.0.0.1:{proxy.port}", "HTTP_PROXY"))

    async def go() -> None:
        client = HttpClient(proxies=settings)
        assert await _get(client, Origin("http", "127.0.0.1", server.port)) == (200, b"ok")
        await client.close()

    _run(go())
    assert server.received[0].startswith(
        b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
        b"proxy-authorization: Basic dTpw\r\n" % (server.port, server.port)
    )


def test_a_caller_cannot_send_its_own_proxy_credentials() -> None:
    server = serve(answering(OK))

    async def go() -> None:
        client = HttpClient()
        origin = Origin("http", "127.0.0.1", server.port)
        headers = {"Proxy-Authorization": "Basic c3RvbGVu"}
        async with client.exchange("GET", origin, "/", headers) as answer:
            await answer.read(10)
        await client.close()

    _run(go())
    assert b"proxy-authorization" not in server.received[0].lower()


def test_no_proxy_origins_are_reached_directly(tmp_path: Path, proxies: list[ForwardProxy]) -> None:
    port, trusting, _ = _tls_server(tmp_path, answers=1)
    proxy = ForwardProxy()
    proxies.append(proxy)
    settings = ProxySettings(https=parse_proxy(proxy.url, "HTTPS_PROXY"), no_proxy="localhost")

    async def go() -> None:
        client = HttpClient(ssl_context=trusting, proxies=settings)
        assert await _get(client, Origin("https", "localhost", port)) == (200, b"ok")
        await client.close()

    _run(go())
    assert proxy.heads == []


@pytest.mark.parametrize("password", ["s3cr3t/x", "s3cr#et", "s3cr?et"])
def test_a_password_that_breaks_the_url_is_not_quoted_in_the_refusal(password: str) -> None:
    """urllib reads an unencoded "/", "#" or "?" in the password as the end of the host and
    quotes what it took for the port (found in review)."""
    with pytest.raises(ProxyConfigError) as raised:
        parse_proxy(f"http://alice:{password}@proxy:3128", "HTTPS_PROXY")
    assert "s3cr" not in str(raised.value)
    assert "%-encoded" in str(raised.value)
    proxy = parse_proxy("http://alice:hunter2@proxy:3128", "HTTPS_PROXY")
    assert "hunter2" not in repr(proxy) and proxy.authorization not in repr(proxy)  # type: ignore[operator]


def test_no_proxy_is_matched_against_the_netloc_as_botocore_matches_it() -> None:
    proxy = parse_proxy("http://proxy:3128", "HTTPS_PROXY")
    by_port = ProxySettings(https=proxy, no_proxy="s3.us-east-1.amazonaws.com:443")
    # botocore's URL for AWS names no port, so this entry does not match it: proxied.
    assert by_port.for_origin("https", "s3.us-east-1.amazonaws.com", 443) is proxy
    local = ProxySettings(https=proxy, no_proxy="localhost:4566")
    assert local.for_origin("https", "localhost", 4566) is None
    assert local.for_origin("https", "localhost", 443) is proxy
