"""Property: nothing outside a grant ever reaches the upstream, whatever the encoding.

The gateway runs for real (uvicorn in a thread) in front of a RECORDING upstream that keeps
every request it receives as it arrived on the wire (method, raw path, query, headers) and
answers 200 with an empty S3-like body. Grants name exactly one object key each (keys chosen
to be awkward: spaces, '+', '%2F', '..', Unicode). Hypothesis builds requests from tricky
pieces (percent-encodings in upper and lower case, double encodings, dot segments, double
slashes, raw '?', '#', spaces and Unicode, virtual-hosted names, sub-resources, presign-looking
parameters, extra signed and unsigned headers), signs them with botocore's SigV4 for the grant's
credentials (header or presigned URL), and sends the exact bytes.

Whenever anything reaches the upstream, it must be, decoded the way S3 decodes a path (percent-
decoding once, '+' literal), a GET or HEAD of exactly bucket/K, with no sub-resource, no version,
no x-amz-* header the agent did not sign, and jitgate's signature instead of the agent's. And a
request that is exactly a read of K (any valid encoding of it) must get through, so the property
cannot hold by refusing everything.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import botocore.session
import pytest
import uvicorn
from botocore.credentials import Credentials
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from jitgate.sandbox.moto import MotoServer, free_port

from .conftest import GrantInfo, Stack, object_arn, start_stack
from .wire import RawResponse, credentials_of, presign, raw_request, sign

pytestmark = pytest.mark.slow

BUCKET = "reports"
# The keys the grants name, one grant each.
KEYS = ("k/a b+c%2Fd ü€~x.txt", "k/../dots..", "plain/q3.csv")
UPSTREAM_KEY = Credentials("AKIDUPSTREAMRECORDER", "upstream-secret")

_S3 = botocore.session.get_session().get_service_model("s3")
READ_QUERY_KEYS = frozenset(
    member.serialization["name"]
    for op in ("GetObject", "HeadObject")
    for member in _S3.operation_model(op).input_shape.members.values()
    if member.serialization.get("location") == "querystring"
) - {"versionId"}
JITGATE_SIGNED = frozenset({"x-amz-date", "x-amz-content-sha256", "x-amz-security-token"})


# --- the recording upstream -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    raw_path: bytes
    query: bytes
    headers: dict[str, str]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        self.requests.append(
            Recorded(
                scope["method"],
                scope["raw_path"],
                scope["query_string"],
                {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            )
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", b"0"),
                    (b"content-type", b"application/xml"),
                    (b"x-amz-request-id", b"recorded"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


@dataclasses.dataclass
class Harness:
    stack: Stack = dataclasses.field(repr=False)
    recorder: Recorder = dataclasses.field(repr=False)
    grants: dict[str, GrantInfo] = dataclasses.field(repr=False)  # key -> its grant

    @property
    def port(self) -> int:
        return int(self.stack.aws_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def harness(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    recorder = Recorder()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "recording upstream did not start"
        time.sleep(0.01)
    stack = start_stack(
        moto_server,
        tmp_path_factory.mktemp("recorded-home"),
        upstream=f"http://127.0.0.1:{port}",
        credentials=UPSTREAM_KEY,
    )
    try:
        grants = {key: stack.grant(["s3:GetObject"], [object_arn(key)]) for key in KEYS}
        yield Harness(stack, recorder, grants)
    finally:
        stack.stop()
        server.should_exit = True
        thread.join(10)


# --- building requests ----------------------------------------------------------------------
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _pct(data: bytes, lower: bool) -> str:
    text = "".join(f"%{b:02X}" for b in data)
    return text.lower() if lower else text


@st.composite
def encodings_of(draw: st.DrawFn, key: str) -> str:
    """Any request path for ``key`` that S3 decodes back to exactly ``key``."""
    out = []
    for char in key:
        lower = draw(st.booleans())
        if char in UNRESERVED or char in "/+":
            # May travel raw or encoded: decoding once gives the same character.
            out.append(char if draw(st.booleans()) else _pct(char.encode(), lower))
        else:
            out.append(_pct(char.encode(), lower))
    return "".join(out)


RAW_TOKENS = [
    "a", "k", "x", "q3.csv", "plain", "/", "//", ".", "..", "../", "./", "%2F", "%2f",
    "%252F", "%2e", "%2E%2E", "%2e%2e%2f", "%20", " ", "+", "%2B", "%", "%25", "%zz",
    "%C3%BC", "%c3%bc", "%C3", "ü", "€", "%E2%82%AC", "~", "%7E", "?", "%3F", "#", "%23",
    ";", "%00", "\\", "%5C",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, raw: str) -> str:
    pieces = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(pieces)))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        token = draw(st.sampled_from(RAW_TOKENS))
        if action == "insert" or not pieces:
            pieces.insert(position, token)
        elif action == "replace":
            pieces[min(position, len(pieces) - 1)] = token
        else:
            del pieces[min(position, len(pieces) - 1)]
    return "".join(pieces)


BENIGN_QUERY = [
    "x-id=GetObject",  # benign only on a GET ...
    "x-id=HeadObject",  # ... and this only on a HEAD
    "partNumber=1",
    "response-content-type=text%2Fplain",
    "response-cache-control=no-cache",
]
X_ID = {"GET": "GetObject", "HEAD": "HeadObject"}
RISKY_QUERY = [
    "acl", "tagging", "versionId=v1", "versionId", "uploads", "uploadId=u1", "torrent",
    "attributes", "retention", "legal-hold", "restore", "select&select-type=2", "x-id=PutObject",
    "x-id=CopyObject", "list-type=2", "delete", "%61cl", "ACL", "acl=", "partNumber=1&partNumber=2",
    "x-amz-copy-source=reports%2F2026%2Fpayroll.csv", "X-Amz-Signature=" + "0" * 64,
    "X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3%2Faws4_request",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Security-Token=abc", "X-Amz-Expires=60",
    "X-Amz-Date=20260101T000000Z", "=x", "a=b", "prefix=", "response-content-type",
]  # fmt: skip
BENIGN_HEADERS = [("range", "bytes=0-3"), ("x-amz-checksum-mode", "ENABLED")]
RISKY_HEADERS = [
    ("x-amz-copy-source", "reports/2026/payroll.csv"),
    ("x-amz-copy-source", "/reports/k/a%20b%2Bc%252Fd%20%C3%BC%E2%82%AC~x.txt"),
    ("x-amz-acl", "public-read"),
    ("x-amz-tagging", "a=b"),
    ("x-amz-version-id", "v1"),
    ("x-http-method-override", "PUT"),
    ("x-method-override", "DELETE"),
    ("x-amz-website-redirect-location", "/elsewhere"),
    ("x-amz-metadata-directive", "REPLACE"),
    ("x-amz-bypass-governance-retention", "true"),
    ("x-amz-server-side-encryption", "AES256"),
    ("x-amz-request-payer", "requester"),
    ("x-amz-expected-bucket-owner", "999999999999"),
    ("x-amz-security-token", "forged"),
    ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    ("x-amz-target", "DynamoDB_20120810.GetItem"),
    ("content-encoding", "aws-chunked"),
]


@dataclasses.dataclass(frozen=True)
class Plan:
    key: str  # the key of the grant used
    method: str
    host_style: str  # "path", "virtual", "virtual-ip", "virtual-other"
    bucket_prefix: str  # path-style bucket part, before the key
    raw_key: str  # the key part of the path, as sent
    query: list[str]
    headers: list[tuple[str, str, bool]]  # name, value, signed
    presigned: bool
    expect_forward: bool  # an exact read of the granted key: must get through

    def target_and_headers(self, port: int, creds: dict[str, str]) -> tuple[bytes, list]:
        if self.host_style == "path":
            host, path = f"127.0.0.1:{port}", self.bucket_prefix + self.raw_key
        elif self.host_style == "virtual":
            host, path = f"{BUCKET}.localhost:{port}", "/" + self.raw_key
        elif self.host_style == "virtual-ip":
            host, path = f"{BUCKET}.127.0.0.1:{port}", "/" + self.raw_key
        else:  # a host naming another bucket, with this bucket in the path
            host, path = f"payroll.localhost:{port}", "/" + BUCKET + "/" + self.raw_key
        query = "&".join(self.query)
        url = f"http://{host}{path}" + (f"?{query}" if query else "")
        signed = {name: value for name, value, is_signed in self.headers if is_signed}
        body = b"data" if self.method in ("PUT", "POST") else b""
        if self.presigned:
            url = presign(self.method, url, credentials=credentials_of(creds), headers=signed)
            sent = dict(signed)
        else:
            sent = sign(
                self.method, url, credentials=credentials_of(creds), headers=signed, body=body
            )
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if "#" in url:
            target = url.split(host, 1)[1]
        headers = [("Host", host)]
        headers += [(n, v) for n, v in sent.items() if n.lower() != "host"]
        headers += [(n, v) for n, v, is_signed in self.headers if not is_signed]
        return target.encode("utf-8"), headers


@st.composite
def plans(draw: st.DrawFn, extras: bool = False) -> Plan:
    key = draw(st.sampled_from(KEYS))
    kind = draw(st.sampled_from(["exact", "exact", "exact", "mutated", "random"]))
    exact = draw(encodings_of(key))
    if kind == "exact":
        raw_key = exact
    elif kind == "mutated":
        raw_key = draw(mutated(exact))
    else:
        raw_key = "".join(draw(st.lists(st.sampled_from(RAW_TOKENS), max_size=10)))
    read = draw(st.sampled_from(["GET", "HEAD"]))
    method = read if draw(st.integers(0, 3)) else draw(st.sampled_from(["PUT", "DELETE", "POST"]))
    host_style = draw(st.sampled_from(["path", "path", "virtual", "virtual-ip", "virtual-other"]))
    bucket_prefix = (
        "/reports/"
        if draw(st.integers(0, 4))
        else draw(
            st.sampled_from(
                ["/reports", "/REPORTS/", "/reports%2F", "/reports/../reports/", "//reports/"]
            )
        )
    )
    risky = extras or draw(st.integers(0, 3)) == 0
    query_pool = BENIGN_QUERY + (RISKY_QUERY if risky else [])
    query = draw(st.lists(st.sampled_from(query_pool), max_size=3 if extras else 2))
    header_pool = BENIGN_HEADERS + (RISKY_HEADERS if risky else [])
    chosen = draw(st.lists(st.sampled_from(header_pool), max_size=4 if extras else 2, unique=True))
    headers = [(name, value, draw(st.booleans())) for name, value in chosen]
    presigned = draw(st.booleans())
    expect_forward = (
        kind == "exact"
        and method in ("GET", "HEAD")
        and host_style in ("path", "virtual", "virtual-ip")
        and (host_style != "path" or bucket_prefix == "/reports/")
        and all(q in BENIGN_QUERY for q in query)
        and all(q[len("x-id=") :] == X_ID[method] for q in query if q.startswith("x-id="))
        and len({q.split("=")[0] for q in query}) == len(query)
        and all((n, v) in BENIGN_HEADERS for n, v, _ in headers)
    )
    return Plan(
        key, method, host_style, bucket_prefix, raw_key, query, headers, presigned, expect_forward
    )


# --- the property -----------------------------------------------------------------------------
def s3_decode(raw: bytes) -> str | None:
    """A path segment as S3 decodes it: percent-decoding once, '+' literal; None if invalid."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_forwarded(plan: Plan, recorded: Recorded, agent_key: str) -> None:
    signed_by_agent = {n for n, _, is_signed in plan.headers if is_signed}
    assert recorded.method == plan.method, recorded
    bucket, _, raw_key = recorded.raw_path[1:].partition(b"/")
    assert bucket == BUCKET.encode(), recorded
    assert s3_decode(raw_key) == plan.key, (recorded, plan.key)
    if recorded.method == "POST":
        # S3 Select (SelectObjectContent) reads the object, and IAM authorizes it with
        # s3:GetObject: the only write-shaped call an s3:GetObject grant may make.
        parts = [part.partition(b"=") for part in recorded.query.split(b"&")]
        assert sorted((s3_decode(name), value) for name, _, value in parts) == [
            ("select", b""),
            ("select-type", b"2"),
        ], recorded
    else:
        assert recorded.method in ("GET", "HEAD"), recorded
        for part in filter(None, recorded.query.split(b"&")):
            name, _, value = part.partition(b"=")
            decoded = s3_decode(name)
            assert decoded in READ_QUERY_KEYS or decoded == "x-id", recorded
            if decoded == "x-id":
                assert value in (b"GetObject", b"HeadObject"), recorded
    for name in recorded.headers:
        if name.startswith("x-amz-"):
            assert name in JITGATE_SIGNED or name in signed_by_agent, (name, recorded)
    assert not {"x-http-method-override", "x-method-override", "x-http-method"} & set(
        recorded.headers
    )
    authorization = recorded.headers.get("authorization", "")
    assert f"Credential={UPSTREAM_KEY.access_key}/" in authorization, recorded
    assert agent_key not in str(recorded), "the agent's credentials reached the upstream"


def run_plan(harness: Harness, plan: Plan) -> tuple[RawResponse, list[Recorded]]:
    creds = harness.grants[plan.key].creds
    target, headers = plan.target_and_headers(harness.port, creds)
    harness.recorder.requests.clear()
    body = b"data" if plan.method in ("PUT", "POST") else b""
    response = raw_request(harness.port, plan.method, target, headers, body)
    return response, list(harness.recorder.requests)


def verify_plan(harness: Harness, plan: Plan) -> str:
    response, recorded = run_plan(harness, plan)
    creds = harness.grants[plan.key].creds
    assert len(recorded) <= 1
    if recorded:
        check_forwarded(plan, recorded[0], creds["AccessKeyId"])
        assert response.status == 200, response
    else:
        assert response.status != 200, (plan, response)
    if plan.expect_forward:
        assert recorded, f"an exact read of the granted key was refused: {plan} -> {response}"
    return f"forwarded={bool(recorded)} must={plan.expect_forward} status={response.status}"


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans())
def test_only_reads_of_the_granted_key_reach_the_upstream(harness: Harness, plan: Plan) -> None:
    event(verify_plan(harness, plan))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans(extras=True))
@example(  # S3 Select: a POST that s3:GetObject allows (found by this test)
    plan=Plan(
        "k/../dots..", "POST", "path", "/reports/", "%6B%2F%2E%2E%2F%64%6F%74%73%2E%2E",
        ["select&select-type=2"], [], False, False,
    )
)  # fmt: skip
def test_extra_headers_and_parameters_never_widen_what_is_forwarded(
    harness: Harness, plan: Plan
) -> None:
    event(verify_plan(harness, plan))


@pytest.mark.parametrize("key", KEYS)
def test_canonical_boto_encoding_of_each_key_gets_through(harness: Harness, key: str) -> None:
    """The fixed points of the properties above, one per granted key (path and virtual style)."""
    raw = quote(key, safe="/~")
    for style in ("path", "virtual"):
        plan = Plan(key, "GET", style, "/reports/", raw, [], [], False, True)
        verify_plan(harness, plan)
