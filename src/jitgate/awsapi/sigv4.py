"""AWS Signature Version 4: verify what agents send, sign what jitgate forwards.

The gateway calls :func:`parse_auth` first (cheap, no secret needed) to learn which access key
signed the request, looks up the grant that owns that key, then calls :func:`verify` with the
grant's secret. A verified request yields a :class:`SignedRequestInfo`; every failure raises
:class:`SigV4Error` carrying the AWS error code the caller would have had from AWS itself.

Bodies sent with ``Content-Encoding: aws-chunked`` are decoded (and, when signed, verified
chunk by chunk) by :class:`ChunkedPayloadDecoder`. :func:`sign_headers` signs the request that
jitgate forwards upstream with its own identity.

The canonical request is built exactly as botocore builds it (``botocore/auth.py``):

- S3 (and the services signed by S3's rules) sign the path exactly as sent; every other service
  signs the path after removing dot segments and empty segments and percent-encoding it again.
- The query is split on ``&`` and ``=`` and sorted as sent (botocore sends it fully encoded).
  When that does not match, the verifier also tries the form the SigV4 specification prescribes
  (each key and value decoded and re-encoded with only ``A-Za-z0-9-_.~`` left bare), which is
  what the other AWS SDKs send; both are derived from the bytes actually received.
- Only the headers named in SignedHeaders are used, values trimmed and inner whitespace runs
  collapsed to one space.

Everything here is pure logic: no I/O, time comes in as an argument.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, unquote_to_bytes

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "SIGNER_OWNED_HEADERS",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNABLE_HEADERS",
    "UNSIGNED_PAYLOAD",
    "ChunkedPayloadDecoder",
    "ParsedAuth",
    "SigV4Error",
    "SignedRequestInfo",
    "SigningKeyCache",
    "canonical_uri",
    "derive_signing_key",
    "parse_auth",
    "sign_headers",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_STREAMING_MODES = frozenset(
    {STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)

#: Longest validity AWS allows for a presigned URL (seven days).
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600

#: Services whose canonical URI is the path exactly as sent (botocore's ``s3v4`` signers).
S3_SIGNING_SERVICES = frozenset({"s3", "s3-object-lambda", "s3-outposts"})

#: Headers botocore never signs (``SIGNED_HEADERS_BLACKLIST``), plus the Authorization header.
UNSIGNABLE_HEADERS = frozenset(
    {
        "authorization",
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)

#: Headers :func:`sign_headers` sets itself. A forwarded request must drop any incoming copies of
#: these before adding the returned headers.
SIGNER_OWNED_HEADERS = frozenset(
    {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
)

_DEFAULT_MAX_SKEW = timedelta(minutes=5)

# --------------------------------------------------------------------------------------------
# Errors


#: HTTP status AWS answers with, per error code.
_STATUS = {
    "MissingAuthenticationToken": 403,
    "IncompleteSignature": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "AccessDenied": 403,
    "XAmzContentSHA256Mismatch": 400,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "IncompleteBody": 400,
}


class SigV4Error(Exception):
    """A request failed SigV4 authentication.

    ``code`` is the AWS error code the caller would get from AWS, ``message`` a human sentence
    safe to return to the caller, ``status`` the HTTP status. On a signature mismatch
    ``canonical_request`` and ``string_to_sign`` hold what the verifier computed (S3 returns the
    same two strings in its error body), for logs and debugging; they contain no secret.

    Codes raised: ``MissingAuthenticationToken`` (no authentication at all),
    ``IncompleteSignature`` (Authorization header lacks a part, or a token header is unsigned),
    ``AuthorizationHeaderMalformed`` (bad Authorization header or credential scope),
    ``AuthorizationQueryParametersError`` (bad presigned-URL parameters),
    ``SignatureDoesNotMatch``, ``RequestTimeTooSkewed``, ``AccessDenied`` (presigned URL expired
    or not yet valid; missing or invalid request date), ``XAmzContentSHA256Mismatch``,
    ``InvalidArgument`` (two authentication mechanisms at once; a bad x-amz-content-sha256),
    ``InvalidRequest`` (a required header is missing; Signature Version 2 or another
    unsupported mechanism), ``IncompleteBody`` (a malformed or
    truncated unsigned aws-chunked body).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        canonical_request: str | None = None,
        string_to_sign: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = _STATUS.get(code, 400)
        self.canonical_request = canonical_request
        self.string_to_sign = string_to_sign


# --------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True)
class ParsedAuth:
    """What the request claims, before any secret is involved (output of :func:`parse_auth`)."""

    access_key_id: str
    date: str  # credential scope date, YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str  # 64 lower-case hex digits
    presigned: bool
    timestamp: str  # request time as signed, YYYYMMDDTHHMMSSZ
    amz_date: datetime  # the same, timezone-aware UTC
    expires: int | None = None  # presigned only: X-Amz-Expires in seconds
    security_token: str | None = None  # X-Amz-Security-Token header or query parameter

    @property
    def credential_scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class SignedRequestInfo:
    """What a verified request proved."""

    access_key_id: str
    region: str
    service: str
    amz_date: datetime  # timezone-aware UTC
    signed_headers: tuple[str, ...]
    payload_hash: str  # hex digest, UNSIGNED-PAYLOAD or a STREAMING-... value
    presigned: bool
    security_token: str | None
    signature: str  # hex seed signature, chains the chunk signatures of aws-chunked bodies
    signing_key: bytes = field(repr=False)  # derived key, verifies aws-chunked chunk signatures

    @property
    def timestamp(self) -> str:
        return _format_timestamp(self.amz_date)

    @property
    def credential_scope(self) -> str:
        return f"{self.timestamp[:8]}/{self.region}/{self.service}/aws4_request"


# --------------------------------------------------------------------------------------------
# Signing keys


def derive_signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key: HMAC chain over date, region, service and ``aws4_request``."""
    k = hmac.digest(f"AWS4{secret_key}".encode(), date.encode(), "sha256")
    k = hmac.digest(k, region.encode(), "sha256")
    k = hmac.digest(k, service.encode(), "sha256")
    return hmac.digest(k, b"aws4_request", "sha256")


class SigningKeyCache:
    """A small bounded LRU of derived signing keys.

    A key is valid for one (secret, date, region, service), so a busy gateway derives each one
    once a day instead of four HMACs per request. Safe to share between threads.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self._derive = functools.lru_cache(maxsize=maxsize)(derive_signing_key)

    def derive_signing_key(self, secret_key: str, date: str, region: str, service: str) -> bytes:
        return self._derive(secret_key, date, region, service)

    def clear(self) -> None:
        self._derive.cache_clear()


_DEFAULT_KEY_CACHE = SigningKeyCache()


# --------------------------------------------------------------------------------------------
# Canonical request pieces


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal that also drops empty segments, as botocore does."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    lead = "/" if path[0] == "/" else ""
    trail = "/" if path[-1] == "/" and out else ""
    return lead + "/".join(out) + trail


def canonical_uri(raw_path: str, service: str) -> str:
    """The CanonicalURI line for a path as sent on the wire (still percent-encoded)."""
    if service in S3_SIGNING_SERVICES:
        return raw_path or "/"
    return quote(_remove_dot_segments(raw_path), safe="/~")


def _canonical_query_as_sent(query: str, drop_key: str | None = None) -> str:
    """botocore's canonical query: pairs split as sent, sorted, not re-encoded."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key != drop_key:
            pairs.append((key, value))
    pairs.sort()
    return "&".join([f"{k}={v}" for k, v in pairs])


def _canonical_query_normalized(query: str, drop_key: str | None = None) -> str:
    """The specification's canonical query: each key and value decoded, then re-encoded."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        key = unquote_to_bytes(raw_key)
        if drop_key is not None and key == drop_key.encode():
            continue
        pairs.append((quote(key, safe="-_.~"), quote(unquote_to_bytes(raw_value), safe="-_.~")))
    pairs.sort()
    return "&".join([f"{k}={v}" for k, v in pairs])


_SPACE_RUNS = re.compile(r"[ \t]+")


def _trimall(value: str) -> str:
    """SigV4's Trimall: spaces and tabs trimmed from the ends, inner runs made one space.

    Only ASCII space and tab count, as in AWS's own canonical form. botocore's ``str.split()``
    also collapses Unicode whitespace, so a value signed as ``pay alice`` would verify when
    sent as ``pay\u00a0alice``: bytes the agent never signed, forwarded under jitgate's own
    signature. Printable ASCII holds no whitespace but the space, where ``split()`` is exact.
    """
    if value.isascii() and value.isprintable():
        return " ".join(value.split())
    return _SPACE_RUNS.sub(" ", value.strip(" \t"))


def _canonical_request(
    method: str,
    uri: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...],
    payload_hash: str,
) -> str:
    lines = [method.upper(), uri, query]
    for name in signed_headers:
        lines.append(f"{name}:{_trimall(headers[name])}")
    lines.append("")
    lines.append(";".join(signed_headers))
    lines.append(payload_hash)
    return "\n".join(lines)


def _string_to_sign(timestamp: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def _hmac_hex(key: bytes, message: str) -> str:
    # hmac.digest is OpenSSL's one-shot HMAC: a third of what building an hmac.HMAC costs.
    return hmac.digest(key, message.encode("utf-8"), "sha256").hex()


# --------------------------------------------------------------------------------------------
# Time


_TIMESTAMP_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")


def _format_timestamp(when: datetime) -> str:
    return (
        f"{when.year:04d}{when.month:02d}{when.day:02d}"
        f"T{when.hour:02d}{when.minute:02d}{when.second:02d}Z"
    )


class _SecondStamp:
    """_format_timestamp of a UTC time, formatted once per second (every forwarded call is
    signed with the time of day: this is a seventh of formatting it)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = (-1.5, "")  # (whole seconds since the epoch, stamp): replaced in one piece

    def of(self, when: datetime) -> str:
        second = when.timestamp() // 1
        last = self.last
        if last[0] == second:
            return last[1]
        stamp = _format_timestamp(when)
        self.last = (second, stamp)
        return stamp


_SIGNING_STAMP = _SecondStamp()


def _parse_timestamp(value: str) -> datetime | None:
    if not _TIMESTAMP_RE.fullmatch(value):
        return None
    try:
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC by convention
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# parse_auth


_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SCOPE_PART_RE = re.compile(r"[a-z0-9-]{1,64}")
_DATE_RE = re.compile(r"[0-9]{8}")
_EXPIRES_RE = re.compile(r"[0-9]{1,9}")
_LENGTH_RE = re.compile(r"[0-9]{1,18}")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_PRESIGN_KEYS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
)
_UNSUPPORTED_MECHANISM = (
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
)
_PRESIGN_MARKERS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")


def _parse_credential(credential: str, code: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5:
        raise SigV4Error(
            code,
            "the Credential is mal-formed; expecting "
            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request"',
        )
    access_key, date, region, service, terminator = parts
    if terminator != "aws4_request":
        raise SigV4Error(code, "the credential scope must end with aws4_request")
    if not _ACCESS_KEY_RE.fullmatch(access_key):
        raise SigV4Error(code, "the access key id in the Credential is malformed")
    if not _DATE_RE.fullmatch(date):
        raise SigV4Error(code, "the credential scope date must be YYYYMMDD")
    if not _SCOPE_PART_RE.fullmatch(region):
        raise SigV4Error(code, "the credential scope region is malformed")
    if not _SCOPE_PART_RE.fullmatch(service):
        raise SigV4Error(code, "the credential scope service is malformed")
    return access_key, date, region, service


def _parse_signed_headers(value: str, code: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    for name in names:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise SigV4Error(code, f"SignedHeaders contains an invalid header name {name!r}")
    if len(set(names)) != len(names):
        raise SigV4Error(code, "SignedHeaders names a header twice")
    if "host" not in names:
        raise SigV4Error(code, "the host header must be signed")
    return names


def _presign_params(query: str) -> dict[str, str]:
    """The X-Amz-* authentication parameters of a query string, decoded."""
    found: dict[str, str] = {}
    for part in query.split("&"):
        raw_key, _, raw_value = part.partition("=")
        if not raw_key.startswith("X-Amz-") and "%" not in raw_key:
            continue
        key = unquote(raw_key)
        if key not in _PRESIGN_KEYS:
            continue
        if key in found:
            raise SigV4Error("AuthorizationQueryParametersError", f"the query string repeats {key}")
        found[key] = unquote(raw_value)
    return found


def parse_auth(method: str, raw_path: str, query: str, headers: Mapping[str, str]) -> ParsedAuth:
    """Extract who signed the request and how, from the Authorization header or a presigned URL.

    No secret is needed and nothing cryptographic happens: the gateway uses the access key id to
    find the grant, then calls :func:`verify`. ``headers`` must have lower-case names.
    """
    del method, raw_path  # part of the request; not needed to read the claims
    authorization = headers.get("authorization")
    params = _presign_params(query) if query and "X-Amz-" in query else {}
    presigned = any(key in params for key in _PRESIGN_MARKERS)
    if authorization is not None and presigned:
        raise SigV4Error(
            "InvalidArgument",
            "only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
        )
    if presigned:
        return _parse_presigned(params, headers)
    if authorization is None:
        if query and "AWSAccessKeyId=" in query and "Signature=" in query:
            raise SigV4Error(
                "InvalidRequest",
                f"{_UNSUPPORTED_MECHANISM} This URL is presigned with Signature Version 2; "
                "presign with Signature Version 4 (boto3: Config(signature_version='s3v4')).",
            )
        raise SigV4Error("MissingAuthenticationToken", "Request is missing Authentication Token")
    return _parse_authorization_header(authorization, headers)


# The header as every SDK writes it: one match instead of splitting and checking field by field.
# Anything else (other spacing, upper-case hex, odd order, errors) takes the general path below.
_AUTHORIZATION_AS_SDKS_WRITE_IT = re.compile(
    re.escape(ALGORITHM) + r" Credential=([A-Za-z0-9_-]{1,128})/([0-9]{8})/([a-z0-9-]{1,64})"
    r"/([a-z0-9-]{1,64})/aws4_request, ?SignedHeaders=([!#$%&'*+.^_`|~0-9a-z;-]+)"
    r", ?Signature=([0-9a-f]{64})"
)


def _parse_authorization_header(authorization: str, headers: Mapping[str, str]) -> ParsedAuth:
    match = _AUTHORIZATION_AS_SDKS_WRITE_IT.fullmatch(authorization)
    if match is not None:
        access_key, date, region, service, names, signature = match.groups()
        signed_headers = tuple(names.split(";"))
        if (
            "" not in signed_headers
            and "host" in signed_headers
            and len(set(signed_headers)) == len(signed_headers)
        ):
            return _claims_of_header(
                access_key, date, region, service, signed_headers, signature, headers
            )
    return _parse_authorization_header_fully(authorization, headers)


def _parse_authorization_header_fully(authorization: str, headers: Mapping[str, str]) -> ParsedAuth:
    code = "AuthorizationHeaderMalformed"
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error("InvalidRequest", _UNSUPPORTED_MECHANISM)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise SigV4Error(
                "IncompleteSignature",
                f"{part[:40]!r} in the Authorization header is not a key=value pair",
            )
        if key not in ("Credential", "SignedHeaders", "Signature"):
            raise SigV4Error(code, f"unknown Authorization header component {key[:40]!r}")
        if key in fields:
            raise SigV4Error(code, f"the Authorization header repeats {key}")
        fields[key] = value.strip()
    for key in ("Credential", "SignedHeaders", "Signature"):
        if key not in fields:
            raise SigV4Error(
                "IncompleteSignature", f"Authorization header requires '{key}' parameter"
            )
    access_key, date, region, service = _parse_credential(fields["Credential"], code)
    signed_headers = _parse_signed_headers(fields["SignedHeaders"], code)
    signature = fields["Signature"].lower()
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SigV4Error(code, "the Signature must be 64 hexadecimal digits")
    return _claims_of_header(access_key, date, region, service, signed_headers, signature, headers)


def _claims_of_header(
    access_key: str,
    date: str,
    region: str,
    service: str,
    signed_headers: tuple[str, ...],
    signature: str,
    headers: Mapping[str, str],
) -> ParsedAuth:
    amz_date = headers.get("x-amz-date")
    timestamp = ""
    if amz_date is not None:
        timestamp = amz_date.strip()
        when = _parse_timestamp(timestamp)  # a match is already in _format_timestamp's form
    elif "date" in headers:
        when = _parse_http_date(headers["date"])
    else:
        when = None
    if when is None:
        raise SigV4Error(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
        )

    token = headers.get("x-amz-security-token")
    if token is not None and "x-amz-security-token" not in signed_headers:
        raise SigV4Error("IncompleteSignature", "the x-amz-security-token header must be signed")
    return ParsedAuth(
        access_key_id=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=signature,
        presigned=False,
        timestamp=timestamp if amz_date is not None else _format_timestamp(when),
        amz_date=when,
        security_token=token,
    )


def _parse_presigned(params: dict[str, str], headers: Mapping[str, str]) -> ParsedAuth:
    code = "AuthorizationQueryParametersError"
    missing = [k for k in _PRESIGN_KEYS[:6] if k not in params]
    if missing:
        raise SigV4Error(
            code,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
            f"X-Amz-Expires parameters (missing: {', '.join(missing)})",
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise SigV4Error(code, f"X-Amz-Algorithm only supports {ALGORITHM}")
    access_key, date, region, service = _parse_credential(params["X-Amz-Credential"], code)
    timestamp = params["X-Amz-Date"]
    when = _parse_timestamp(timestamp)
    if when is None:
        raise SigV4Error(
            code, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        )
    expires_text = params["X-Amz-Expires"]
    if not _EXPIRES_RE.fullmatch(expires_text):
        raise SigV4Error(code, "X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires < 1:
        raise SigV4Error(code, "X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGNED_EXPIRES:
        raise SigV4Error(
            code,
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        )
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"], code)
    signature = params["X-Amz-Signature"].lower()
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SigV4Error(code, "X-Amz-Signature must be 64 hexadecimal digits")

    token = params.get("X-Amz-Security-Token")
    header_token = headers.get("x-amz-security-token")
    if header_token is not None:
        if "x-amz-security-token" not in signed_headers:
            raise SigV4Error(
                "IncompleteSignature", "the x-amz-security-token header must be signed"
            )
        if token is not None and token != header_token:
            raise SigV4Error(code, "the security token in the query and the header differ")
        token = header_token
    return ParsedAuth(
        access_key_id=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=signature,
        presigned=True,
        timestamp=timestamp,
        amz_date=when,
        expires=expires,
        security_token=token,
    )


# --------------------------------------------------------------------------------------------
# verify


_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


def _declared_payload_hash(
    parsed: ParsedAuth, headers: Mapping[str, str], body: bytes | None
) -> str:
    declared = headers.get("x-amz-content-sha256")
    if declared is not None:
        if declared in _STREAMING_MODES or declared == UNSIGNED_PAYLOAD:
            if parsed.service not in S3_SIGNING_SERVICES:
                # Only S3 takes an unsigned or aws-chunked body; anywhere else it would leave
                # the body unauthenticated (a captured request replayed with another body).
                raise SigV4Error(
                    "InvalidRequest",
                    f"x-amz-content-sha256 {declared} is accepted for S3 only; "
                    f"{parsed.service} requests must sign the SHA-256 of their body",
                )
            return declared
        if _HEX64_RE.fullmatch(declared):
            return declared
        raise SigV4Error(
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER or a valid sha256 value",
        )
    if parsed.service in S3_SIGNING_SERVICES:
        if parsed.presigned:
            return UNSIGNED_PAYLOAD
        raise SigV4Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    if body is None:
        if parsed.presigned:  # botocore moves a presigned request's body into the query
            return EMPTY_SHA256
        raise SigV4Error(
            "InvalidRequest",
            "x-amz-content-sha256 is required when the request body is streamed",
        )
    return hashlib.sha256(body).hexdigest()


def _query_candidates(query: str, drop_key: str | None) -> Iterator[str]:
    """botocore's canonical query, then (only if needed, and only if different) the spec's."""
    as_sent = _canonical_query_as_sent(query, drop_key)
    yield as_sent
    if query:
        normalized = _canonical_query_normalized(query, drop_key)
        if normalized != as_sent:
            yield normalized


def verify(
    parsed: ParsedAuth,
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes | None,
    secret_key: str,
    now: datetime,
    max_skew: timedelta = _DEFAULT_MAX_SKEW,
    key_cache: SigningKeyCache | None = None,
) -> SignedRequestInfo:
    """Check the signature of a request whose claims :func:`parse_auth` extracted.

    ``headers`` have lower-case names. ``body`` is the whole body, or None when the gateway
    streams it instead of buffering it: then the payload hash is the declared
    ``x-amz-content-sha256`` (which S3 requires, and which the forwarded request must carry so
    that AWS checks the body against it). When the body is given and the signed payload hash is
    a digest, the body must match it. An aws-chunked body (payload hash ``STREAMING-...``) must
    then be passed through :class:`ChunkedPayloadDecoder`.
    """
    now = _utc(now)
    scope_code = (
        "AuthorizationQueryParametersError" if parsed.presigned else "AuthorizationHeaderMalformed"
    )
    if parsed.timestamp[:8] != parsed.date:
        raise SigV4Error(
            scope_code,
            f"Invalid credential date {parsed.date}: it is not the same as the request date "
            f"{parsed.timestamp[:8]}",
        )
    if parsed.presigned:
        if parsed.expires is None:
            raise ValueError("a presigned ParsedAuth needs its X-Amz-Expires")
        if now < parsed.amz_date - max_skew:
            raise SigV4Error("AccessDenied", "Request is not valid yet")
        if now > parsed.amz_date + timedelta(seconds=parsed.expires):
            raise SigV4Error("AccessDenied", "Request has expired")
    elif abs(now - parsed.amz_date) > max_skew:
        raise SigV4Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large",
        )

    payload_hash = _declared_payload_hash(parsed, headers, body)
    for name in parsed.signed_headers:
        if name not in headers:
            raise SigV4Error(
                "SignatureDoesNotMatch", f"the signed header {name!r} is missing from the request"
            )

    cache = key_cache if key_cache is not None else _DEFAULT_KEY_CACHE
    signing_key = cache.derive_signing_key(secret_key, parsed.date, parsed.region, parsed.service)
    uri = canonical_uri(raw_path, parsed.service)
    drop = "X-Amz-Signature" if parsed.presigned else None
    scope = parsed.credential_scope

    canonical = string_to_sign = ""
    for canonical_query in _query_candidates(query, drop):
        canonical = _canonical_request(
            method, uri, canonical_query, headers, parsed.signed_headers, payload_hash
        )
        string_to_sign = _string_to_sign(parsed.timestamp, scope, canonical)
        if hmac.compare_digest(_hmac_hex(signing_key, string_to_sign), parsed.signature):
            break
    else:
        raise SigV4Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            canonical_request=canonical,
            string_to_sign=string_to_sign,
        )

    if (
        body is not None
        and _HEX64_RE.fullmatch(payload_hash)
        and not hmac.compare_digest(hashlib.sha256(body).hexdigest(), payload_hash.lower())
    ):
        raise SigV4Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )

    return SignedRequestInfo(
        access_key_id=parsed.access_key_id,
        region=parsed.region,
        service=parsed.service,
        amz_date=parsed.amz_date,
        signed_headers=parsed.signed_headers,
        payload_hash=payload_hash,
        presigned=parsed.presigned,
        security_token=parsed.security_token,
        signature=parsed.signature,
        signing_key=signing_key,
    )


# --------------------------------------------------------------------------------------------
# sign_headers


def sign_headers(
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    payload_hash: str,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    region: str,
    service: str,
    now: datetime,
    key_cache: SigningKeyCache | None = None,
) -> dict[str, str]:
    """Sign a request to forward upstream; returns the headers to add to it.

    ``headers`` are the headers that will be forwarded (a ``host`` header is required). Every
    one of them is signed except :data:`UNSIGNABLE_HEADERS` (what botocore leaves out) and
    :data:`SIGNER_OWNED_HEADERS`, which are ignored here and must be removed from the forwarded
    request: the returned ``authorization``, ``x-amz-date``, ``x-amz-security-token`` (with a
    session token) and ``x-amz-content-sha256`` (S3, or an unsigned payload) replace them.
    The result is byte-identical to botocore's for the same request and time.

    The query is signed in its canonical encoded form; forward a query that is already encoded
    the way AWS expects (``+`` is not a space) or AWS will compute a different signature.
    """
    timestamp = _SIGNING_STAMP.of(now if now.tzinfo is UTC else _utc(now))
    date = timestamp[:8]
    added: dict[str, str] = {"x-amz-date": timestamp}
    if session_token:
        added["x-amz-security-token"] = session_token
    if service in S3_SIGNING_SERVICES or payload_hash == UNSIGNED_PAYLOAD:
        added["x-amz-content-sha256"] = payload_hash

    to_sign: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname in UNSIGNABLE_HEADERS or lname in SIGNER_OWNED_HEADERS:
            continue
        to_sign[lname] = f"{to_sign[lname]},{value}" if lname in to_sign else value
    if "host" not in to_sign:
        raise ValueError("sign_headers needs the host header of the forwarded request")
    to_sign.update(added)
    signed_headers = tuple(sorted(to_sign))

    cache = key_cache if key_cache is not None else _DEFAULT_KEY_CACHE
    signing_key = cache.derive_signing_key(secret_key, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical = _canonical_request(
        method,
        canonical_uri(raw_path, service),
        _canonical_query_normalized(query),
        to_sign,
        signed_headers,
        payload_hash,
    )
    signature = _hmac_hex(signing_key, _string_to_sign(timestamp, scope, canonical))
    added["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed_headers)}, Signature={signature}"
    )
    return added


# --------------------------------------------------------------------------------------------
# aws-chunked bodies


#: Largest chunk the decoder accepts in a signed stream (it holds one chunk until verified).
DEFAULT_MAX_CHUNK_SIZE = 16 * 1024 * 1024
_MAX_LINE = 4096
_MAX_TRAILERS = 32

_SIGNED_CHUNK_HEADER_RE = re.compile(rb"([0-9a-fA-F]{1,16});chunk-signature=([0-9a-f]{64})")
_UNSIGNED_CHUNK_HEADER_RE = re.compile(rb"[0-9a-fA-F]{1,16}")
_TRAILER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")

_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedPayloadDecoder:
    """Incremental decoder for ``Content-Encoding: aws-chunked`` bodies.

    Modes, from the request's ``x-amz-content-sha256``:

    - ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: ``hex-size;chunk-signature=SIG\\r\\n data \\r\\n``
      ... ``0;chunk-signature=SIG\\r\\n\\r\\n``. Each chunk signature chains from the previous
      one, starting at the seed (request) signature; a chunk's data is released only after its
      signature checked, so at most one chunk is held.
    - ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: the same, then trailer lines and
      ``x-amz-trailer-signature:SIG`` signing them, chained from the final chunk's signature.
    - ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: ``hex-size\\r\\n data \\r\\n`` ... ``0\\r\\n``,
      trailer lines, ``\\r\\n``. Data passes through as it arrives. The trailers (checksums) are
      not authenticated; forward them so that AWS checks them.

    ``feed`` takes bytes split anywhere and returns the decoded payload that became available;
    ``finish`` raises unless the body ended exactly after its final chunk and trailers. Any
    failure in a signed stream raises ``SignatureDoesNotMatch``; in an unsigned one
    ``IncompleteBody``. After a failure every call raises again.
    """

    def __init__(
        self,
        payload_hash: str,
        *,
        signing_key: bytes | None = None,
        timestamp: str | None = None,
        credential_scope: str | None = None,
        seed_signature: str | None = None,
        decoded_content_length: int | None = None,
        declared_trailers: Collection[str] | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> None:
        if payload_hash not in _STREAMING_MODES:
            raise SigV4Error(
                "InvalidRequest", f"x-amz-content-sha256 {payload_hash[:80]!r} is not aws-chunked"
            )
        self.mode = payload_hash
        self._signed = payload_hash != STREAMING_UNSIGNED_TRAILER
        self._error_code = "SignatureDoesNotMatch" if self._signed else "IncompleteBody"
        if self._signed:
            if signing_key is None or timestamp is None or credential_scope is None:
                raise ValueError("a signed aws-chunked body needs the signing key, time and scope")
            if seed_signature is None:
                raise ValueError("a signed aws-chunked body needs the seed signature")
        self._key = signing_key or b""
        self._sts_prefix = f"AWS4-HMAC-SHA256-PAYLOAD\n{timestamp}\n{credential_scope}\n"
        self._trailer_sts_prefix = f"AWS4-HMAC-SHA256-TRAILER\n{timestamp}\n{credential_scope}\n"
        self._previous = seed_signature or ""
        self._expected_length = decoded_content_length
        self._declared = (
            frozenset(n.strip().lower() for n in declared_trailers)
            if declared_trailers is not None
            else None
        )
        self._max_chunk = max_chunk_size

        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0
        self._chunk_signature = ""
        self._chunk = bytearray()
        self._chunk_hash = hashlib.sha256()
        self._chunks = 0
        self._length = 0
        self._trailers: dict[str, str] = {}
        self._trailer_signed = False
        self._error: SigV4Error | None = None

    @classmethod
    def for_request(
        cls,
        info: SignedRequestInfo,
        headers: Mapping[str, str],
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> ChunkedPayloadDecoder:
        """A decoder for the body of a request :func:`verify` accepted."""
        length_text = headers.get("x-amz-decoded-content-length")
        length: int | None = None
        if length_text is not None:
            length_text = length_text.strip()
            if not _LENGTH_RE.fullmatch(length_text):
                raise SigV4Error("InvalidArgument", "x-amz-decoded-content-length must be a number")
            length = int(length_text)
        elif info.payload_hash in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
            raise SigV4Error(
                "InvalidRequest",
                "Missing required header for this request: x-amz-decoded-content-length",
            )
        trailer_header = headers.get("x-amz-trailer")
        declared = (
            [n for n in trailer_header.split(",") if n.strip()]
            if trailer_header is not None
            else None
        )
        return cls(
            info.payload_hash,
            signing_key=info.signing_key,
            timestamp=info.timestamp,
            credential_scope=info.credential_scope,
            seed_signature=info.signature,
            decoded_content_length=length,
            declared_trailers=declared,
            max_chunk_size=max_chunk_size,
        )

    # -- public state --------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the final chunk and the trailers have been read and checked."""
        return self._state == _DONE

    @property
    def trailers(self) -> dict[str, str]:
        """Trailer headers (lower-case names), without ``x-amz-trailer-signature``."""
        return dict(self._trailers)

    @property
    def decoded_length(self) -> int:
        """Payload bytes announced by the chunk headers read so far."""
        return self._length

    # -- decoding ------------------------------------------------------------------------------

    def _fail(self, message: str, code: str | None = None) -> SigV4Error:
        self._error = SigV4Error(code or self._error_code, message)
        return self._error

    def feed(self, data: bytes) -> bytes:
        if self._error is not None:
            raise self._error
        if isinstance(data, memoryview):
            data = data.tobytes()
        out = bytearray()
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                pos += take
                self._remaining -= take
                if self._signed:
                    self._chunk_hash.update(piece)
                    self._chunk += piece
                else:
                    out += piece
                if self._remaining == 0:
                    if self._signed:
                        self._check_chunk(self._chunk_hash.hexdigest())
                        out += self._chunk
                        self._chunk = bytearray()
                    self._state = _DATA_END
            elif state == _DATA_END:
                need = 2 - len(self._line)
                self._line += view[pos : pos + need]
                pos = min(pos + need, end)
                if len(self._line) == 2:
                    if self._line != b"\r\n":
                        raise self._fail("aws-chunked chunk data is not followed by CRLF")
                    self._line.clear()
                    self._state = _HEADER
            elif state == _DONE:
                raise self._fail("data after the end of the aws-chunked body")
            else:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline + 1
                self._line += view[pos:stop]
                pos = stop
                if len(self._line) > _MAX_LINE:
                    raise self._fail("aws-chunked header or trailer line is too long")
                if newline < 0:
                    break
                if len(self._line) < 2 or self._line[-2] != 0x0D:
                    raise self._fail("aws-chunked line does not end with CRLF")
                line = bytes(self._line[:-2])
                self._line.clear()
                if state == _HEADER:
                    self._on_chunk_header(line)
                else:
                    self._on_trailer_line(line)
        return bytes(out)

    def finish(self) -> None:
        """Raise unless the whole body, final chunk and trailers included, was fed."""
        if self._error is not None:
            raise self._error
        if self._state != _DONE:
            raise self._fail("the aws-chunked body ended before its final chunk and trailers")

    def _on_chunk_header(self, line: bytes) -> None:
        pattern = _SIGNED_CHUNK_HEADER_RE if self._signed else _UNSIGNED_CHUNK_HEADER_RE
        match = pattern.fullmatch(line)
        if match is None:
            raise self._fail(f"malformed aws-chunked chunk header {line[:100]!r}")
        size = int(line.split(b";", 1)[0], 16)
        if self._signed:
            if size > self._max_chunk:
                raise self._fail(f"aws-chunked chunk of {size} bytes is larger than allowed")
            self._chunk_signature = match.group(2).decode("ascii")
        self._length += size
        if self._expected_length is not None and self._length > self._expected_length:
            raise self._fail("aws-chunked body is longer than x-amz-decoded-content-length")
        if size:
            self._remaining = size
            self._chunk_hash = hashlib.sha256()
            self._state = _DATA
            return
        if self._signed:
            self._check_chunk(EMPTY_SHA256)
        if self._expected_length is not None and self._length != self._expected_length:
            raise self._fail("aws-chunked body is shorter than x-amz-decoded-content-length")
        self._state = _TRAILER

    def _check_chunk(self, chunk_hash: str) -> None:
        self._chunks += 1
        expected = _hmac_hex(
            self._key, f"{self._sts_prefix}{self._previous}\n{EMPTY_SHA256}\n{chunk_hash}"
        )
        if not hmac.compare_digest(expected, self._chunk_signature):
            raise self._fail(
                f"chunk signature of aws-chunked chunk {self._chunks} does not match",
                "SignatureDoesNotMatch",
            )
        self._previous = expected

    def _on_trailer_line(self, line: bytes) -> None:
        if not line:
            if self.mode == STREAMING_SIGNED_TRAILER and not self._trailer_signed:
                raise self._fail("the aws-chunked trailers lack x-amz-trailer-signature")
            self._state = _DONE
            return
        if self.mode == STREAMING_SIGNED:
            raise self._fail("trailers are not allowed with STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        if self._trailer_signed:
            raise self._fail("aws-chunked trailer after x-amz-trailer-signature")
        raw_name, colon, raw_value = line.partition(b":")
        try:
            name = raw_name.decode("ascii").strip().lower()
            value = _trimall(raw_value.decode("ascii"))
        except UnicodeDecodeError:
            raise self._fail("aws-chunked trailer is not ASCII") from None
        if not colon or not _TRAILER_NAME_RE.fullmatch(name):
            raise self._fail(f"malformed aws-chunked trailer {line[:100]!r}")
        if name == "x-amz-trailer-signature":
            if self.mode != STREAMING_SIGNED_TRAILER:
                raise self._fail("x-amz-trailer-signature in an unsigned aws-chunked body")
            self._check_trailer_signature(value)
            return
        if self._declared is not None and name not in self._declared:
            raise self._fail(f"aws-chunked trailer {name!r} was not declared in x-amz-trailer")
        if name in self._trailers:
            raise self._fail(f"aws-chunked trailer {name!r} repeated")
        if len(self._trailers) >= _MAX_TRAILERS:
            raise self._fail("too many aws-chunked trailers")
        self._trailers[name] = value

    def _check_trailer_signature(self, signature: str) -> None:
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(self._trailers.items()))
        digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()
        expected = _hmac_hex(self._key, f"{self._trailer_sts_prefix}{self._previous}\n{digest}")
        if not hmac.compare_digest(expected, signature.lower()):
            raise self._fail("trailer signature of the aws-chunked body does not match")
        self._previous = expected
        self._trailer_signed = True
