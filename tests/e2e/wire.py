"""Hand-made AWS requests: SigV4-signed with botocore (at a chosen time, with chosen headers),
and aws-chunked bodies with chunk signatures, for what no SDK call would send."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


@contextlib.contextmanager
def botocore_clock_shifted(offset: timedelta) -> Iterator[None]:
    """Every botocore signature made inside is dated ``offset`` away from now."""
    real = botocore.auth.get_current_datetime

    def shifted(*args: object, **kwargs: object) -> datetime:
        return real(*args, **kwargs) + offset  # type: ignore[arg-type]

    botocore.auth.get_current_datetime = shifted  # type: ignore[assignment]
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = real  # type: ignore[assignment]


def credentials_of(creds: dict[str, str], *, token: str | None | bool = True) -> Credentials:
    session_token = creds["SessionToken"] if token is True else (token or None)
    return Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], session_token)


def sign(
    method: str,
    url: str,
    *,
    credentials: Credentials,
    service: str = "s3",
    region: str = "us-east-1",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    s3_style: bool = True,
) -> dict[str, str]:
    """The headers of ``method url`` signed with botocore's SigV4 (S3 flavour by default: the
    path is signed as given, and ``x-amz-content-sha256`` is sent)."""
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    signer_cls = botocore.auth.S3SigV4Auth if s3_style else botocore.auth.SigV4Auth
    signer_cls(credentials, service, region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def signature_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].rsplit("Signature=", 1)[1]


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signed_chunks(
    chunks: list[bytes],
    *,
    secret: str,
    headers: dict[str, str],
    region: str = "us-east-1",
    service: str = "s3",
) -> list[bytes]:
    """The aws-chunked frames (one per chunk, then the final empty one) of a
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD body, chained from the request's seed signature."""
    timestamp = headers["X-Amz-Date"]
    date = timestamp[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    key = signing_key(secret, date, region, service)
    previous = signature_of(headers)
    frames = []
    for chunk in [*chunks, b""]:
        string_to_sign = (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{timestamp}\n{scope}\n{previous}\n{EMPTY_SHA256}\n"
            f"{hashlib.sha256(chunk).hexdigest()}"
        )
        previous = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        frame = f"{len(chunk):x};chunk-signature={previous}\r\n".encode()
        frames.append(frame + chunk + b"\r\n" if chunk else frame + b"\r\n")
    return frames


def presign(
    method: str,
    url: str,
    *,
    credentials: Credentials,
    headers: dict[str, str] | None = None,
    expires: int = 60,
) -> str:
    """``url`` presigned with botocore's S3 query signer (the path is signed as given)."""
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
    botocore.auth.S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=expires).add_auth(
        request
    )
    return request.url


@dataclasses.dataclass(frozen=True)
class RawResponse:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes


def read_until_closed(sock: socket.socket, so_far: bytes = b"") -> bytes:
    """Everything the server sends until it closes (or resets) the connection; a server that
    keeps it open past the socket's timeout raises TimeoutError."""
    received = bytearray(so_far)
    try:
        while piece := sock.recv(65536):
            received += piece
    except ConnectionResetError:
        pass
    return bytes(received)


def raw_request(
    port: int,
    method: str,
    target: bytes,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    timeout: float = 10.0,
) -> RawResponse:
    """Send exactly these bytes (no client-side normalisation of the request target) and read
    the answer; the connection is closed after one request."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [f"{name}: {value}".encode() for name, value in headers]
    lines += [b"Connection: close", f"Content-Length: {len(body)}".encode(), b"", b""]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + body)
        received = read_until_closed(sock)
    head, _, rest = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return RawResponse(None, {}, b"")
    status_line, *header_lines = head.split(b"\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.decode("latin-1").partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), parsed, rest)


def sign_by_hand(
    method: str,
    host: str,
    path: str,
    *,
    creds: dict[str, str],
    service: str,
    payload_line: str,
    headers: dict[str, str] | None = None,
    query: str = "",
    presigned: bool = False,
    region: str = "us-east-1",
) -> tuple[str, dict[str, str]]:
    """SigV4 written out step by step (no botocore, no jitgate), for requests no SDK would
    sign: any payload line, any Host. ``query`` must already be in canonical order and
    encoding. Returns (query to send, headers to send)."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    signed = {"host": host, **{k.lower(): v for k, v in (headers or {}).items()}}
    params: dict[str, str] = {}
    if presigned:
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{creds['AccessKeyId']}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": "300",
            "X-Amz-Security-Token": creds["SessionToken"],
        }
    else:
        signed.update({"x-amz-date": stamp, "x-amz-security-token": creds["SessionToken"]})
    names = ";".join(sorted(signed))
    if presigned:
        params["X-Amz-SignedHeaders"] = names
        extra = "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
        query = "&".join(part for part in sorted([*query.split("&"), *extra.split("&")]) if part)
    canonical = "\n".join(
        [
            method,
            path,
            query,
            *(f"{name}:{signed[name].strip()}" for name in sorted(signed)),
            "",
            names,
            payload_line,
        ]
    )
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = signing_key(creds["SecretAccessKey"], stamp[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    sent = {k: v for k, v in signed.items() if k != "host"}
    if presigned:
        return f"{query}&X-Amz-Signature={signature}", sent
    sent["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds['AccessKeyId']}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}"
    )
    return query, sent


def serve_each_connection(server: socket.socket, serve: Callable[[socket.socket], None]) -> None:
    """Hand each connection ``server`` accepts to ``serve``, in a thread of its own, until the
    socket is closed (the tests' small servers: recording upstream, forward proxy, scripted)."""

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
