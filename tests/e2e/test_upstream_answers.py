"""What jitgate passes back from AWS, and what it will not send there. Found in review
(session 10), each a real hole before its fix:

- an upstream error that quoted jitgate's own signing material (S3's SignatureDoesNotMatch
  names the access key id, the signature and the canonical request with the session token) was
  relayed verbatim: the agent got a request signed by jitgate that it could replay straight to
  AWS, unrecorded, after its grant was revoked;
- the way to provoke one: a non-ASCII header value, which AWS reads as Latin-1 and so never
  agrees with the signature jitgate makes over it, was forwarded;
- a region no AWS endpoint has was recorded as allowed, then failed with a 500;
- hop-by-hop headers of the upstream's (Upgrade, Trailer, those its Connection header names)
  were relayed to the client.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import pytest
from botocore.credentials import Credentials

from .conftest import OBJECT_ARN, Stack, table_arn
from .recording import Forwarded, RecordingUpstream
from .wire import RawResponse, raw_request, sign_by_hand

pytestmark = pytest.mark.slow

JITGATE_KEY = "ASIAJITGATEOWNKEY0001"
# Shaped like an STS session token: base64, with '/', '+' and '=' that encoders may escape.
JITGATE_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDx+jitgate/own+token==" * 3

Respond = Callable[[socket.socket, Forwarded], None]


def answer(status: str, body: bytes, headers: list[tuple[str, str]] = ()) -> Respond:  # type: ignore[assignment]
    def respond(connection: socket.socket, forwarded: Forwarded) -> None:
        head = [f"HTTP/1.1 {status}", "x-amz-request-id: upstream-id", "Connection: close"]
        head += [f"{name}: {value}" for name, value in headers]
        head.append(f"Content-Length: {len(body)}")
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    return respond


@pytest.fixture
def over(make_stack: Callable[..., Stack]) -> Iterator[Callable[[Respond], tuple[RecordingUpstream, Stack]]]:  # fmt: skip
    """``over(respond)``: jitgate, signing with a session identity of its own, over an upstream
    that answers every call with ``respond``."""
    upstreams: list[RecordingUpstream] = []

    def make(respond: Respond) -> tuple[RecordingUpstream, Stack]:
        upstream = RecordingUpstream(respond)
        upstreams.append(upstream)
        identity = Credentials(JITGATE_KEY, "jitgate-own-secret", JITGATE_TOKEN)
        return upstream, make_stack(upstream=upstream.url, credentials=identity)

    yield make
    for upstream in upstreams:
        upstream.close()


def port_of(stack: Stack) -> int:
    port = urlsplit(stack.aws_url).port
    assert port is not None
    return port


def s3_get(
    stack: Stack,
    creds: dict[str, str],
    path: str = "/reports/2026/q3.csv",
    *,
    signed: dict[str, str] | None = None,
    unsigned: list[tuple[str, str]] | None = None,
    region: str = "us-east-1",
) -> RawResponse:
    host = f"127.0.0.1:{port_of(stack)}"
    empty = hashlib.sha256(b"").hexdigest()
    _, headers = sign_by_hand(
        "GET",
        host,
        path,
        creds=creds,
        service="s3",
        payload_line=empty,
        headers={"x-amz-content-sha256": empty, **(signed or {})},
        region=region,
    )
    sent = [("Host", host), *headers.items(), *(unsigned or [])]
    return raw_request(port_of(stack), "GET", path.encode(), sent)


def quoted_signature_mismatch(connection: socket.socket, forwarded: Forwarded) -> None:
    """S3's answer when its canonical request differs from the signer's."""
    headers = forwarded.headers
    authorization = headers["authorization"]
    names = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    canonical = "\n".join([*(f"{name}:{headers[name]}" for name in names), ";".join(names)])
    body = (
        "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated "
        "does not match the signature you provided.</Message>"
        f"<AWSAccessKeyId>{JITGATE_KEY}</AWSAccessKeyId>"
        f"<SignatureProvided>{authorization.split('Signature=')[1]}</SignatureProvided>"
        f"<CanonicalRequest>{escape(canonical)}</CanonicalRequest></Error>"
    ).encode()
    answer("403 Forbidden", body, [("Content-Type", "application/xml")])(connection, forwarded)


def quoted_token_json(connection: socket.socket, forwarded: Forwarded) -> None:
    """A JSON service's signature error, quoting the canonical string (token included)."""
    message = (
        "The request signature we calculated does not match the signature you provided. The "
        f"Canonical String for this request should have been 'x-amz-security-token:"
        f"{forwarded.headers['x-amz-security-token']}'"
    )
    body = json.dumps({"__type": "InvalidSignatureException", "message": message}).encode()
    answer(
        "400 Bad Request",
        body,
        [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", "upstream-id")],
    )(connection, forwarded)


def test_an_s3_error_quoting_jitgates_signature_is_withheld(over) -> None:  # type: ignore[no-untyped-def]
    upstream, stack = over(quoted_signature_mismatch)
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])

    response = s3_get(stack, grant.creds)

    (forwarded,) = upstream.wait(1)
    signature = forwarded.headers["authorization"].split("Signature=")[1]
    for secret in (JITGATE_KEY, JITGATE_TOKEN, signature):
        assert secret.encode() not in response.body
        assert not any(secret in value for value in response.headers.values())
    assert response.status == 502
    assert b"<Code>BadGateway</Code>" in response.body
    assert b"403 SignatureDoesNotMatch" in response.body
    outcome = stack.wait_events(grant.id, lambda es: es[-1].type == "call.completed")[-1]
    assert outcome.data["status"] == 502
    assert "SignatureDoesNotMatch" in outcome.data["error"]
    assert outcome.data["upstream_request_id"] == "upstream-id"
    assert not [e for e in stack.events(grant.id) if e.type == "call.denied"]


def test_a_json_error_quoting_jitgates_session_token_is_withheld(over) -> None:  # type: ignore[no-untyped-def]
    _, stack = over(quoted_token_json)
    grant = stack.grant(["dynamodb:GetItem"], [table_arn("orders")])
    client = stack.client("dynamodb", grant.creds)

    with pytest.raises(client.exceptions.ClientError) as caught:
        client.get_item(TableName="orders", Key={"id": {"S": "o-1"}})

    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert JITGATE_TOKEN not in json.dumps(error)
    assert "400 InvalidSignatureException" in error["Error"]["Message"]


def test_other_upstream_errors_are_relayed_as_they_came(over) -> None:  # type: ignore[no-untyped-def]
    """Only an answer quoting what jitgate signed with is withheld: AWS's own errors, small or
    larger than the part read to check them, reach the agent byte for byte."""
    small = b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"  # fmt: skip
    big = b"<Error><Code>InvalidArgument</Code><Message>" + b"m" * 200_000 + b"</Message></Error>"
    for status, body in (("404 Not Found", small), ("400 Bad Request", big)):
        _, stack = over(answer(status, body, [("Content-Type", "application/xml")]))
        grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
        response = s3_get(stack, grant.creds)
        assert response.status == int(status.split()[0])
        assert response.body == body


@pytest.mark.parametrize("how", ["signed x-amz-meta", "unsigned header"])
def test_a_non_ascii_header_value_is_refused_and_never_forwarded(over, how: str) -> None:  # type: ignore[no-untyped-def]
    upstream, stack = over(quoted_signature_mismatch)
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])
    if how == "signed x-amz-meta":
        response = s3_get(stack, grant.creds, signed={"x-amz-meta-note": "café"})
    else:
        response = s3_get(stack, grant.creds, unsigned=[("X-Note", "café")])

    assert response.status == 400
    assert b"<Code>InvalidRequest</Code>" in response.body
    assert b"is not ASCII" in response.body
    assert upstream.wait(1, timeout=0.5) == []
    denied = stack.denial(response.headers["x-amz-request-id"])
    assert denied.grant_id == grant.id and denied.actor == f"agent:{grant.agent.name}"


@pytest.mark.parametrize("region", ["useast1", "us-east-1-fips", "local"])
def test_a_region_jitgate_cannot_forward_to_is_refused_before_it_is_allowed(
    make_stack: Callable[..., Stack], region: str
) -> None:
    """With no upstream override (real AWS) only regions shaped like AWS's are forwarded; the
    credential scope admits more. Before the fix such a call was recorded as allowed and then
    failed with a 500."""
    stack = make_stack()
    endpoint = stack.thread.endpoint
    assert endpoint is not None
    endpoint.upstream._override = None  # as when jitgate forwards to AWS itself
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])

    response = s3_get(stack, grant.creds, region=region)

    assert response.status == 400, response
    assert f"does not forward to region '{region}'".encode() in response.body
    events = stack.wait_events(grant.id, lambda es: bool(es))
    assert [e.type for e in events] == ["call.denied"]


def test_hop_by_hop_headers_of_the_upstream_are_not_relayed(over) -> None:  # type: ignore[no-untyped-def]
    headers = [
        ("Keep-Alive", "timeout=600"),
        ("Upgrade", "h2c"),
        ("Proxy-Authenticate", "Basic realm=upstream"),
        ("Trailer", "x-amz-checksum-crc32"),
        ("X-Private-Hop", "for the next hop only"),
        ("Connection", "Upgrade, X-Private-Hop, close"),
        ("x-amz-version-id", "v1"),
    ]
    _, stack = over(answer("200 OK", b"data", headers))
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])

    response = s3_get(stack, grant.creds)

    assert response.status == 200 and response.body == b"data"
    hop_by_hop = {"keep-alive", "upgrade", "proxy-authenticate", "trailer", "x-private-hop"}
    assert hop_by_hop.isdisjoint(response.headers)
    assert response.headers["x-amz-version-id"] == "v1"


def signature_mismatch_quoting(forwarded: Forwarded, *, pad: int = 0) -> bytes:
    """S3's SignatureDoesNotMatch with the canonical request also as hex bytes (``pad`` more
    of them make it as large as a long canonical request does)."""
    canonical = f"GET\n/reports/2026/q3.csv\n\nx-amz-security-token:{JITGATE_TOKEN}\n"
    hexed = canonical.encode().hex(" ") + " 00" * pad
    return (
        "<Error><Code>SignatureDoesNotMatch</Code>"
        f"<AWSAccessKeyId>{JITGATE_KEY}</AWSAccessKeyId>"
        f"<CanonicalRequest>{escape(canonical)}</CanonicalRequest>"
        f"<CanonicalRequestBytes>{hexed}</CanonicalRequestBytes></Error>"
    ).encode()


def chunked(status: str, body: bytes) -> Respond:
    def respond(connection: socket.socket, forwarded: Forwarded) -> None:
        head = f"HTTP/1.1 {status}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        connection.sendall(head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    return respond


def escaped_token(how: str) -> str:
    if how == "json":
        return JITGATE_TOKEN.replace("/", "\\/").replace("=", "\\u003d").replace("+", "\\u002b")
    return JITGATE_TOKEN.replace("+", "&#43;").replace("/", "&#x2F;")


QUOTING: dict[str, Callable[[Forwarded], Respond]] = {
    # found in review of the first version: each of these reached the agent
    "over the size checked, by length": lambda f: answer(
        "403 Forbidden", signature_mismatch_quoting(f, pad=100_000)
    ),
    "over the size checked, chunked": lambda f: chunked(
        "403 Forbidden", signature_mismatch_quoting(f, pad=100_000)
    ),
    "gzip-encoded": lambda f: answer(
        "403 Forbidden",
        gzip.compress(signature_mismatch_quoting(f)),
        [("Content-Encoding", "gzip")],
    ),
    "an encoding jitgate cannot read": lambda f: answer(
        "403 Forbidden", b"\x00opaque", [("Content-Encoding", "br")]
    ),
    "the token JSON-escaped": lambda f: answer(
        "400 Bad Request",
        (
            '{"__type":"InvalidSignatureException","message":"token ' + escaped_token("json") + '"}'
        ).encode(),
    ),
    "the token as XML character references": lambda f: answer(
        "403 Forbidden",
        f"<Error><Code>SignatureDoesNotMatch</Code><M>{escaped_token('xml')}</M></Error>".encode(),
    ),
    "the key id in a header": lambda f: answer(
        "403 Forbidden",
        b"<Error><Code>AccessDenied</Code></Error>",
        [("x-amz-detail", JITGATE_KEY)],
    ),
}


@pytest.mark.parametrize("how", sorted(QUOTING))
def test_an_error_answer_that_cannot_be_shown_clean_is_withheld(over, how: str) -> None:  # type: ignore[no-untyped-def]
    def respond(connection: socket.socket, forwarded: Forwarded) -> None:
        QUOTING[how](forwarded)(connection, forwarded)

    upstream, stack = over(respond)
    grant = stack.grant(["s3:GetObject"], [OBJECT_ARN])

    response = s3_get(stack, grant.creds, unsigned=[("Accept-Encoding", "gzip")])

    (forwarded,) = upstream.wait(1)
    signature = forwarded.headers["authorization"].split("Signature=")[1]
    assert response.status == 502, response
    assert b"<Code>BadGateway</Code>" in response.body
    for secret in (JITGATE_KEY, signature, *JITGATE_TOKEN.split("/")):
        if len(secret) >= 8:
            assert secret.encode() not in response.body
            assert not any(secret in value for value in response.headers.values())
