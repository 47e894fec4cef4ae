"""Upstream over HTTPS, as AWS always is: moto in its auth mode serving TLS with a private CA.

jitgate must check the upstream's certificate (here against the CA bundle botocore would use,
AWS_CA_BUNDLE), re-sign over the encrypted connection, and refuse an upstream it cannot
verify, recording why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from jitgate.sandbox.moto import MotoServer, start_moto

from .conftest import Stack, object_arn, self_signed_certificate, start_stack
from .forward_proxy import ForwardProxy

pytestmark = pytest.mark.slow

KEY = "tls/report.csv"
BODY = b"region,revenue\nnorth,1200\n"


@pytest.fixture(scope="module")
def tls_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("moto-tls"))
    server = start_moto(tls=(str(cert), str(key)))
    try:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="reports")  # type: ignore[attr-defined]
        s3.put_object(Bucket="reports", Key=KEY, Body=BODY)  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


def _stack(moto: MotoServer, home: Path) -> Iterator[Stack]:
    stack = start_stack(moto, home)
    try:
        yield stack
    finally:
        stack.stop()


def test_calls_reach_an_https_upstream_whose_certificate_checks_out(
    tls_moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_moto.endpoint.startswith("https://")
    assert tls_moto.ca_file is not None
    monkeypatch.setenv("AWS_CA_BUNDLE", tls_moto.ca_file)
    for stack in _stack(tls_moto, tmp_path / "home"):
        grant = stack.grant(["s3:GetObject"], [object_arn(KEY)])
        s3 = stack.client("s3", grant.creds)
        for _ in range(3):  # (moto answers "Connection: close": reuse is tested elsewhere)
            assert s3.get_object(Bucket="reports", Key=KEY)["Body"].read() == BODY
        s3.close()
        events = stack.wait_events(
            grant.id, lambda es: sum(e.type == "call.completed" for e in es) == 3
        )
        outcomes = [e.data for e in events if e.type == "call.completed"]
        assert [o["status"] for o in outcomes] == [200, 200, 200]
        assert all(o["upstream_request_id"] for o in outcomes)


def test_an_upstream_certificate_that_cannot_be_verified_stops_the_call(
    tls_moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # the system's store: moto's CA unknown
    for stack in _stack(tls_moto, tmp_path / "home"):
        grant = stack.grant(["s3:GetObject"], [object_arn(KEY)])
        s3 = stack.client("s3", grant.creds)
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.get_object(Bucket="reports", Key=KEY)
        s3.close()
        assert refused.value.response["Error"]["Code"] == "ServiceUnavailable"
        events = stack.wait_events(grant.id, lambda es: any(e.type == "call.completed" for e in es))
        outcomes = [e.data for e in events if e.type == "call.completed"]
        assert outcomes  # (the SDK may have retried the 503 once)
        for completed in outcomes:
            assert completed["status"] == 502
            assert "CERTIFICATE_VERIFY_FAILED" in completed["error"]


def test_calls_leave_through_the_egress_proxy_botocore_would_use(
    tls_moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY set, as in a network whose only way out is a proxy: jitgate tunnels through
    it (CONNECT), with TLS to the upstream end to end inside the tunnel."""
    assert tls_moto.ca_file is not None
    monkeypatch.setenv("AWS_CA_BUNDLE", tls_moto.ca_file)
    proxy = ForwardProxy(credentials=("egress", "pw"))
    for name in ("https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://egress:pw@127.0.0.1:{proxy.port}")
    try:
        for stack in _stack(tls_moto, tmp_path / "home"):
            grant = stack.grant(["s3:GetObject"], [object_arn(KEY)])
            s3 = stack.client("s3", grant.creds)
            for _ in range(2):
                assert s3.get_object(Bucket="reports", Key=KEY)["Body"].read() == BODY
            s3.close()
    finally:
        proxy.close()
    authority = tls_moto.endpoint.split("://", 1)[1].encode()
    # moto closes every connection ("Connection: close"), so each call opened its own tunnel
    # (tests/gateway/test_proxy.py shows a tunnel pooled and reused).
    assert len(proxy.tunnels) == 2
    for tunnel in proxy.tunnels:
        assert tunnel.startswith(b"CONNECT %s HTTP/1.1\r\n" % authority)
        assert b"proxy-authorization: Basic ZWdyZXNzOnB3\r\n" in tunnel
