"""SigV4 verification and signing, checked against botocore's own signer and AWS's published vectors.

Requests come from real boto3 clients (captured at ``before-send``, so nothing touches the
network) or from botocore's signers applied to ``AWSRequest`` objects. The clock is fixed.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from botocore.utils import percent_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgate.awsapi import sigv4
from jitgate.awsapi.sigv4 import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    ChunkedPayloadDecoder,
    SignedRequestInfo,
    SigningKeyCache,
    SigV4Error,
    derive_signing_key,
    parse_auth,
    sign_headers,
    verify,
)

AK = "AKIDEXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE/token+with=odd/chars"
FIXED = datetime(2026, 3, 14, 15, 9, 26)  # what botocore's clock returns: naive UTC
NOW = FIXED.replace(tzinfo=UTC)
HTTP_ENDPOINT = "http://jitgate.test:8750"
HTTPS_ENDPOINT = "https://jitgate.test:8750"

# Headers botocore adds to the prepared request after it has signed it.
ADDED_AFTER_SIGNING = {"content-length", "amz-sdk-invocation-id", "amz-sdk-request"}


@contextlib.contextmanager
def botocore_clock(when: datetime = FIXED) -> Iterator[None]:
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda *a, **k: when):
        yield


# --------------------------------------------------------------------------------------------
# Requests as the gateway sees them


@dataclasses.dataclass(frozen=True)
class Wire:
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes | None  # None when streamed (aws-chunked)
    raw_body: bytes

    def with_headers(self, **changes: str | None) -> Wire:
        headers = dict(self.headers)
        for name, value in changes.items():
            name = name.replace("_", "-")
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        return dataclasses.replace(self, headers=headers)


def to_wire(method: str, url: str, headers: Any, body: Any) -> Wire:
    parts = urlsplit(url)
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered[name.lower()] = value.decode("utf-8") if isinstance(value, bytes) else value
    lowered["host"] = parts.netloc
    if body is None:
        raw = b""
    elif isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = body.read()
    streamed = "aws-chunked" in lowered.get("content-encoding", "")
    return Wire(method, parts.path, parts.query, lowered, None if streamed else raw, raw)


_NO_BODY_OVERRIDE: Any = object()


def check(
    w: Wire,
    *,
    secret: str = SK,
    now: datetime = NOW,
    body: bytes | None = _NO_BODY_OVERRIDE,
    **kwargs: Any,
) -> SignedRequestInfo:
    parsed = parse_auth(w.method, w.raw_path, w.query, w.headers)
    return verify(
        parsed,
        method=w.method,
        raw_path=w.raw_path,
        query=w.query,
        headers=w.headers,
        body=w.body if body is _NO_BODY_OVERRIDE else body,
        secret_key=secret,
        now=now,
        **kwargs,
    )


def rejects(w: Wire, code: str, **kwargs: Any) -> SigV4Error:
    with pytest.raises(SigV4Error) as excinfo:
        check(w, **kwargs)
    assert excinfo.value.code == code, excinfo.value
    return excinfo.value


class _Sent(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def make_client(service: str, *, endpoint: str | None, region: str, token: str | None, **config):
    session = boto3.session.Session(
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        aws_session_token=token,
        region_name=region,
    )
    return session.client(
        service, endpoint_url=endpoint, config=Config(retries={"max_attempts": 1}, **config)
    )


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    service: str
    operation: str
    params: dict[str, Any]
    endpoint: str = HTTP_ENDPOINT
    region: str = "us-east-1"
    token: str | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    signing_service: str | None = None


PATH_STYLE = {"s3": {"addressing_style": "path"}}
ODD_KEY = "dir name/a b+c%2F../~tilde/é.txt"

CASES = [
    Case(
        "s3-get-odd-key",
        "s3",
        "get_object",
        {"Bucket": "reports", "Key": ODD_KEY},
        config=PATH_STYLE,
    ),
    Case(
        "s3-get-range-version-response-params",
        "s3",
        "get_object",
        {
            "Bucket": "reports",
            "Key": "2026/q3.csv",
            "Range": "bytes=0-99",
            "VersionId": "3/L4kqtJl40Nr8X8gdRQBpUMLUo",
            "ResponseContentDisposition": 'attachment; filename="q3 report.csv"',
        },
        config=PATH_STYLE,
    ),
    Case(
        "s3-get-unicode-key",
        "s3",
        "get_object",
        {"Bucket": "reports", "Key": "日本/ファイル ü~.txt"},
        token=TOKEN,
        config=PATH_STYLE,
    ),
    Case(
        "s3-put-odd-key",
        "s3",
        "put_object",
        {"Bucket": "reports", "Key": ODD_KEY, "Body": b"hello, world\n", "ContentType": "text/csv"},
        config=PATH_STYLE,
    ),
    Case(
        "s3-put-empty-body",
        "s3",
        "put_object",
        {"Bucket": "reports", "Key": "empty", "Body": b""},
        config=PATH_STYLE,
    ),
    Case(
        "s3-put-unsigned-payload",
        "s3",
        "put_object",
        {"Bucket": "reports", "Key": "dir/../x", "Body": b"unsigned body"},
        endpoint=HTTPS_ENDPOINT,
        config={
            "s3": {"addressing_style": "path", "payload_signing_enabled": False},
            "request_checksum_calculation": "when_required",
        },
    ),
    Case(
        "s3-put-streaming-unsigned-trailer",
        "s3",
        "put_object",
        {"Bucket": "reports", "Key": "streamed.bin", "Body": b"0123456789" * 300},
        endpoint=HTTPS_ENDPOINT,
        token=TOKEN,
        config=PATH_STYLE,
    ),
    Case(
        "s3-delete-dot-segments",
        "s3",
        "delete_object",
        {"Bucket": "reports", "Key": "a/./b/../c d"},
        config=PATH_STYLE,
    ),
    Case(
        "s3-acl-bare-param",
        "s3",
        "get_object_acl",
        {"Bucket": "reports", "Key": "k"},
        config=PATH_STYLE,
    ),
    Case(
        "s3-list-empty-param",
        "s3",
        "list_objects_v2",
        {"Bucket": "reports", "Prefix": "", "Delimiter": "/", "StartAfter": "a b+c"},
        config=PATH_STYLE,
    ),
    Case(
        "s3-virtual-host",
        "s3",
        "get_object",
        {"Bucket": "reports", "Key": "x"},
        endpoint="http://s3.jitgate.test:8750",
        config={"s3": {"addressing_style": "virtual"}},
    ),
    Case(
        "s3control-repeated-params",
        "s3control",
        "list_jobs",
        {"AccountId": "123456789012", "JobStatuses": ["Active", "New", "Active"]},
        signing_service="s3",
    ),
    Case(
        "dynamodb-json",
        "dynamodb",
        "get_item",
        {"TableName": "orders", "Key": {"pk": {"S": "a b"}}},
        token=TOKEN,
    ),
    Case(
        "sqs-json",
        "sqs",
        "send_message",
        {"QueueUrl": f"{HTTP_ENDPOINT}/1/q", "MessageBody": "x y"},
    ),
    Case(
        "sns-query-form",
        "sns",
        "publish",
        {"TopicArn": "arn:aws:sns:eu-west-1:123456789012:t", "Message": "hi there & more ~+"},
        region="eu-west-1",
    ),
    Case(
        "sts-query-form",
        "sts",
        "assume_role",
        {"RoleArn": "arn:aws:iam::123456789012:role/r", "RoleSessionName": "agent-task"},
        token=TOKEN,
    ),
    Case("iam-query-global", "iam", "list_users", {"PathPrefix": "/a b/"}),
    Case(
        "lambda-arn-qualifier",
        "lambda",
        "invoke",
        {
            "FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:my-fn",
            "Qualifier": "prod",
            "Payload": b'{"k": "v"}',
        },
    ),
    Case("lambda-colon-in-path", "lambda", "get_function", {"FunctionName": "my-fn:prod"}),
    Case("lambda-empty-list", "lambda", "list_functions", {}),
]

_CAPTURED: dict[str, Wire] = {}


def captured(case: Case) -> Wire:
    """The request boto3 sends for ``case``, as the gateway would receive it."""
    if case.id not in _CAPTURED:
        client = make_client(
            case.service,
            endpoint=case.endpoint,
            region=case.region,
            token=case.token,
            **case.config,
        )

        def stop(request: Any, **kwargs: Any) -> None:
            raise _Sent(request)

        client.meta.events.register("before-send", stop)
        with botocore_clock(), pytest.raises(_Sent) as sent:
            getattr(client, case.operation)(**case.params)
        request = sent.value.request
        _CAPTURED[case.id] = to_wire(request.method, request.url, request.headers, request.body)
    return _CAPTURED[case.id]


def case_by_id(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


# --------------------------------------------------------------------------------------------
# AWS's published examples


AWS_SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_NOW = datetime(2013, 5, 24, 0, 2, tzinfo=UTC)
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"


def aws_wire(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes | None
) -> Wire:
    return Wire(method, path, query, headers, body, body or b"")


def test_aws_example_get_object_with_range() -> None:
    # docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, "GET Object"
    w = aws_wire(
        "GET",
        "/test.txt",
        "",
        {
            "host": "examplebucket.s3.amazonaws.com",
            "range": "bytes=0-9",
            "x-amz-content-sha256": EMPTY_SHA256,
            "x-amz-date": "20130524T000000Z",
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1"
            "/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        },
        b"",
    )
    info = check(w, secret=AWS_SK, now=AWS_NOW)
    assert info.access_key_id == "AKIAIOSFODNN7EXAMPLE"
    assert info.signed_headers == ("host", "range", "x-amz-content-sha256", "x-amz-date")
    assert info.amz_date == datetime(2013, 5, 24, tzinfo=UTC)
    rejects(w.with_headers(range="bytes=0-10"), "SignatureDoesNotMatch", secret=AWS_SK, now=AWS_NOW)


def test_aws_example_presigned_get() -> None:
    # docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    w = aws_wire("GET", "/test.txt", query, {"host": "examplebucket.s3.amazonaws.com"}, None)
    info = check(w, secret=AWS_SK, now=AWS_NOW)
    assert info.presigned and info.payload_hash == UNSIGNED_PAYLOAD
    rejects(w, "AccessDenied", secret=AWS_SK, now=AWS_NOW + timedelta(days=1))


AWS_CHUNKED_HEADERS = {
    "host": "s3.amazonaws.com",
    "x-amz-date": "20130524T000000Z",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3"
    "/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;"
    "x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
    "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    "x-amz-content-sha256": STREAMING_SIGNED,
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560",
    "content-length": "66824",
}
AWS_CHUNKED_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    + b"\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    + b"\r\n\r\n"
)


def test_aws_example_signed_chunked_upload() -> None:
    # docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html
    w = aws_wire("PUT", "/examplebucket/chunkObject.txt", "", AWS_CHUNKED_HEADERS, None)
    info = check(w, secret=AWS_SK, now=AWS_NOW)
    assert info.payload_hash == STREAMING_SIGNED
    assert len(AWS_CHUNKED_BODY) == 66824
    decoder = ChunkedPayloadDecoder.for_request(info, w.headers)
    assert decoder.feed(AWS_CHUNKED_BODY) == b"a" * 66560
    decoder.finish()
    assert decoder.done and decoder.trailers == {}


def test_aws_example_signed_chunked_upload_with_trailer() -> None:
    # docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html
    body = (
        b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2"
        b"\r\n" + b"a" * 65536 + b"\r\n"
        b"400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7"
        b"\r\n" + b"a" * 1024 + b"\r\n"
        b"0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n"
        b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
        b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
        b"\r\n\r\n"
    )
    decoder = ChunkedPayloadDecoder(
        STREAMING_SIGNED_TRAILER,
        signing_key=derive_signing_key(AWS_SK, "20130524", "us-east-1", "s3"),
        timestamp="20130524T000000Z",
        credential_scope=AWS_SCOPE,
        seed_signature="106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        decoded_content_length=66560,
        declared_trailers=["x-amz-checksum-crc32c"],
    )
    assert decoder.feed(body) == b"a" * 66560
    decoder.finish()
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}

    tampered = body.replace(b"sOO8/Q==", b"sOO8/Q=A")
    decoder = ChunkedPayloadDecoder(
        STREAMING_SIGNED_TRAILER,
        signing_key=derive_signing_key(AWS_SK, "20130524", "us-east-1", "s3"),
        timestamp="20130524T000000Z",
        credential_scope=AWS_SCOPE,
        seed_signature="106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
    )
    with pytest.raises(SigV4Error, match="trailer signature") as excinfo:
        decoder.feed(tampered)
    assert excinfo.value.code == "SignatureDoesNotMatch"


# --------------------------------------------------------------------------------------------
# Requests produced by boto3 clients


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verifies_what_boto3_sends(case: Case) -> None:
    w = captured(case)
    info = check(w)
    assert info.access_key_id == AK
    assert info.region == case.region
    assert info.service == (case.signing_service or case.service)
    assert info.amz_date == NOW
    assert info.security_token == case.token
    assert not info.presigned
    assert "host" in info.signed_headers
    assert info.signing_key == derive_signing_key(SK, "20260314", info.region, info.service)
    assert info.signature in w.headers["authorization"]
    if info.service == "s3":
        assert info.payload_hash == w.headers["x-amz-content-sha256"]
    else:
        assert info.payload_hash == hashlib.sha256(w.raw_body).hexdigest()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sign_is_byte_identical_to_boto3(case: Case) -> None:
    w = captured(case)
    info = check(w)
    forwarded = {k: v for k, v in w.headers.items() if k not in ADDED_AFTER_SIGNING}
    added = sign_headers(
        method=w.method,
        raw_path=w.raw_path,
        query=w.query,
        headers=forwarded,  # still carries boto3's own authorization etc.: ignored
        payload_hash=info.payload_hash,
        access_key=AK,
        secret_key=SK,
        session_token=case.token,
        region=info.region,
        service=info.service,
        now=NOW,
        key_cache=SigningKeyCache(),
    )
    for name, value in added.items():
        assert value == w.headers[name], name
    assert ("x-amz-content-sha256" in added) == ("x-amz-content-sha256" in w.headers)
    assert ("x-amz-security-token" in added) == (case.token is not None)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verify_accepts_own_signature_and_rejects_wrong_secret(case: Case) -> None:
    w = captured(case)
    info = check(w)
    added = sign_headers(
        method=w.method,
        raw_path=w.raw_path,
        query=w.query,
        headers=w.headers,
        payload_hash=info.payload_hash,
        access_key="JITGATEUPSTREAM",
        secret_key="upstream-secret",
        session_token=None,
        region=info.region,
        service=info.service,
        now=NOW + timedelta(seconds=1),
    )
    resigned_headers = {
        k: v
        for k, v in w.headers.items()
        if k not in {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
    }
    resigned = dataclasses.replace(w, headers={**resigned_headers, **added})
    again = check(resigned, secret="upstream-secret")
    assert again.access_key_id == "JITGATEUPSTREAM"
    assert again.security_token is None
    assert again.payload_hash == info.payload_hash
    rejects(w, "SignatureDoesNotMatch", secret=SK + "x")


# --------------------------------------------------------------------------------------------
# Tampering, clocks, malformed requests


def test_tampered_path_is_rejected() -> None:
    w = captured(case_by_id("s3-get-odd-key"))
    other = w.raw_path.replace("tilde", "tildf")
    err = rejects(dataclasses.replace(w, raw_path=other), "SignatureDoesNotMatch")
    assert err.status == 403
    assert err.canonical_request is not None and other in err.canonical_request
    # An encoding difference is a different path too (S3 signs the path as sent).
    rejects(
        dataclasses.replace(w, raw_path=w.raw_path.replace("~", "%7E")), "SignatureDoesNotMatch"
    )


def test_tampered_non_s3_path_is_rejected() -> None:
    w = captured(case_by_id("lambda-colon-in-path"))
    assert "%3A" in w.raw_path
    rejects(
        dataclasses.replace(w, raw_path=w.raw_path.replace("prod", "dev")), "SignatureDoesNotMatch"
    )


@pytest.mark.parametrize(
    "new_query",
    [
        lambda q: q + "&fetch-owner=true",
        lambda q: q.replace("delimiter=%2F", "delimiter=%2C"),
        lambda q: q.replace("prefix=&", ""),
        lambda q: "",
    ],
    ids=["added", "changed", "removed-empty", "dropped"],
)
def test_tampered_query_is_rejected(new_query: Any) -> None:
    w = captured(case_by_id("s3-list-empty-param"))
    changed = new_query(w.query)
    assert changed != w.query
    rejects(dataclasses.replace(w, query=changed), "SignatureDoesNotMatch")


def test_repeated_params_are_all_signed() -> None:
    w = captured(case_by_id("s3control-repeated-params"))
    assert w.query.count("jobStatuses=") == 3
    rejects(
        dataclasses.replace(w, query=w.query.replace("&jobStatuses=Active", "", 1)),
        "SignatureDoesNotMatch",
    )


def test_tampered_signed_header_is_rejected_unsigned_header_is_not() -> None:
    w = captured(case_by_id("dynamodb-json"))
    rejects(w.with_headers(x_amz_target="DynamoDB_20120810.DeleteItem"), "SignatureDoesNotMatch")
    rejects(w.with_headers(x_amz_security_token=TOKEN + "x"), "SignatureDoesNotMatch")
    # user-agent is never signed, so it may change in transit.
    assert check(w.with_headers(user_agent="something/else")).service == "dynamodb"


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u2028", "\u0085", "\u1680"])
def test_unicode_whitespace_cannot_stand_in_for_a_signed_space(space: str) -> None:
    """Found in review: a captured request replayed with a space of a signed header value
    swapped for Unicode whitespace verified (str.split() collapsed it), and jitgate forwarded
    those bytes, which the agent never signed, under its own signature."""
    request, _ = botocore_signed(
        service="s3",
        method="PUT",
        path="/reports/q3.csv",
        query="",
        headers={"x-amz-meta-note": "pay alice", "content-disposition": "attachment; a b"},
        body=b"",
        token=None,
    )
    w = to_wire("PUT", request.url, request.headers, b"")
    check(w)
    rejects(w.with_headers(x_amz_meta_note=f"pay{space}alice"), "SignatureDoesNotMatch")
    rejects(w.with_headers(x_amz_meta_note=f"pay alice{space}"), "SignatureDoesNotMatch")
    rejects(w.with_headers(content_disposition=f"attachment;{space}a b"), "SignatureDoesNotMatch")


def test_trimall_collapses_only_ascii_spaces_and_tabs() -> None:
    assert sigv4._trimall("  a   b\t\tc ") == "a b c"
    assert sigv4._trimall("\ta \t b\t") == "a b"
    assert sigv4._trimall("café  au lait ") == "café au lait"
    assert sigv4._trimall("a\u00a0 b") == "a\u00a0 b"
    assert sigv4._trimall("\u3000a\u3000") == "\u3000a\u3000"
    assert sigv4._trimall("") == ""


def test_signed_header_missing_from_request() -> None:
    w = captured(case_by_id("dynamodb-json"))
    err = rejects(w.with_headers(x_amz_target=None), "SignatureDoesNotMatch")
    assert "x-amz-target" in err.message


def test_unsigned_security_token_is_refused() -> None:
    w = captured(case_by_id("sqs-json")).with_headers(x_amz_security_token=TOKEN)
    rejects(w, "IncompleteSignature")


def test_tampered_body_s3_declared_hash() -> None:
    w = captured(case_by_id("s3-put-odd-key"))
    err = rejects(w, "XAmzContentSHA256Mismatch", body=w.raw_body + b"!")
    assert err.status == 400
    # Streaming the body instead trusts the signed declaration (AWS checks it upstream).
    assert check(w, body=None).payload_hash == hashlib.sha256(w.raw_body).hexdigest()


def test_tampered_body_non_s3_changes_the_signature() -> None:
    w = captured(case_by_id("sns-query-form"))
    rejects(w, "SignatureDoesNotMatch", body=w.raw_body.replace(b"hi", b"ho"))
    rejects(w, "InvalidRequest", body=None)  # nothing to hash and no declared hash


def test_unsigned_payload_accepts_any_body() -> None:
    w = captured(case_by_id("s3-put-unsigned-payload"))
    assert w.headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    assert check(w, body=b"different").payload_hash == UNSIGNED_PAYLOAD
    assert check(w, body=None).payload_hash == UNSIGNED_PAYLOAD
    # The raw path keeps its dot segments: S3 signs exactly what is sent.
    assert "/../" in w.raw_path


def test_s3_without_content_sha256_header() -> None:
    w = captured(case_by_id("s3-get-odd-key")).with_headers(x_amz_content_sha256=None)
    rejects(w, "InvalidRequest")


def test_bad_content_sha256_value() -> None:
    w = captured(case_by_id("s3-get-odd-key")).with_headers(x_amz_content_sha256="nope")
    rejects(w, "InvalidArgument")


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (timedelta(minutes=5), True),
        (-timedelta(minutes=5), True),
        (timedelta(minutes=5, seconds=1), False),
        (-timedelta(minutes=5, seconds=1), False),
        (timedelta(days=1), False),
    ],
)
def test_clock_skew(offset: timedelta, ok: bool) -> None:
    w = captured(case_by_id("dynamodb-json"))
    if ok:
        check(w, now=NOW + offset)
    else:
        rejects(w, "RequestTimeTooSkewed", now=NOW + offset)


def test_custom_skew_allowance() -> None:
    w = captured(case_by_id("dynamodb-json"))
    check(w, now=NOW + timedelta(minutes=14), max_skew=timedelta(minutes=15))
    rejects(
        w, "RequestTimeTooSkewed", now=NOW + timedelta(seconds=31), max_skew=timedelta(seconds=30)
    )


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        check(captured(case_by_id("dynamodb-json")), now=FIXED)


def test_scope_date_must_match_request_date() -> None:
    w = captured(case_by_id("dynamodb-json"))
    auth = w.headers["authorization"].replace("/20260314/", "/20260313/")
    err = rejects(w.with_headers(authorization=auth), "AuthorizationHeaderMalformed")
    assert "date" in err.message
    # Moving x-amz-date to another day (within the skew) is caught the same way.
    rejects(
        w.with_headers(x_amz_date="20260315T000000Z"),
        "AuthorizationHeaderMalformed",
        now=datetime(2026, 3, 15, tzinfo=UTC),
    )
    # Within the same day it is a signature mismatch (the time is signed).
    rejects(w.with_headers(x_amz_date="20260314T150927Z"), "SignatureDoesNotMatch")


def _auth(w: Wire, transform: Any) -> Wire:
    return w.with_headers(authorization=transform(w.headers["authorization"]))


@pytest.mark.parametrize(
    ("transform", "code"),
    [
        (lambda a: a.split(", Signature=")[0], "IncompleteSignature"),
        (lambda a: a.replace("Credential=", "Cred="), "AuthorizationHeaderMalformed"),
        (lambda a: a.replace(", SignedHeaders=", ", SignedHeaders"), "IncompleteSignature"),
        (lambda a: a.replace("/aws4_request", ""), "AuthorizationHeaderMalformed"),
        (lambda a: a.replace("/aws4_request", "/aws5_request"), "AuthorizationHeaderMalformed"),
        (lambda a: a.replace("/20260314/", "/2026-03-14/"), "AuthorizationHeaderMalformed"),
        (lambda a: a.replace("AKIDEXAMPLE/", "AKID EXAMPLE/"), "AuthorizationHeaderMalformed"),
        (lambda a: a[:-1], "AuthorizationHeaderMalformed"),
        (lambda a: a + "0", "AuthorizationHeaderMalformed"),
        (
            lambda a: a.replace("SignedHeaders=content-type;host;", "SignedHeaders=content-type;"),
            "AuthorizationHeaderMalformed",
        ),
        (lambda a: a.replace(";host;", ";host;host;"), "AuthorizationHeaderMalformed"),
        (lambda a: a.replace(";host;", ";Host;"), "AuthorizationHeaderMalformed"),
        (lambda a: a + ", Signature=" + "0" * 64, "AuthorizationHeaderMalformed"),
        (lambda a: "AWS4-HMAC-SHA256", "IncompleteSignature"),
        (lambda a: "", "InvalidRequest"),
        (lambda a: "AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", "InvalidRequest"),
        (lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"), "InvalidRequest"),
        (lambda a: "Bearer abc", "InvalidRequest"),
    ],
)
def test_malformed_authorization_header(transform: Any, code: str) -> None:
    rejects(_auth(captured(case_by_id("sns-query-form")), transform), code)


def test_authorization_header_spacing_variants_are_accepted() -> None:
    w = captured(case_by_id("sns-query-form"))
    check(_auth(w, lambda a: a.replace(", ", ",")))
    check(_auth(w, lambda a: a.replace(", ", " ,  ")))
    check(_auth(w, lambda a: "  " + a + "  "))


def test_no_authentication_at_all() -> None:
    w = captured(case_by_id("sns-query-form")).with_headers(authorization=None)
    err = rejects(w, "MissingAuthenticationToken")
    assert err.status == 403


def test_missing_request_date() -> None:
    w = captured(case_by_id("sns-query-form")).with_headers(x_amz_date=None)
    rejects(w, "AccessDenied")
    rejects(w.with_headers(x_amz_date="2026-03-14T15:09:26Z"), "AccessDenied")


def test_date_header_instead_of_x_amz_date() -> None:
    request = AWSRequest(
        method="POST",
        url=f"{HTTP_ENDPOINT}/",
        data=b'{"TableName": "t"}',
        headers={"Date": "whatever", "X-Amz-Target": "DynamoDB_20120810.DescribeTable"},
    )
    with botocore_clock():
        botocore.auth.SigV4Auth(Credentials(AK, SK), "dynamodb", "us-east-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers
    w = to_wire(request.method, request.url, request.headers, request.body)
    assert w.headers["date"] == "Sat, 14 Mar 2026 15:09:26 -0000"
    assert check(w).amz_date == NOW
    rejects(w.with_headers(date="Sat, 14 Mar 2026 15:09:27 -0000"), "SignatureDoesNotMatch")


def test_both_mechanisms_at_once() -> None:
    w = captured(case_by_id("dynamodb-json"))
    presigned = presigned_s3_get({"Bucket": "b", "Key": "k"})
    rejects(dataclasses.replace(w, query=presigned.query), "InvalidArgument")


# --------------------------------------------------------------------------------------------
# Presigned URLs


def presigned_url(
    service: str,
    method: str,
    params: dict[str, Any],
    *,
    token: str | None = None,
    expires: int = 600,
    **config: Any,
) -> str:
    client = make_client(service, endpoint=HTTP_ENDPOINT, region="eu-west-1", token=token, **config)
    with botocore_clock():
        return client.generate_presigned_url(method, Params=params, ExpiresIn=expires)


def presigned_s3_get(
    params: dict[str, Any], *, token: str | None = None, expires: int = 600
) -> Wire:
    url = presigned_url(
        "s3",
        "get_object",
        params,
        token=token,
        expires=expires,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
    )
    return to_wire("GET", url, {}, None)


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize(
    "params",
    [
        {"Bucket": "reports", "Key": "2026/q3.csv"},
        {"Bucket": "reports", "Key": ODD_KEY},
        {
            "Bucket": "reports",
            "Key": "日本/ü x",
            "ResponseContentDisposition": 'attachment; filename="a b"',
        },
        {"Bucket": "reports", "Key": "k", "VersionId": "v+1/2=", "PartNumber": 1},
    ],
    ids=["plain", "odd-key", "unicode-and-response-params", "version"],
)
def test_presigned_s3_get(params: dict[str, Any], token: str | None) -> None:
    w = presigned_s3_get(params, token=token)
    info = check(w)
    assert info.presigned
    assert info.security_token == token
    assert info.payload_hash == UNSIGNED_PAYLOAD
    assert info.signed_headers == ("host",)
    assert info.region == "eu-west-1" and info.service == "s3"
    rejects(dataclasses.replace(w, raw_path=w.raw_path + "x"), "SignatureDoesNotMatch")
    rejects(dataclasses.replace(w, query=w.query + "&x-id=GetObject"), "SignatureDoesNotMatch")
    rejects(dataclasses.replace(w, method="DELETE"), "SignatureDoesNotMatch")
    rejects(w.with_headers(host="elsewhere.test:8750"), "SignatureDoesNotMatch")
    rejects(w, "SignatureDoesNotMatch", secret="wrong")


def test_presigned_token_is_signed() -> None:
    w = presigned_s3_get({"Bucket": "b", "Key": "k"}, token=TOKEN)
    assert "X-Amz-Security-Token=" in w.query
    forged = w.query.replace("X-Amz-Security-Token=", "X-Amz-Security-Token=x")
    rejects(dataclasses.replace(w, query=forged), "SignatureDoesNotMatch")


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (timedelta(seconds=0), None),
        (timedelta(seconds=600), None),
        (timedelta(seconds=601), "AccessDenied"),
        (-timedelta(minutes=4), None),
        (-timedelta(minutes=6), "AccessDenied"),
    ],
)
def test_presigned_validity_window(offset: timedelta, code: str | None) -> None:
    w = presigned_s3_get({"Bucket": "b", "Key": "k"}, expires=600)
    if code is None:
        check(w, now=NOW + offset)
    else:
        err = rejects(w, code, now=NOW + offset)
        assert err.message in ("Request has expired", "Request is not valid yet")


def test_presigned_expired_message() -> None:
    err = rejects(
        presigned_s3_get({"Bucket": "b", "Key": "k"}, expires=60),
        "AccessDenied",
        now=NOW + timedelta(hours=1),
    )
    assert err.message == "Request has expired"


def test_presigned_expiry_longer_than_a_week() -> None:
    w = presigned_s3_get({"Bucket": "b", "Key": "k"}, expires=604801)
    rejects(w, "AuthorizationQueryParametersError")
    assert check(presigned_s3_get({"Bucket": "b", "Key": "k"}, expires=604800)).presigned


@pytest.mark.parametrize(
    "transform",
    [
        lambda q: q.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256&", ""),
        lambda q: q.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1"),
        lambda q: q.replace("X-Amz-Expires=600", "X-Amz-Expires=ten"),
        lambda q: q.replace("X-Amz-Expires=600", "X-Amz-Expires=0"),
        lambda q: q.replace("X-Amz-Expires=600", "X-Amz-Expires=%C2%B2"),
        lambda q: q.replace("X-Amz-Date=2", "X-Amz-Date=%D9%A2"),  # ARABIC-INDIC DIGIT TWO
        lambda q: q.replace("X-Amz-Date=20260314T150926Z", "X-Amz-Date=20260314"),
        lambda q: q.replace("%2Feu-west-1%2F", "%2F"),
        lambda q: q.replace("%2F20260314%2F", "%2F20260315%2F"),
        lambda q: q + "&X-Amz-Signature=" + "0" * 64,
        lambda q: q.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=range"),
    ],
    ids=[
        "no-algorithm",
        "algorithm",
        "expires-nan",
        "expires-zero",
        "expires-superscript-digit",
        "date-arabic-digit",
        "date",
        "scope",
        "scope-date",
        "two-signatures",
        "host-unsigned",
    ],
)
def test_malformed_presigned_query(transform: Any) -> None:
    w = presigned_s3_get({"Bucket": "b", "Key": "k"})
    rejects(dataclasses.replace(w, query=transform(w.query)), "AuthorizationQueryParametersError")


def test_presigned_sigv2_is_refused_with_a_hint() -> None:
    url = presigned_url(
        "s3", "get_object", {"Bucket": "b", "Key": "k"}, s3={"addressing_style": "path"}
    )
    w = to_wire("GET", url, {}, None)
    assert "AWSAccessKeyId=" in w.query  # boto3's default for S3 presigning here
    err = rejects(w, "InvalidRequest")
    assert "s3v4" in err.message


def test_presigned_non_s3_query_protocol() -> None:
    # STS GetCallerIdentity presigned (how EKS tokens are made): the body moves into the query.
    # botocore presigns it for the operation's own method, POST (with an empty body).
    url = presigned_url("sts", "get_caller_identity", {}, token=TOKEN, expires=60)
    w = to_wire("POST", url, {}, None)
    assert "Action=GetCallerIdentity" in w.query
    info = check(w)
    assert info.service == "sts" and info.payload_hash == EMPTY_SHA256
    assert info.security_token == TOKEN
    assert check(w, body=b"").payload_hash == EMPTY_SHA256
    rejects(dataclasses.replace(w, method="GET"), "SignatureDoesNotMatch")
    rejects(
        dataclasses.replace(w, query=w.query.replace("GetCallerIdentity", "GetSessionToken")),
        "SignatureDoesNotMatch",
    )


# --------------------------------------------------------------------------------------------
# Signing arbitrary requests: botocore and sign_headers agree byte for byte


def botocore_signed(
    *,
    service: str,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    endpoint: str = HTTP_ENDPOINT,
    context: dict[str, Any] | None = None,
    signer_cls: Any = None,
) -> tuple[AWSRequest, dict[str, str]]:
    """Sign with botocore; returns the request and the headers as they were before signing."""
    url = f"{endpoint}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    if context:
        request.context.update(context)
    before = {k.lower(): v for k, v in request.headers.items()}
    before["host"] = urlsplit(url).netloc
    if signer_cls is None:
        signer_cls = botocore.auth.S3SigV4Auth if service == "s3" else botocore.auth.SigV4Auth
    with botocore_clock():
        signer_cls(Credentials(AK, SK, token), service, "ap-south-1").add_auth(request)
    return request, before


def our_signed(
    service: str,
    method: str,
    path: str,
    query: str,
    before: dict[str, str],
    payload_hash: str,
    token: str | None,
) -> dict[str, str]:
    return sign_headers(
        method=method,
        raw_path=path,
        query=query,
        headers=before,
        payload_hash=payload_hash,
        access_key=AK,
        secret_key=SK,
        session_token=token,
        region="ap-south-1",
        service=service,
        now=NOW,
        key_cache=SigningKeyCache(),
    )


_SEGMENT = st.one_of(
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "a",
            "~",
            "%",
            "a b",
            "x+y",
            "%2F",
            "..%2F",
            "é",
            "日本",
            ":",
            "@!$&'()*,;=",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
)
_PARAM = st.tuples(
    st.text(alphabet="abcXYZ-_.~ =&+%/é", min_size=1, max_size=6),
    st.one_of(st.none(), st.text(alphabet="ab 9=&+%/~é:", max_size=8)),
)
_HEADER_NAMES = [
    "content-type",
    "content-md5",
    "range",
    "if-match",
    "x-amz-target",
    "x-amz-meta-note",
    "x-custom",
    "user-agent",
    "expect",
    "x-amzn-trace-id",
    "transfer-encoding",
]
_HEADER_VALUE = st.text(alphabet="ab Z9;=/,:\"'\t", max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    service=st.sampled_from(["s3", "dynamodb", "execute-api", "lambda"]),
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    segments=st.lists(_SEGMENT, max_size=5),
    trailing_slash=st.booleans(),
    params=st.lists(_PARAM, max_size=6),
    headers=st.dictionaries(st.sampled_from(_HEADER_NAMES), _HEADER_VALUE, max_size=6),
    body=st.binary(max_size=64),
    token=st.one_of(st.none(), st.just(TOKEN)),
)
def test_sign_matches_botocore_for_arbitrary_requests(
    service: str,
    method: str,
    segments: list[str],
    trailing_slash: bool,
    params: list[tuple[str, str | None]],
    headers: dict[str, str],
    body: bytes,
    token: str | None,
) -> None:
    # Paths and queries encoded the way botocore's serializers encode them.
    if service == "s3":
        path = "/" + quote("/".join(segments), safe="/~")
    else:
        path = "/" + "/".join(percent_encode(s) for s in segments)
    if trailing_slash and not path.endswith("/"):
        path += "/"
    query = "&".join(
        percent_encode(k) if v is None else f"{percent_encode(k)}={percent_encode(v)}"
        for k, v in params
    )

    request, before = botocore_signed(
        service=service,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        token=token,
    )
    payload_hash = hashlib.sha256(body).hexdigest()
    ours = our_signed(service, method, path, query, before, payload_hash, token)
    assert ours["authorization"] == request.headers["Authorization"]
    for name, value in ours.items():
        assert value == request.headers[name]

    w = to_wire(method, request.url, request.headers, body)
    info = check(w)
    assert info.payload_hash == payload_hash


def test_sign_non_s3_unsigned_payload_matches_botocore() -> None:
    request, before = botocore_signed(
        service="execute-api",
        method="POST",
        path="/prod/items",
        query="",
        headers={"content-type": "application/json"},
        body=b"{}",
        token=None,
        endpoint="https://api.jitgate.test",
        context={"payload_signing_enabled": False},
    )
    assert request.headers["X-Amz-Content-SHA256"] == UNSIGNED_PAYLOAD
    ours = our_signed("execute-api", "POST", "/prod/items", "", before, UNSIGNED_PAYLOAD, None)
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-content-sha256"] == UNSIGNED_PAYLOAD


def test_sign_excludes_what_botocore_excludes() -> None:
    request, before = botocore_signed(
        service="s3",
        method="PUT",
        path="/b/k",
        query="",
        headers={
            "User-Agent": "agent/1.0",
            "Expect": "100-continue",
            "X-Amzn-Trace-Id": "Root=1-abc",
            "Transfer-Encoding": "chunked",
            "Connection": "keep-alive",
            "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==",
            "Content-Type": "text/plain",
            "X-Amz-Meta-Owner": "  team   reports  ",
        },
        body=b"",
        token=None,
    )
    ours = our_signed("s3", "PUT", "/b/k", "", before, EMPTY_SHA256, None)
    assert ours["authorization"] == request.headers["Authorization"]
    assert (
        "SignedHeaders=content-md5;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-owner,"
        in ours["authorization"]
    )


def test_sign_requires_host() -> None:
    with pytest.raises(ValueError, match="host"):
        our_signed("s3", "GET", "/", "", {}, EMPTY_SHA256, None)


def test_non_canonical_query_is_signed_and_verified_in_spec_form() -> None:
    # Another SDK may send '~' encoded or a bare key; the spec's canonical form decodes and
    # re-encodes. sign_headers signs that form, and verify accepts it as well as botocore's.
    query = "b=%7e&a=x%2cy&flag"
    added = our_signed(
        "lambda",
        "GET",
        "/2015-03-31/functions",
        query,
        {"host": "jitgate.test"},
        EMPTY_SHA256,
        None,
    )
    w = Wire("GET", "/2015-03-31/functions", query, {"host": "jitgate.test", **added}, b"", b"")
    assert check(w).service == "lambda"
    rejects(dataclasses.replace(w, query="b=%7e&a=x%2cz&flag"), "SignatureDoesNotMatch")
    request, _ = botocore_signed(
        service="lambda",
        method="GET",
        path="/2015-03-31/functions",
        query=query,
        headers={},
        body=b"",
        token=None,
    )
    assert check(to_wire("GET", request.url, request.headers, b"")).service == "lambda"


# --------------------------------------------------------------------------------------------
# Signing keys


def test_signing_key_cache() -> None:
    cache = SigningKeyCache(maxsize=2)
    first = cache.derive_signing_key(SK, "20260314", "us-east-1", "s3")
    assert first == derive_signing_key(SK, "20260314", "us-east-1", "s3")
    assert cache.derive_signing_key(SK, "20260314", "us-east-1", "s3") is first
    assert cache.derive_signing_key(SK, "20260315", "us-east-1", "s3") != first
    assert cache.derive_signing_key(SK + "x", "20260314", "us-east-1", "s3") != first
    cache.derive_signing_key(SK, "20260314", "eu-west-1", "s3")
    assert (
        cache.derive_signing_key(SK, "20260314", "us-east-1", "s3") == first
    )  # evicted, re-derived


# --------------------------------------------------------------------------------------------
# aws-chunked bodies


def signing_key_for(date: str, region: str, service: str, secret: str = SK) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def encode_signed_chunks(
    chunks: list[bytes],
    *,
    key: bytes,
    timestamp: str,
    scope: str,
    seed: str,
    trailers: dict[str, str] | None = None,
) -> bytes:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) body, following the S3 documentation."""
    out = bytearray()
    previous = seed

    def sign(string_to_sign: str) -> str:
        return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    for chunk in [*chunks, b""]:
        previous = sign(
            f"AWS4-HMAC-SHA256-PAYLOAD\n{timestamp}\n{scope}\n{previous}\n{EMPTY_SHA256}\n"
            f"{hashlib.sha256(chunk).hexdigest()}"
        )
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode()
        if chunk:
            out += chunk + b"\r\n"
    if trailers is not None:
        canonical = "".join(f"{k}:{v}\n" for k, v in sorted(trailers.items()))
        trailer_signature = sign(
            f"AWS4-HMAC-SHA256-TRAILER\n{timestamp}\n{scope}\n{previous}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        for name, value in trailers.items():
            out += f"{name}:{value}\r\n".encode()
        out += f"x-amz-trailer-signature:{trailer_signature}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def test_test_encoder_reproduces_the_aws_example() -> None:
    body = encode_signed_chunks(
        [b"a" * 65536, b"a" * 1024],
        key=signing_key_for("20130524", "us-east-1", "s3", AWS_SK),
        timestamp="20130524T000000Z",
        scope=AWS_SCOPE,
        seed="4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    )
    assert body == AWS_CHUNKED_BODY


SEED_TS = "20260314T150926Z"
SEED_SCOPE = "20260314/us-east-1/s3/aws4_request"
SEED = "c0ffee" + "0" * 58


def split_into(payload: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos, i = [], 0, 0
    while pos < len(payload):
        size = sizes[i % len(sizes)]
        chunks.append(payload[pos : pos + size])
        pos += size
        i += 1
    return chunks


def feed_in_pieces(decoder: ChunkedPayloadDecoder, body: bytes, cuts: list[int]) -> bytes:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    out = bytearray()
    for start, stop in zip(points, points[1:], strict=False):
        out += decoder.feed(body[start:stop])
    decoder.finish()
    return bytes(out)


def signed_decoder(
    mode: str = STREAMING_SIGNED, length: int | None = None, **kwargs: Any
) -> ChunkedPayloadDecoder:
    return ChunkedPayloadDecoder(
        mode,
        signing_key=signing_key_for("20260314", "us-east-1", "s3"),
        timestamp=SEED_TS,
        credential_scope=SEED_SCOPE,
        seed_signature=SEED,
        decoded_content_length=length,
        **kwargs,
    )


def signed_body(chunks: list[bytes], trailers: dict[str, str] | None = None) -> bytes:
    return encode_signed_chunks(
        chunks,
        key=signing_key_for("20260314", "us-east-1", "s3"),
        timestamp=SEED_TS,
        scope=SEED_SCOPE,
        seed=SEED,
        trailers=trailers,
    )


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=2048),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=20),
    with_trailer=st.booleans(),
)
def test_signed_chunks_decode_at_any_split(
    payload: bytes, sizes: list[int], cuts: list[int], with_trailer: bool
) -> None:
    trailers = {
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(payload).digest()).decode()
    }
    body = signed_body(split_into(payload, sizes), trailers if with_trailer else None)
    mode = STREAMING_SIGNED_TRAILER if with_trailer else STREAMING_SIGNED
    decoder = signed_decoder(mode, len(payload))
    assert feed_in_pieces(decoder, body, cuts) == payload
    assert decoder.trailers == (trailers if with_trailer else {})


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=4096),
    chunk_size=st.integers(1, 1500),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=20),
)
def test_unsigned_trailer_chunks_from_botocore_decode_at_any_split(
    payload: bytes, chunk_size: int, cuts: list[int]
) -> None:
    wrapper = AwsChunkedWrapper(
        BytesIO(payload),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    )
    body = wrapper.read()
    decoder = ChunkedPayloadDecoder(
        STREAMING_UNSIGNED_TRAILER,
        decoded_content_length=len(payload),
        declared_trailers=["x-amz-checksum-crc32"],
    )
    assert feed_in_pieces(decoder, body, cuts) == payload
    assert decoder.trailers == {"x-amz-checksum-crc32": crc32_b64(payload)}


def test_unsigned_without_trailer_from_botocore() -> None:
    body = AwsChunkedWrapper(BytesIO(b"abc"), chunk_size=2).read()
    assert body == b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
    decoder = ChunkedPayloadDecoder(STREAMING_UNSIGNED_TRAILER)
    assert decoder.feed(body) == b"abc"
    decoder.finish()


def test_boto3_streaming_put_object_end_to_end() -> None:
    case = case_by_id("s3-put-streaming-unsigned-trailer")
    w = captured(case)
    assert w.body is None and w.headers["x-amz-content-sha256"] == STREAMING_UNSIGNED_TRAILER
    info = check(w)
    decoder = ChunkedPayloadDecoder.for_request(info, w.headers)
    data = feed_in_pieces(decoder, w.raw_body, [1, 2, 3, 100, 1000, 3010])
    assert data == case.params["Body"]
    assert decoder.trailers == {"x-amz-checksum-crc32": crc32_b64(data)}


def test_botocore_seed_with_signed_chunks_end_to_end() -> None:
    payload = bytes(range(256)) * 40
    request, _ = botocore_signed(
        service="s3",
        signer_cls=botocore.auth.SigV4Auth,  # keeps the declared STREAMING value; no body hash
        method="PUT",
        path="/reports/big.bin",
        query="",
        headers={
            "X-Amz-Content-SHA256": STREAMING_SIGNED,
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(payload)),
        },
        body=b"",
        token=None,
    )
    w = to_wire("PUT", request.url, request.headers, b"")
    w = dataclasses.replace(w, body=None)
    info = check(w)
    assert info.payload_hash == STREAMING_SIGNED
    body = encode_signed_chunks(
        split_into(payload, [4096]),
        key=signing_key_for("20260314", "ap-south-1", "s3"),
        timestamp=SEED_TS,
        scope="20260314/ap-south-1/s3/aws4_request",
        seed=info.signature,
    )
    decoder = ChunkedPayloadDecoder.for_request(info, w.headers)
    assert feed_in_pieces(decoder, body, [5000, 9000]) == payload


def test_chunk_data_is_released_once_its_signature_checks() -> None:
    chunks = [b"A" * 100, b"B" * 100]
    body = signed_body(chunks)
    decoder = signed_decoder()
    first_end = body.index(b"A" * 100) + 100
    assert decoder.feed(body[: first_end - 1]) == b""  # chunk 1 not yet complete: held
    assert decoder.feed(body[first_end - 1 : first_end]) == b"A" * 100


def test_tampered_chunk_is_rejected_and_never_released() -> None:
    body = bytearray(signed_body([b"A" * 100, b"B" * 100, b"C" * 100]))
    body[body.index(b"B" * 100) + 50] = ord("X")
    decoder = signed_decoder()
    released = bytearray()
    with pytest.raises(SigV4Error, match="chunk signature") as excinfo:
        for i in range(0, len(body), 7):
            released += decoder.feed(bytes(body[i : i + 7]))
    assert excinfo.value.code == "SignatureDoesNotMatch"
    assert bytes(released) == b"A" * 100
    with pytest.raises(SigV4Error):  # stays failed
        decoder.feed(b"")
    with pytest.raises(SigV4Error):
        decoder.finish()


def test_wrong_seed_or_key_is_rejected() -> None:
    body = signed_body([b"data"])
    other = ChunkedPayloadDecoder(
        STREAMING_SIGNED,
        signing_key=signing_key_for("20260314", "us-east-1", "s3", "another secret"),
        timestamp=SEED_TS,
        credential_scope=SEED_SCOPE,
        seed_signature=SEED,
    )
    with pytest.raises(SigV4Error, match="chunk signature"):
        other.feed(body)
    reseeded = ChunkedPayloadDecoder(
        STREAMING_SIGNED,
        signing_key=signing_key_for("20260314", "us-east-1", "s3"),
        timestamp=SEED_TS,
        credential_scope=SEED_SCOPE,
        seed_signature="f" * 64,
    )
    with pytest.raises(SigV4Error, match="chunk signature"):
        reseeded.feed(body)


def test_dropped_or_reordered_chunks_are_rejected() -> None:
    chunks = [b"one", b"two", b"three"]
    body = signed_body(chunks)
    parts = body.split(b"\r\n")
    # parts: header1, data1, header2, data2, header3, data3, final header, "", ""
    dropped = b"\r\n".join(parts[:2] + parts[4:])
    with pytest.raises(SigV4Error, match="chunk signature"):
        signed_decoder().feed(dropped)
    swapped = b"\r\n".join(parts[:2] + parts[4:6] + parts[2:4] + parts[6:])
    with pytest.raises(SigV4Error, match="chunk signature"):
        signed_decoder().feed(swapped)


@pytest.mark.parametrize(
    "cut", ["before-final-chunk", "mid-chunk", "mid-header", "before-last-crlf"]
)
def test_truncated_signed_body(cut: str) -> None:
    body = signed_body([b"x" * 50, b"y" * 50])
    final = body.rindex(b"0;chunk-signature=")
    end = {
        "before-final-chunk": final,
        "mid-chunk": body.index(b"y" * 50) + 10,
        "mid-header": final + 5,
        "before-last-crlf": len(body) - 2,
    }[cut]
    decoder = signed_decoder(length=100)
    decoder.feed(body[:end])
    with pytest.raises(SigV4Error) as excinfo:
        decoder.finish()
    assert excinfo.value.code == "SignatureDoesNotMatch"
    assert not decoder.done


@pytest.mark.parametrize("declared", [99, 101])
def test_decoded_length_mismatch(declared: int) -> None:
    decoder = signed_decoder(length=declared)
    with pytest.raises(SigV4Error, match="x-amz-decoded-content-length") as excinfo:
        decoder.feed(signed_body([b"z" * 60, b"z" * 40]))
    assert excinfo.value.code == "SignatureDoesNotMatch"


def test_data_after_the_end_is_rejected() -> None:
    decoder = signed_decoder()
    with pytest.raises(SigV4Error, match="after the end"):
        decoder.feed(signed_body([b"abc"]) + b"5;chunk")


def test_oversized_chunk_is_refused_before_buffering() -> None:
    decoder = signed_decoder(max_chunk_size=1024)
    with pytest.raises(SigV4Error, match="larger than allowed"):
        decoder.feed(b"40000000;chunk-signature=" + b"0" * 64 + b"\r\n")


def test_trailers_are_refused_without_trailer_mode() -> None:
    body = signed_body([b"abc"], {"x-amz-checksum-crc32": crc32_b64(b"abc")})
    with pytest.raises(SigV4Error, match="trailers are not allowed"):
        signed_decoder(STREAMING_SIGNED).feed(body)


def test_signed_trailer_tampering() -> None:
    trailers = {"x-amz-checksum-crc32": crc32_b64(b"abc")}
    body = signed_body([b"abc"], trailers)
    with pytest.raises(SigV4Error, match="trailer signature"):
        signed_decoder(STREAMING_SIGNED_TRAILER).feed(
            body.replace(trailers["x-amz-checksum-crc32"].encode(), b"AAAAAA==")
        )
    without_signature = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    with pytest.raises(SigV4Error, match="lack x-amz-trailer-signature"):
        signed_decoder(STREAMING_SIGNED_TRAILER).feed(without_signature)


def test_malformed_signed_chunk_header() -> None:
    with pytest.raises(SigV4Error, match="malformed"):
        signed_decoder().feed(b"3\r\nabc\r\n")
    with pytest.raises(SigV4Error, match="CRLF"):
        signed_decoder().feed(signed_body([b"abc"]).replace(b"abc\r\n", b"abc\n\n"))


def test_unsigned_stream_errors() -> None:
    def decoder(**kwargs: Any) -> ChunkedPayloadDecoder:
        return ChunkedPayloadDecoder(STREAMING_UNSIGNED_TRAILER, **kwargs)

    truncated = decoder()
    assert truncated.feed(b"5\r\nhel") == b"hel"  # unsigned data flows straight through
    with pytest.raises(SigV4Error) as excinfo:
        truncated.finish()
    assert excinfo.value.code == "IncompleteBody"

    with pytest.raises(SigV4Error, match="not declared"):
        decoder(declared_trailers=["x-amz-checksum-crc32"]).feed(
            b"0\r\nx-amz-checksum-sha256:AAAA\r\n\r\n"
        )
    with pytest.raises(SigV4Error, match="unsigned"):
        decoder().feed(b"0\r\nx-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n")
    with pytest.raises(SigV4Error, match="malformed"):
        decoder().feed(b"3;chunk-signature=" + b"0" * 64 + b"\r\nabc\r\n")
    with pytest.raises(SigV4Error, match="CRLF"):
        decoder().feed(b"3\r\nabcXY0\r\n\r\n")
    with pytest.raises(SigV4Error, match="repeated"):
        decoder().feed(b"0\r\nx-amz-checksum-crc32:A\r\nx-amz-checksum-crc32:B\r\n\r\n")
    with pytest.raises(SigV4Error, match="x-amz-decoded-content-length"):
        decoder(decoded_content_length=2).feed(b"3\r\nabc\r\n0\r\n\r\n")
    with pytest.raises(SigV4Error, match="too long"):
        decoder().feed(b"0\r\nx-amz-checksum-crc32:" + b"A" * 5000)


def test_decoder_for_request_checks_headers() -> None:
    info = check(
        aws_wire("PUT", "/examplebucket/chunkObject.txt", "", AWS_CHUNKED_HEADERS, None),
        secret=AWS_SK,
        now=AWS_NOW,
    )
    headers = {k: v for k, v in AWS_CHUNKED_HEADERS.items() if k != "x-amz-decoded-content-length"}
    with pytest.raises(SigV4Error) as excinfo:
        ChunkedPayloadDecoder.for_request(info, headers)
    assert excinfo.value.code == "InvalidRequest"
    with pytest.raises(SigV4Error):
        ChunkedPayloadDecoder.for_request(info, {**headers, "x-amz-decoded-content-length": "-1"})
    plain = dataclasses.replace(info, payload_hash=EMPTY_SHA256)
    with pytest.raises(SigV4Error, match="not aws-chunked"):
        ChunkedPayloadDecoder.for_request(plain, AWS_CHUNKED_HEADERS)


# --- the Authorization header's fast path ---------------------------------------------------------
_AUTH_PIECES = st.sampled_from(
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA1",
        " ",
        "  ",
        "Credential=",
        "AKIDEXAMPLE",
        "ASIA-key_1",
        "/",
        "20261129",
        "2026112",
        "us-east-1",
        "US-EAST-1",
        "s3",
        "aws4_request",
        ",",
        ", ",
        "SignedHeaders=",
        "host",
        ";",
        "x-amz-date",
        "x-amz-security-token",
        "Host",
        "Signature=",
        "a" * 64,
        "A" * 64,
        "0" * 63,
        "=",
        "\t",
    ]
)
_SDK_SHAPED = st.builds(
    lambda key, region, service, names, sig, comma: (
        f"AWS4-HMAC-SHA256 Credential={key}/20261129/{region}/{service}/aws4_request{comma}"
        f"SignedHeaders={';'.join(names)}{comma}Signature={sig}"
    ),
    # Mostly what SDKs send, now and then one field wrong.
    st.sampled_from(["AKIDEXAMPLE"] * 8 + ["ASIA0123", "", "k" * 129, "bad key"]),
    st.sampled_from(["us-east-1"] * 8 + ["", "Eu-west-1", "r" * 65]),
    st.sampled_from(["s3"] * 6 + ["dynamodb"] * 2 + ["S3", "s/3"]),
    st.lists(
        st.sampled_from(["host"] * 4 + ["x-amz-date", "x-amz-security-token", "", "Host", "a b"]),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["f0" * 32] * 8 + ["F" * 64, "f" * 63, "g" * 64]),
    st.sampled_from([", "] * 4 + [",", " , ", ",  "]),
)


def _outcome(parse: Any, authorization: str, headers: dict[str, str]) -> object:
    try:
        return parse(authorization, headers)
    except SigV4Error as exc:
        return (exc.code, str(exc))


@settings(max_examples=400, deadline=None)
@given(
    authorization=st.one_of(_SDK_SHAPED, st.lists(_AUTH_PIECES, max_size=14).map("".join)),
    amz_date=st.sampled_from(["20261129T120000Z", " 20261129T120000Z ", "20261129T250000Z", None]),
    token=st.sampled_from([None, "tok"]),
)
def test_the_fast_path_reads_every_authorization_header_as_the_full_parser_does(
    authorization: str, amz_date: str | None, token: str | None
) -> None:
    """The one-regex path for the header SDKs write is an optimisation: whatever the header,
    the claims (or the refusal) are exactly the field-by-field parser's."""
    headers: dict[str, str] = {"host": "localhost"}
    if amz_date is not None:
        headers["x-amz-date"] = amz_date
    else:
        headers["date"] = "Sun, 29 Nov 2026 12:00:00 GMT"
    if token is not None:
        headers["x-amz-security-token"] = token
    fast = _outcome(sigv4._parse_authorization_header, authorization, headers)
    full = _outcome(sigv4._parse_authorization_header_fully, authorization, headers)
    assert fast == full


def test_the_fast_path_is_taken_for_what_botocore_signs() -> None:
    request = AWSRequest(method="GET", url="https://localhost/bucket/key", headers={})
    botocore.auth.SigV4Auth(
        Credentials("AKIDEXAMPLE", "secret", "tok"), "s3", "us-east-1"
    ).add_auth(request)
    authorization = request.headers["Authorization"]
    assert sigv4._AUTHORIZATION_AS_SDKS_WRITE_IT.fullmatch(authorization)
