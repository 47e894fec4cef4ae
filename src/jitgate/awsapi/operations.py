"""Name the AWS API operation a raw request invokes, and decode its input parameters.

The gateway sees requests as they arrive on the wire. This module finds the botocore operation
the upstream service will execute for such a request, and decodes its parameters into the
values botocore would have been given, using botocore's own service models:

- json protocol (DynamoDB, Secrets Manager, SSM, KMS, Logs, SQS): the ``X-Amz-Target`` header;
- query protocol (SNS, STS, and SQS's older form) and ec2: ``Action=`` in the query string or
  the form-urlencoded body;
- rest-xml (S3) and rest-json (Lambda): method + URI template + the query keys that
  discriminate operations sharing a path (``?uploads``, ``?tagging``, ``?list-type=2``, ...).

The rule throughout is that an agent controls every byte of the request, so anything the
upstream might read differently from us (an unknown query key, a duplicate parameter, an odd
encoding, a header that changes the operation) is refused with UnsupportedOperation rather
than guessed at: the gateway fails closed.

Bodies: the gateway calls :func:`identify` first with ``body=None`` (nothing buffered yet). For
rest protocols that names the operation from method, path, query and headers. If
:func:`needs_body` says the mapping needs the body, the gateway buffers it and calls
:func:`identify` again with it. For json/query protocols every operation needs the body; a
query-protocol request whose ``Action`` is only in the body cannot even be named without it
and raises :class:`BodyRequired` (an UnsupportedOperation, so an unaware caller fails closed).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_to_bytes
from xml.parsers import expat

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape

from jitgate.awsapi.types import AwsRequest, Operation, UnsupportedOperation

__all__ = [
    "SUPPORTED_SERVICES",
    "BodyRequired",
    "identify",
    "identify_without_body",
    "needs_body",
    "parse_copy_source",
]

#: SigV4 signing name -> botocore service name, for the services jitgate maps.
_SIGNING_NAMES: Final[Mapping[str, str]] = {
    "s3": "s3",
    "dynamodb": "dynamodb",
    "sqs": "sqs",
    "sns": "sns",
    "secretsmanager": "secretsmanager",
    "ssm": "ssm",
    "kms": "kms",
    "lambda": "lambda",
    "logs": "logs",
    "sts": "sts",
}

#: botocore service names whose calls jitgate can identify and map.
SUPPORTED_SERVICES: Final[frozenset[str]] = frozenset(_SIGNING_NAMES.values())

#: Services identified only to name the operation in the refusal (the mapping refuses them).
_IDENTIFY_ONLY: Final[Mapping[str, str]] = {"ec2": "ec2"}

#: Query keys of SigV4 query-string authentication (presigned URLs); they never select or
#: parameterize an operation.
_PRESIGN_KEYS: Final[frozenset[str]] = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)

#: S3 operations that share their wire form with a newer operation and are never the result of
#: identification; the upstream executes the same thing for both (and IAM checks the same
#: action), so the newer name is reported.
_S3_WIRE_ALIASES: Final[Mapping[str, str]] = {
    "GetBucketLifecycle": "GetBucketLifecycleConfiguration",
    "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
    "GetBucketNotification": "GetBucketNotificationConfiguration",
    "PutBucketNotification": "PutBucketNotificationConfiguration",
    # Sent to the s3express control endpoint, never to a general S3 endpoint.
    "ListDirectoryBuckets": "ListBuckets",
}

#: S3 operations whose (small, XML) body the mapping reads.
_S3_BODY_OPERATIONS: Final[frozenset[str]] = frozenset(
    {"DeleteObjects", "CreateBucket", "RestoreObject", "PutBucketEncryption"}
)

_JSON_CONTENT_TYPES: Final[frozenset[str]] = frozenset(
    {"application/x-amz-json-1.0", "application/x-amz-json-1.1"}
)
_FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

#: Headers some HTTP stacks honour to change the method; AWS does not, a proxy in between might.
_METHOD_OVERRIDES: Final[frozenset[str]] = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override"}
)

_RAW_URL_CHARS = re.compile(r"[\x21-\x7e]*\Z")  # printable ASCII, no spaces
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUERY_KEY = re.compile(r"[A-Za-z0-9._~-]+\Z")
_INDEX = re.compile(r"[1-9][0-9]{0,5}\Z")
_INTEGER = re.compile(r"-?[0-9]{1,19}\Z")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]\Z")
_LABEL = re.compile(r"\{([A-Za-z0-9_]+)(\+?)\}\Z")
_MAX_SHOWN = 120


class BodyRequired(UnsupportedOperation):
    """The operation cannot be named without the request body (query protocol, Action in body).

    The gateway buffers the body and calls :func:`identify` again.
    """


def _refuse(message: str) -> UnsupportedOperation:
    return UnsupportedOperation(message)


def _shown(text: str) -> str:
    """A caller-supplied string, shortened for an error message."""
    text = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    return repr(text)


# --------------------------------------------------------------------------------------------
# Model index (built once per service, on first use)


@dataclass(frozen=True)
class _Member:
    name: str  # botocore member name
    shape: Shape


@dataclass(frozen=True)
class _RestRoute:
    """One rest operation: what a request must look like to be this operation."""

    name: str
    method: str
    # "s3-service" ("/"), "s3-bucket" ("/{Bucket}"), "s3-object" ("/{Bucket}/{Key+}"),
    # or "path" (matched segment by segment against ``segments``).
    kind: str
    segments: tuple[str, ...]
    literal_query: Mapping[str, str]  # key -> exact value ("" for a bare subresource key)
    required_query: frozenset[str]  # wire keys of required querystring members
    required_headers: frozenset[str]  # lower-case names of required header members
    query_members: Mapping[str, _Member]
    header_members: Mapping[str, _Member]
    prefix_headers: tuple[tuple[str, _Member], ...]
    uri_members: Mapping[str, _Member]
    score: tuple[int, int]  # (discriminating query keys and headers, literal path segments)
    # Every query key the route cannot do without (its literal and required keys): a cheap
    # first test before _query_fits, since most routes of a kind are told apart by these.
    needed_query: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _ServiceIndex:
    service: str
    model: ServiceModel
    protocol: str
    targets: Mapping[str, str] = field(default_factory=dict)  # X-Amz-Target -> operation
    # Routes by (method, kind): an S3 object request need not look at bucket routes.
    routes_by_kind: Mapping[tuple[str, str], tuple[_RestRoute, ...]] = field(default_factory=dict)


@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.Session()


def warm_up() -> None:
    """Load every supported service's model and routes now, not on its first call (a server
    calls this once at start: the first calls are not slowed, and the objects can be frozen
    out of the garbage collector's way, see jitgate.server)."""
    for service in sorted(SUPPORTED_SERVICES):
        _index(service)


@functools.cache
def _index(service: str) -> _ServiceIndex:
    model = _session().get_service_model(service)
    protocol = model.protocol
    if protocol == "json":
        prefix = model.metadata["targetPrefix"]
        targets = {f"{prefix}.{name}": name for name in model.operation_names}
        return _ServiceIndex(service, model, protocol, targets=targets)
    if protocol in ("rest-xml", "rest-json"):
        by_kind: dict[tuple[str, str], list[_RestRoute]] = {}
        for name in model.operation_names:
            if service == "s3" and name in _S3_WIRE_ALIASES:
                continue
            route = _build_route(service, model.operation_model(name))
            if route is not None:
                by_kind.setdefault((route.method, route.kind), []).append(route)
        routes = {key: tuple(rs) for key, rs in by_kind.items()}
        return _ServiceIndex(service, model, protocol, routes_by_kind=routes)
    if protocol in ("query", "ec2"):
        return _ServiceIndex(service, model, protocol)
    raise _refuse(f"service '{service}' uses protocol {protocol!r}, which jitgate cannot read")


def _build_route(service: str, op: OperationModel) -> _RestRoute | None:
    """The route of a rest operation, or None if it cannot be matched safely."""
    uri = op.http["requestUri"]
    path, _, query = uri.partition("?")
    literal_query: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        literal_query[key] = value

    shape = op.input_shape
    members: Mapping[str, Shape] = shape.members if shape is not None else {}
    required = set(shape.required_members) if shape is not None else set()
    query_members: dict[str, _Member] = {}
    header_members: dict[str, _Member] = {}
    prefix_headers: list[tuple[str, _Member]] = []
    uri_members: dict[str, _Member] = {}
    required_query: set[str] = set()
    required_headers: set[str] = set()
    for name, member in members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            uri_members[wire] = _Member(name, member)
        elif location == "querystring":
            if member.type_name == "map":
                # A map swallows arbitrary query keys, which would defeat the unknown-key
                # check. No supported service has one; such an operation is never matched.
                return None
            query_members[wire] = _Member(name, member)
            if name in required:
                required_query.add(wire)
        elif location == "header":
            header_members[wire.lower()] = _Member(name, member)
            if name in required:
                required_headers.add(wire.lower())
        elif location == "headers":
            prefix_headers.append((wire.lower(), _Member(name, member)))

    if service == "s3" and path == "/":
        kind, segments = "s3-service", ()
    elif service == "s3" and path == "/{Bucket}":
        kind, segments = "s3-bucket", ()
    elif service == "s3" and path == "/{Bucket}/{Key+}":
        kind, segments = "s3-object", ()
    else:
        kind, segments = "path", tuple(path.strip("/").split("/")) if path != "/" else ()
    literal_segments = sum(1 for s in segments if not _LABEL.match(s))
    discriminators = len(literal_query) + len(required_query) + len(required_headers)
    return _RestRoute(
        name=op.name,
        method=op.http["method"],
        kind=kind,
        segments=segments,
        literal_query=literal_query,
        required_query=frozenset(required_query),
        required_headers=frozenset(required_headers),
        query_members=query_members,
        header_members=header_members,
        prefix_headers=tuple(prefix_headers),
        uri_members=uri_members,
        score=(discriminators, literal_segments),
        needed_query=frozenset(literal_query) | frozenset(required_query),
    )


def _service_index(signing_name: str) -> _ServiceIndex:
    service = _SIGNING_NAMES.get(signing_name) or _IDENTIFY_ONLY.get(signing_name)
    if service is None:
        raise _refuse(f"service '{signing_name}' is not supported by jitgate")
    return _index(service)


# --------------------------------------------------------------------------------------------
# Public API


def identify(req: AwsRequest) -> Operation:
    """The operation ``req`` invokes and its parameters, or UnsupportedOperation.

    With ``req.body`` None, parameters that travel in the body are absent from the result; call
    again with the body when :func:`needs_body` says so.
    """
    idx = _service_index(req.service)
    if not _RAW_URL_CHARS.match(req.raw_path) or not req.raw_path.startswith("/"):
        raise _refuse(f"{idx.service}: request path {_shown(req.raw_path)} is not understood")
    if not _RAW_URL_CHARS.match(req.query):
        raise _refuse(f"{idx.service}: query string is not understood")
    headers: dict[str, str] = {}
    for name, value in req.headers.items():
        if name.lower() in headers:
            raise _refuse(f"{idx.service}: header {_shown(name)} is repeated")
        headers[name.lower()] = value
    if _METHOD_OVERRIDES.intersection(headers):
        raise _refuse(f"{idx.service}: HTTP method override headers are not supported")
    if idx.protocol in ("rest-xml", "rest-json"):
        return _identify_rest(idx, req, headers)
    if idx.service == "sqs":
        # SQS speaks json (X-Amz-Target) and, from older clients, the query protocol.
        if "x-amz-target" in headers:
            return _identify_json(idx, req, headers)
        return _identify_query(idx, req, headers)
    if idx.protocol == "json":
        return _identify_json(idx, req, headers)
    return _identify_query(idx, req, headers)


def identify_without_body(req: AwsRequest) -> Operation:
    """:func:`identify` from method, path, query and headers only (the body not yet read)."""
    return identify(dataclasses.replace(req, body=None))


def needs_body(service: str, operation_name: str) -> bool:
    """Whether mapping ``operation_name`` to IAM needs the request body.

    True for every json and query protocol operation, for S3 DeleteObjects (every key in the
    body) and CreateBucket (its configuration), and for rest-json operations with a structured
    body; False for streamed bodies (S3 PutObject, UploadPart, Lambda Invoke, ...).
    """
    name = _SIGNING_NAMES.get(service) or _IDENTIFY_ONLY.get(service) or service
    if name not in SUPPORTED_SERVICES and name not in _IDENTIFY_ONLY.values():
        raise _refuse(f"service '{service}' is not supported by jitgate")
    idx = _index(name)
    if operation_name not in idx.model.operation_names:
        raise _refuse(f"{name}: unknown operation {_shown(operation_name)}")
    if idx.protocol in ("json", "query", "ec2"):
        return True
    if name == "s3":
        return operation_name in _S3_BODY_OPERATIONS
    shape = idx.model.operation_model(operation_name).input_shape
    if shape is None:
        return False
    payload = shape.serialization.get("payload")
    if payload is not None:
        return shape.members[payload].type_name == "structure"
    return any(m.serialization.get("location") is None for m in shape.members.values())


@functools.cache
def takes_member(service: str, operation_name: str, member: str) -> bool:
    """Whether the operation's input has ``member`` (per its botocore model)."""
    shape = _index(service).model.operation_model(operation_name).input_shape
    return shape is not None and member in shape.members


def parse_copy_source(value: str) -> dict[str, str]:
    """Decode an S3 ``x-amz-copy-source`` value: ``[/]bucket/key[?versionId=id]``.

    The bucket and key are percent-decoded once. Access-point and other ARN forms are refused,
    as is any raw ',' (the gateway joins repeated headers with ','), and any raw '+', ';' or
    '#': S3 (or a server in between) may read them as a space or the end of the path, while
    SDKs always percent-encode them, so they can only make the key checked differ from the key
    copied.
    """
    if not _RAW_URL_CHARS.match(value.replace(" ", "!")) or any(c in value for c in ",+;#"):
        raise _refuse("s3: x-amz-copy-source is not understood")
    path, sep, query = value.partition("?")
    if path.startswith("/"):
        path = path[1:]
    bucket_raw, slash, key_raw = path.partition("/")
    if not slash or not key_raw or not _BUCKET.match(bucket_raw):
        raise _refuse("s3: x-amz-copy-source must be 'bucket/key' with a valid bucket name")
    source = {"Bucket": bucket_raw, "Key": _percent_decode(key_raw, what="copy source key")}
    if sep:
        name, eq, version = query.partition("=")
        if name != "versionId" or not eq or "&" in version or not version:
            raise _refuse("s3: x-amz-copy-source may only carry a versionId")
        source["VersionId"] = _percent_decode(version, what="copy source versionId")
    return source


# --------------------------------------------------------------------------------------------
# Decoding helpers


def _percent_decode(raw: str, *, what: str, plus_is_space: bool = False) -> str:
    """Percent-decode once, strictly: malformed escapes and invalid UTF-8 are refused."""
    if _BAD_PERCENT.search(raw):
        raise _refuse(f"malformed percent-encoding in {what}")
    if plus_is_space:
        raw = raw.replace("+", " ")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(f"{what} is not valid UTF-8") from None


def _media_type(headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    value = headers.get("content-type", "")
    main, *params = value.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, _, val = param.strip().partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"').lower()
    return main.strip().lower(), parsed


def _check_identity_encoding(headers: Mapping[str, str], service: str) -> None:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise _refuse(f"{service}: request bodies with Content-Encoding are not supported")


def _scalar_from_text(shape: Shape, text: str, what: str, *, lenient_bool: bool = False) -> Any:
    """A string from a URI, query string, header or form body, as botocore's value type."""
    kind = shape.type_name
    if kind in ("integer", "long"):
        if not _INTEGER.match(text.strip()):
            raise _refuse(f"{what} must be an integer")
        return int(text.strip())
    if kind == "boolean":
        lowered = text.strip().lower() if lenient_bool else text
        if lowered not in ("true", "false"):
            raise _refuse(f"{what} must be true or false")
        return lowered == "true"
    if kind in ("float", "double"):
        try:
            number = float(text)
        except ValueError:
            raise _refuse(f"{what} must be a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise _refuse(f"{what} must be a finite number")
        return number
    if kind == "blob":
        return _b64decode(text, what)
    return text  # string, timestamp (kept as sent)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(f"{what} must be base64") from None


# --------------------------------------------------------------------------------------------
# json protocol


def _identify_json(idx: _ServiceIndex, req: AwsRequest, headers: Mapping[str, str]) -> Operation:
    service = idx.service
    if req.method != "POST" or req.raw_path != "/" or req.query:
        raise _refuse(f"{service}: json requests must be POST / without a query string")
    if "smithy-protocol" in headers:
        raise _refuse(f"{service}: only the awsJson protocol is supported")
    target = headers.get("x-amz-target", "").strip(" \t")
    name = idx.targets.get(target)
    if name is None:
        raise _refuse(f"{service}: unknown operation X-Amz-Target {_shown(target)}")
    media, params = _media_type(headers)
    if media not in _JSON_CONTENT_TYPES or params.get("charset", "utf-8") != "utf-8":
        raise _refuse(f"{service}: json requests need Content-Type application/x-amz-json-1.x")
    if req.body is None:
        return Operation(service, name, {})
    _check_identity_encoding(headers, service)
    shape = idx.model.operation_model(name).input_shape
    return Operation(service, name, _json_body(req.body, shape, service, name))


def _json_body(body: bytes, shape: StructureShape | None, service: str, name: str) -> dict:
    if body.strip() == b"":
        document: Any = {}
    else:
        document = _loads(body, service)
    if not isinstance(document, dict):
        raise _refuse(f"{service}: {name} body must be a JSON object")
    if shape is None:
        if document:
            raise _refuse(f"{service}: {name} takes no parameters")
        return {}
    try:
        return _json_structure(shape, document, f"{service}: {name}", body_only=True)
    except RecursionError:
        raise _refuse(f"{service}: {name} body is nested too deeply") from None


class RepeatedKey(ValueError):
    """A JSON object names a key twice: json.loads would keep the last copy, a service may
    keep another, so what is checked might not be what is acted on."""

    def __init__(self, key: str) -> None:
        super().__init__(f"JSON key {key!r} is repeated")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` that refuses (RepeatedKey) a key given twice."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RepeatedKey(key)
        result[key] = value
    return result


def _loads(body: bytes, service: str) -> Any:
    def no_constants(token: str) -> Any:
        raise _refuse(f"{service}: JSON constant {token} is not allowed")

    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constants)
    except UnicodeDecodeError:
        raise _refuse(f"{service}: request body is not valid UTF-8") from None
    except RepeatedKey as exc:
        raise _refuse(f"{service}: duplicate JSON key {_shown(exc.key)}") from None
    except (ValueError, RecursionError):
        raise _refuse(f"{service}: request body is not valid JSON") from None


@functools.cache
def _json_names(shape: StructureShape, body_only: bool) -> Mapping[str, _Member]:
    names: dict[str, _Member] = {}
    for name, member in shape.members.items():
        if body_only and member.serialization.get("location") is not None:
            continue
        names[member.serialization.get("name", name)] = _Member(name, member)
    return names


def _json_structure(shape: StructureShape, value: Any, where: str, *, body_only: bool) -> dict:
    if not isinstance(value, dict):
        raise _refuse(f"{where} must be a JSON object")
    names = _json_names(shape, body_only)
    out: dict[str, Any] = {}
    for key, item in value.items():
        member = names.get(key)
        if member is None:
            raise _refuse(f"{where}: unknown parameter {_shown(key)}")
        out[member.name] = _json_value(member.shape, item, f"{where}.{member.name}")
    return out


def _json_value(shape: Shape, value: Any, where: str) -> Any:
    kind = shape.type_name
    if kind == "document":
        return value
    if value is None:
        raise _refuse(f"{where} must not be null")
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        return _json_structure(shape, value, where, body_only=False)
    if kind == "list":
        if not isinstance(value, list):
            raise _refuse(f"{where} must be a JSON array")
        return [_json_value(shape.member, item, where) for item in value]  # type: ignore[attr-defined]
    if kind == "map":
        if not isinstance(value, dict):
            raise _refuse(f"{where} must be a JSON object")
        return {key: _json_value(shape.value, item, where) for key, item in value.items()}  # type: ignore[attr-defined]
    if kind == "string":
        if not isinstance(value, str):
            raise _refuse(f"{where} must be a string")
        return value
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _refuse(f"{where} must be an integer")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _refuse(f"{where} must be a number")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _refuse(f"{where} must be true or false")
        return value
    if kind == "blob":
        if not isinstance(value, str):
            raise _refuse(f"{where} must be a base64 string")
        return _b64decode(value, where)
    if kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _refuse(f"{where} must be a timestamp")
        return value
    raise _refuse(f"{where} has an unsupported type")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# query and ec2 protocols


@dataclass(frozen=True)
class _QueryNames:
    """Serialized names for the query protocol, on top of the model's own locationNames."""

    members: Mapping[tuple[str, str], str] = field(default_factory=dict)
    list_members: Mapping[str, str] = field(default_factory=dict)
    map_entries: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def member(self, parent: Shape, name: str, shape: Shape) -> str:
        return self.members.get((parent.name, name)) or shape.serialization.get("name", name)

    def list_member(self, shape: Shape) -> str | None:
        member: Shape = shape.member  # type: ignore[attr-defined]
        return self.list_members.get(shape.name) or member.serialization.get("name")

    def map_entry(self, shape: Shape) -> tuple[str, str]:
        if shape.name in self.map_entries:
            return self.map_entries[shape.name]
        key: Shape = shape.key  # type: ignore[attr-defined]
        value: Shape = shape.value  # type: ignore[attr-defined]
        return key.serialization.get("name", "key"), value.serialization.get("name", "value")


_MODEL_QUERY_NAMES: Final = _QueryNames()

# SQS moved to the json protocol and its model lost the query protocol's locationNames; these
# are the names its query API (2012-11-05) used, which older SDKs and the AWS CLI v1 still send.
_SQS_QUERY_NAMES: Final = _QueryNames(
    members={
        ("CreateQueueRequest", "Attributes"): "Attribute",
        ("CreateQueueRequest", "tags"): "Tag",
        ("SetQueueAttributesRequest", "Attributes"): "Attribute",
        ("TagQueueRequest", "Tags"): "Tag",
        ("SendMessageRequest", "MessageAttributes"): "MessageAttribute",
        ("SendMessageRequest", "MessageSystemAttributes"): "MessageSystemAttribute",
        ("SendMessageBatchRequestEntry", "MessageAttributes"): "MessageAttribute",
        ("SendMessageBatchRequestEntry", "MessageSystemAttributes"): "MessageSystemAttribute",
    },
    list_members={
        "AttributeNameList": "AttributeName",
        "MessageAttributeNameList": "MessageAttributeName",
        "MessageSystemAttributeList": "MessageSystemAttributeName",
        "SendMessageBatchRequestEntryList": "SendMessageBatchRequestEntry",
        "DeleteMessageBatchRequestEntryList": "DeleteMessageBatchRequestEntry",
        "ChangeMessageVisibilityBatchRequestEntryList": "ChangeMessageVisibilityBatchRequestEntry",
        "TagKeyList": "TagKey",
        "AWSAccountIdList": "AWSAccountId",
        "ActionNameList": "ActionName",
        "StringList": "StringListValue",
        "BinaryList": "BinaryListValue",
    },
    map_entries={
        "QueueAttributeMap": ("Name", "Value"),
        "TagMap": ("Key", "Value"),
        "MessageBodyAttributeMap": ("Name", "Value"),
        "MessageBodySystemAttributeMap": ("Name", "Value"),
    },
)


def _parse_form(text: str, where: str, service: str, *, body: bool) -> list[tuple[str, str]]:
    """``a=b&c=d`` as sent by the query protocol, strictly.

    In a form body '+' is a space (botocore encodes spaces so). In a query string servers differ
    on '+', and names may contain a literal plus (IAM roles can), so a raw '+' is refused there.
    """
    pairs: list[tuple[str, str]] = []
    if text == "":
        return pairs
    if not _RAW_URL_CHARS.match(text) or ";" in text or (not body and "+" in text):
        raise _refuse(f"{service}: {where} is not understood")
    for part in text.split("&"):
        key, _, value = part.partition("=")
        if not _QUERY_KEY.match(key):
            raise _refuse(f"{service}: parameter name {_shown(key)} in {where} is not understood")
        pairs.append((key, _percent_decode(value, what=f"{where} parameter", plus_is_space=True)))
    return pairs


def _identify_query(idx: _ServiceIndex, req: AwsRequest, headers: Mapping[str, str]) -> Operation:
    service = idx.service
    if "x-amz-target" in headers or "smithy-protocol" in headers:
        raise _refuse(f"{service}: X-Amz-Target is not understood here")
    if req.method not in ("GET", "POST") or req.raw_path != "/":
        raise _refuse(f"{service}: query requests must be GET or POST /")
    pairs = [
        (key, value)
        for key, value in _parse_form(req.query, "query string", service, body=False)
        if key not in _PRESIGN_KEYS
    ]
    body_pending = req.body is None and req.method == "POST"
    if req.body:
        if req.method != "POST":
            raise _refuse(f"{service}: a {req.method} request must not have a body")
        media, params = _media_type(headers)
        if media != _FORM_CONTENT_TYPE or params.get("charset", "utf-8") != "utf-8":
            raise _refuse(f"{service}: query requests need a form-urlencoded body")
        _check_identity_encoding(headers, service)
        try:
            text = req.body.decode("ascii")
        except UnicodeDecodeError:
            raise _refuse(f"{service}: form body is not understood") from None
        pairs.extend(_parse_form(text, "body", service, body=True))
    flat: dict[str, str] = {}
    for key, value in pairs:
        if key in flat:
            raise _refuse(f"{service}: parameter {_shown(key)} is given more than once")
        flat[key] = value

    action = flat.pop("Action", None)
    if action is None:
        if body_pending:
            raise BodyRequired(f"{service}: the request body is needed to name the operation")
        raise _refuse(f"{service}: request has no Action")
    if action not in idx.model.operation_names:
        raise _refuse(f"{service}: unknown operation Action={_shown(action)}")
    if idx.protocol == "ec2":
        return Operation(service, action, {})  # named only; jitgate maps no ec2 operation
    version = flat.pop("Version", None)
    if version is not None and version != idx.model.api_version:
        raise _refuse(f"{service}: API version {_shown(version)} is not supported")
    shape = idx.model.operation_model(action).input_shape
    names = _SQS_QUERY_NAMES if service == "sqs" else _MODEL_QUERY_NAMES
    decoder = _QueryDecoder(flat, names, f"{service}: {action}")
    params = decoder.structure(shape, "") if shape is not None else {}
    if decoder.flat:
        unknown = ", ".join(_shown(k) for k in sorted(decoder.flat)[:3])
        raise _refuse(f"{service}: {action}: unknown parameter(s) {unknown}")
    return Operation(service, action, params)


_MISSING: Final = object()


class _QueryDecoder:
    """Inverts botocore's QuerySerializer: flat ``A.member.1.B`` keys -> nested values.

    Keys are consumed as they are decoded; whatever is left over was not understood.
    """

    def __init__(self, flat: dict[str, str], names: _QueryNames, where: str) -> None:
        self.flat = flat
        self.names = names
        self.where = where

    def structure(self, shape: StructureShape, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            key = self.names.member(shape, name, member)
            value = self.value(member, f"{prefix}.{key}" if prefix else key)
            if value is not _MISSING:
                out[name] = value
        return out

    def value(self, shape: Shape, key: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            if not self._has_children(key):
                return _MISSING
            assert isinstance(shape, StructureShape)
            return self.structure(shape, key)
        if kind == "list":
            return self._list(shape, key)
        if kind == "map":
            return self._map(shape, key)
        if key not in self.flat:
            return _MISSING
        return _scalar_from_text(shape, self.flat.pop(key), f"{self.where}: {key}")

    def _list(self, shape: Shape, key: str) -> Any:
        if self.flat.get(key) == "":
            del self.flat[key]
            return []
        member_name = self.names.list_member(shape)
        if shape.serialization.get("flattened"):
            # botocore replaces the member's own name with the list member's name, if any.
            prefix = ".".join([*key.split(".")[:-1], member_name]) if member_name else key
        else:
            prefix = f"{key}.{member_name or 'member'}"
        indices = self._indices(prefix)
        if not indices:
            return _MISSING
        items = []
        for i in indices:
            item = self.value(shape.member, f"{prefix}.{i}")  # type: ignore[attr-defined]
            if item is _MISSING:
                raise _refuse(f"{self.where}: {prefix}.{i} is incomplete")
            items.append(item)
        return items

    def _map(self, shape: Shape, key: str) -> Any:
        prefix = key if shape.serialization.get("flattened") else f"{key}.entry"
        key_name, value_name = self.names.map_entry(shape)
        indices = self._indices(prefix)
        if not indices:
            return _MISSING
        out: dict[str, Any] = {}
        for i in indices:
            map_key = self.value(shape.key, f"{prefix}.{i}.{key_name}")  # type: ignore[attr-defined]
            map_value = self.value(shape.value, f"{prefix}.{i}.{value_name}")  # type: ignore[attr-defined]
            if map_key is _MISSING or map_value is _MISSING:
                raise _refuse(f"{self.where}: {prefix}.{i} is incomplete")
            if map_key in out:
                raise _refuse(f"{self.where}: {prefix} repeats the key {_shown(str(map_key))}")
            out[map_key] = map_value
        return out

    def _has_children(self, key: str) -> bool:
        start = key + "."
        return any(k.startswith(start) for k in self.flat)

    def _indices(self, prefix: str) -> list[int]:
        start = prefix + "."
        found: set[int] = set()
        for k in self.flat:
            if k.startswith(start):
                index = k[len(start) :].split(".", 1)[0]
                if _INDEX.match(index):
                    found.add(int(index))
        indices = sorted(found)
        if indices and indices != list(range(1, len(indices) + 1)):
            raise _refuse(f"{self.where}: {prefix} must be numbered 1, 2, 3, ...")
        return indices


# --------------------------------------------------------------------------------------------
# rest-xml and rest-json protocols


def _parse_rest_query(query: str, service: str) -> dict[str, list[str]]:
    """A rest query string as key -> values. '+' and ';' are refused as ambiguous."""
    result: dict[str, list[str]] = {}
    if query == "":
        return result
    if "+" in query or ";" in query:
        raise _refuse(f"{service}: query string is not understood")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if not _QUERY_KEY.match(key):
            raise _refuse(f"{service}: query key {_shown(key)} is not understood")
        result.setdefault(key, []).append(_percent_decode(value, what="query string value"))
    return result


def _s3_location(req: AwsRequest) -> tuple[str, str | None, str]:
    """(kind, bucket, key) of an S3 request: kind is s3-service, s3-bucket or s3-object."""
    raw = req.raw_path
    if req.bucket_from_host is not None:
        bucket: str | None = req.bucket_from_host
        key_raw = raw[1:]
        if not _BUCKET.match(req.bucket_from_host):
            raise _refuse(f"s3: bucket name {_shown(req.bucket_from_host)} is not valid")
    else:
        rest = raw[1:]
        if rest == "":
            return "s3-service", None, ""
        bucket, _, key_raw = rest.partition("/")
        if not _BUCKET.match(bucket):
            raise _refuse(f"s3: bucket name {_shown(bucket)} is not valid")
    key = _percent_decode(key_raw, what="object key") if key_raw else ""
    return ("s3-object" if key else "s3-bucket"), bucket, key


def _match_path(route: _RestRoute, raw_path: str, service: str) -> dict[str, str] | None:
    """Label values if ``raw_path`` fits the route's template, else None."""
    raw_segments = raw_path[1:].split("/") if raw_path != "/" else []
    template = route.segments
    greedy = bool(template) and template[-1].endswith("+}")
    if len(raw_segments) != len(template) and not (greedy and len(raw_segments) > len(template)):
        return None
    labels: dict[str, str] = {}
    pending: list[tuple[str, str, bool]] = []
    for i, part in enumerate(template):
        match = _LABEL.match(part)
        if match is None:
            if raw_segments[i] != part:
                return None
            continue
        is_greedy = bool(match.group(2))
        raw = "/".join(raw_segments[i:]) if is_greedy else raw_segments[i]
        pending.append((match.group(1), raw, is_greedy))
    for label, raw, is_greedy in pending:
        value = _percent_decode(raw, what=f"path label {label}")
        if value == "" or (not is_greedy and ("/" in value or value in (".", ".."))):
            raise _refuse(f"{service}: path {_shown(raw_path)} is not understood")
        labels[label] = value
    if any(s in (".", "..") for s in raw_segments):
        raise _refuse(f"{service}: path {_shown(raw_path)} is not understood")
    return labels


_NOT_EMPTY = frozenset({"VersionId", "UploadId"})


def _query_fits(route: _RestRoute, query: Mapping[str, list[str]], service: str) -> bool:
    for key, value in route.literal_query.items():
        if query.get(key) != [value]:
            return False
    if not route.required_query.issubset(query):
        return False
    for key, values in query.items():
        if key in route.literal_query or key in route.query_members or key in _PRESIGN_KEYS:
            continue
        if service == "s3" and key == "x-id" and values == [route.name]:
            continue
        return False
    return True


def _identify_rest(idx: _ServiceIndex, req: AwsRequest, headers: Mapping[str, str]) -> Operation:
    service = idx.service
    if "x-amz-target" in headers or "smithy-protocol" in headers:
        raise _refuse(f"{service}: X-Amz-Target is not understood here")
    query = _parse_rest_query(req.query, service)
    s3_kind, bucket, key = _s3_location(req) if service == "s3" else ("", None, "")

    candidates: list[tuple[_RestRoute, dict[str, str]]] = []
    routes = idx.routes_by_kind.get((req.method, "path"), ())
    if s3_kind:
        routes = idx.routes_by_kind.get((req.method, s3_kind), ()) + routes
    for route in routes:
        if route.kind == "path":
            if service == "s3" and req.bucket_from_host is not None:
                continue
            labels = _match_path(route, req.raw_path, service)
            if labels is None:
                continue
        elif route.kind != s3_kind:
            continue
        else:
            labels = {"Bucket": bucket} if bucket is not None else {}
            if route.kind == "s3-object":
                labels["Key"] = key
        if route.needed_query and not route.needed_query.issubset(query):
            continue
        if not _query_fits(route, query, service):
            continue
        if not route.required_headers.issubset(headers):
            continue
        candidates.append((route, labels))
    if not candidates:
        shown = req.raw_path + ("?" + "&".join(sorted(query)) if query else "")
        raise _refuse(f"{service}: unknown operation {req.method} {_shown(shown)}")
    best = max(route.score for route, _ in candidates)
    top = [(route, labels) for route, labels in candidates if route.score == best]
    if len(top) > 1:
        names = ", ".join(sorted(route.name for route, _ in top))
        raise _refuse(f"{service}: request is ambiguous between {names}")
    route, labels = top[0]
    params = _rest_params(idx, route, labels, query, headers)
    if req.body is not None:
        params.update(_rest_body(idx, route.name, req.body, headers))
    return Operation(service, route.name, params)


def _rest_params(
    idx: _ServiceIndex,
    route: _RestRoute,
    labels: Mapping[str, str],
    query: Mapping[str, list[str]],
    headers: Mapping[str, str],
) -> dict[str, Any]:
    service = idx.service
    where = f"{service}: {route.name}"
    params: dict[str, Any] = {}
    for label, value in labels.items():
        member = route.uri_members.get(label)
        if member is None:  # pragma: no cover - templates and members agree in the models
            raise _refuse(f"{where}: path label {label} is not understood")
        params[member.name] = _scalar_from_text(member.shape, value, f"{where}: {member.name}")
    for key, values in query.items():
        member = route.query_members.get(key)
        if member is None:
            continue
        if member.shape.type_name == "list":
            item_shape: Shape = member.shape.member  # type: ignore[attr-defined]
            params[member.name] = [
                _scalar_from_text(item_shape, v, f"{where}: {member.name}") for v in values
            ]
        elif len(values) != 1:
            raise _refuse(f"{where}: query parameter {_shown(key)} is given more than once")
        elif not values[0] and member.name in _NOT_EMPTY:
            # It chooses the operation and the action ("?uploadId=" is not "no upload"): an
            # empty one could be read differently upstream.
            raise _refuse(f"{where}: query parameter {_shown(key)} is empty")
        else:
            params[member.name] = _scalar_from_text(
                member.shape, values[0], f"{where}: {member.name}"
            )
    for header, member in route.header_members.items():
        if header not in headers:
            continue
        value = headers[header].strip(" \t")
        what = f"{where}: header {header}"
        if member.shape.type_name == "list":
            item_shape = member.shape.member  # type: ignore[attr-defined]
            params[member.name] = [
                _scalar_from_text(item_shape, v.strip(), what, lenient_bool=True)
                for v in value.split(",")
            ]
        else:
            params[member.name] = _scalar_from_text(member.shape, value, what, lenient_bool=True)
    for prefix, member in route.prefix_headers:
        found = {h[len(prefix) :]: v for h, v in headers.items() if h.startswith(prefix)}
        if found:
            params[member.name] = found
    if service == "s3" and isinstance(params.get("CopySource"), str):
        params["CopySource"] = parse_copy_source(params["CopySource"])
    return params


def _rest_body(
    idx: _ServiceIndex, name: str, body: bytes, headers: Mapping[str, str]
) -> dict[str, Any]:
    service = idx.service
    if not needs_body(service, name):
        return {}
    shape = idx.model.operation_model(name).input_shape
    assert shape is not None
    _check_identity_encoding(headers, service)
    payload = shape.serialization.get("payload")
    if idx.protocol == "rest-xml":
        if payload is None or body.strip() == b"":
            return {}
        member = shape.members[payload]
        assert isinstance(member, StructureShape)
        root = member.serialization.get("name", payload)
        return {payload: _xml_payload(body, member, root, f"{service}: {name}")}
    if payload is not None:
        member = shape.members[payload]
        assert isinstance(member, StructureShape)
        if body.strip() == b"":
            return {}
        document = _loads(body, service)
        try:
            return {
                payload: _json_structure(member, document, f"{service}: {name}", body_only=False)
            }
        except RecursionError:
            raise _refuse(f"{service}: {name} body is nested too deeply") from None
    return _json_body(body, shape, service, name)


# --------------------------------------------------------------------------------------------
# XML payloads (S3 DeleteObjects, CreateBucket)


@dataclass
class _Element:
    name: str
    children: list[_Element] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def _parse_xml(body: bytes, where: str) -> _Element:
    """A minimal element tree. DOCTYPEs (and with them entity declarations) are refused."""
    parser = expat.ParserCreate(namespace_separator=" ")
    stack: list[_Element] = []
    roots: list[_Element] = []

    def start(tag: str, _attrs: dict[str, str]) -> None:
        element = _Element(tag.rsplit(" ", 1)[-1])
        (stack[-1].children if stack else roots).append(element)
        stack.append(element)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    def doctype(*_args: object) -> None:
        raise _refuse(f"{where}: XML document type declarations are not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.ExternalEntityRefHandler = doctype
    try:
        parser.Parse(body, True)
    except expat.ExpatError:
        raise _refuse(f"{where}: request body is not valid XML") from None
    if len(roots) != 1:
        raise _refuse(f"{where}: request body is not valid XML")
    return roots[0]


def _xml_payload(body: bytes, shape: StructureShape, root: str, where: str) -> dict[str, Any]:
    element = _parse_xml(body, where)
    if element.name != root:
        raise _refuse(f"{where}: expected a <{root}> document")
    return _xml_structure(shape, element, where)


def _xml_structure(shape: StructureShape, element: _Element, where: str) -> dict[str, Any]:
    by_name: dict[str, tuple[str, Shape, bool]] = {}  # element name -> member, flattened list
    for name, member in shape.members.items():
        if member.type_name == "list" and member.serialization.get("flattened"):
            item: Shape = member.member  # type: ignore[attr-defined]
            wire = member.serialization.get("name") or item.serialization.get("name", name)
            by_name[wire] = (name, member, True)
        else:
            by_name[member.serialization.get("name", name)] = (name, member, False)
    out: dict[str, Any] = {}
    for child in element.children:
        entry = by_name.get(child.name)
        if entry is None:
            raise _refuse(f"{where}: unexpected element {_shown(child.name)}")
        name, member, flattened = entry
        if flattened:
            item_shape: Shape = member.member  # type: ignore[attr-defined]
            out.setdefault(name, []).append(_xml_value(item_shape, child, f"{where}.{name}"))
            continue
        if name in out:
            raise _refuse(f"{where}: element <{child.name}> is repeated")
        out[name] = _xml_value(member, child, f"{where}.{name}")
    return out


def _xml_value(shape: Shape, element: _Element, where: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        return _xml_structure(shape, element, where)
    if kind == "list":
        item: Shape = shape.member  # type: ignore[attr-defined]
        item_name = item.serialization.get("name", "member")
        values = []
        for child in element.children:
            if child.name != item_name:
                raise _refuse(f"{where}: unexpected element {_shown(child.name)}")
            values.append(_xml_value(item, child, where))
        return values
    if kind == "map":
        raise _refuse(f"{where}: XML maps are not supported")
    if element.children:
        raise _refuse(f"{where}: unexpected nested element")
    text = "".join(element.text)
    if kind == "string":
        return text
    return _scalar_from_text(shape, text.strip(), where)
