"""Operation identification against requests serialized by botocore itself.

For every operation of the ten supported services, botocore builds the real request (nothing
is sent: a ``before-send`` handler captures it); identify() must name the same operation and
decode the parameters that were sent. Then the fail-closed cases: anything an agent could vary
to make the gateway and the upstream disagree is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore import xform_name
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from botocore.model import OperationModel, Shape

from jitgate.awsapi.operations import (
    BodyRequired,
    identify,
    identify_without_body,
    needs_body,
    parse_copy_source,
)
from jitgate.awsapi.types import AwsRequest, Operation, UnsupportedOperation

SERVICES = ["s3", "dynamodb", "sqs", "sns", "secretsmanager", "ssm", "kms", "lambda", "logs", "sts"]
REGION = "us-east-1"
BUCKET = "jitgate-test-bucket"
VHOST_SUFFIX = ".s3.jitgate.test"

# S3 operations that share their wire form with a newer one; identify() names the newer one.
S3_WIRE_ALIASES = {
    "GetBucketLifecycle": "GetBucketLifecycleConfiguration",
    "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
    "GetBucketNotification": "GetBucketNotificationConfiguration",
    "PutBucketNotification": "PutBucketNotificationConfiguration",
    "ListDirectoryBuckets": "ListBuckets",
}


# --------------------------------------------------------------------------------------------
# Capturing real botocore requests


class Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: AWSPreparedRequest, **_: Any) -> None:
    raise Captured(request)


@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.Session()


@functools.cache
def client(service: str, style: str = "path") -> Any:
    endpoint = "http://s3.jitgate.test:9" if style == "virtual" else "http://127.0.0.1:9"
    config = Config(
        retries={"max_attempts": 0},
        s3={"addressing_style": style},
        parameter_validation=True,
    )
    c = _session().create_client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=config,
    )
    c.meta.events.register("before-send", _capture)
    return c


def wire(
    service: str, operation: str, params: Mapping[str, Any], style: str = "path"
) -> AwsRequest:
    """The request botocore would send for ``operation(**params)``, as the gateway sees it."""
    c = client(service, style)
    with pytest.raises(Captured) as info:
        getattr(c, xform_name(operation))(**params)
    prepared = info.value.request
    url = urlsplit(prepared.url)
    headers: dict[str, str] = {}
    for name, value in prepared.headers.items():
        text = value.decode() if isinstance(value, bytes) else str(value)
        key = name.lower()
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    body = prepared.body
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body.read()
    bucket = None
    host = url.hostname or ""
    if style == "virtual" and host.endswith(VHOST_SUFFIX):
        bucket = host[: -len(VHOST_SUFFIX)]
    return AwsRequest(
        method=prepared.method,
        raw_path=url.path or "/",
        query=url.query,
        headers=headers,
        body=data,
        service=c.meta.service_model.signing_name,
        region=REGION,
        bucket_from_host=bucket,
    )


# --------------------------------------------------------------------------------------------
# Minimal valid parameters from an input shape

_STRING_HINTS = {
    "Bucket": BUCKET,
    "Key": "reports/2026/q3 report+final.csv",
    "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
    "FunctionName": "my-function",
    "TableName": "orders",
    "TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts",
    "RoleArn": "arn:aws:iam::123456789012:role/demo",
    "SecretId": "prod/db/password",
    "KeyId": "alias/app",
    "CopySource": "source-bucket/path/to/source object.txt",
    "RequestRoute": "route",
    "logGroupName": "/aws/lambda/my-function",
}


def minimal(shape: Shape, name: str = "", depth: int = 0) -> Any:
    kind = shape.type_name
    if kind == "structure":
        members = shape.members  # type: ignore[attr-defined]
        if shape.is_tagged_union:  # type: ignore[attr-defined]
            first = next(iter(members))
            return {first: minimal(members[first], first, depth + 1)}
        return {
            member: minimal(members[member], member, depth + 1)
            for member in shape.required_members  # type: ignore[attr-defined]
        }
    if kind == "list":
        count = max(int(shape.metadata.get("min", 1)), 1)
        return [minimal(shape.member, name, depth + 1) for _ in range(count)]  # type: ignore[attr-defined]
    if kind == "map":
        return {"k": minimal(shape.value, name, depth + 1)}  # type: ignore[attr-defined]
    if kind == "string":
        if shape.enum:
            return shape.enum[0]
        if name in _STRING_HINTS and depth == 1:
            return _STRING_HINTS[name]
        low = int(shape.metadata.get("min", 1))
        return (
            ("v" + name.lower() + "x" * low)[: max(low, len(name) + 1)]
            if name
            else "v" * max(1, low)
        )
    if kind in ("integer", "long"):
        return max(int(shape.metadata.get("min", 1)), 1)
    if kind in ("float", "double"):
        return 1.5
    if kind == "boolean":
        return True
    if kind == "blob":
        return b"data" * max(1, int(shape.metadata.get("min", 1)))
    if kind == "timestamp":
        return datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    if kind == "document":
        return {"a": 1}
    raise AssertionError(f"unexpected shape type {kind}")


def operation_cases() -> list[tuple[str, str]]:
    cases = []
    for service in SERVICES:
        model = _session().get_service_model(service)
        cases += [(service, name) for name in model.operation_names]
    return cases


def model_of(service: str, operation: str) -> OperationModel:
    return _session().get_service_model(service).operation_model(operation)


def scalar_params_sent(op_model: OperationModel, params: Mapping[str, Any]) -> dict[str, str]:
    """Top-level string parameters identify() decodes (rest bodies only when it reads them)."""
    shape = op_model.input_shape
    if shape is None:
        return {}
    rest = op_model.metadata["protocol"].startswith("rest")
    reads_body = needs_body(op_model.service_model.service_name, op_model.name)
    out = {}
    for name, value in params.items():
        member = shape.members[name]
        if member.type_name != "string" or member.serialization.get("jsonvalue"):
            continue
        if name == "CopySource":
            continue
        if rest and member.serialization.get("location") is None and not reads_body:
            continue
        out[name] = value
    return out


def identify_like_gateway(req: AwsRequest) -> Operation:
    """First pass without the body; second pass with it when the mapping needs it."""
    try:
        first = identify_without_body(req)
    except BodyRequired:
        return identify(req)
    if needs_body(first.service, first.name):
        second = identify(req)
        assert second.name == first.name
        return second
    return first


# --------------------------------------------------------------------------------------------
# Round trip: every operation of every supported service


@pytest.mark.parametrize(("service", "operation"), operation_cases())
def test_round_trip_every_operation(service: str, operation: str) -> None:
    op_model = model_of(service, operation)
    params = minimal(op_model.input_shape) if op_model.input_shape is not None else {}
    req = wire(service, operation, params)
    op = identify_like_gateway(req)
    assert op.service == service
    assert op.name == S3_WIRE_ALIASES.get(operation, operation) if service == "s3" else operation
    for name, value in scalar_params_sent(op_model, params).items():
        assert op.params.get(name) == value, name
    if op_model.metadata["protocol"] in ("json", "query"):
        # Whole-body protocols decode everything botocore sent (plus idempotency tokens that
        # botocore fills in; an empty structure is not sent at all).
        sent = {name for name, value in params.items() if value != {}}
        assert sent <= set(op.params)


@pytest.mark.parametrize(
    "operation", [name for service, name in operation_cases() if service == "s3"]
)
def test_round_trip_s3_virtual_hosted(operation: str) -> None:
    op_model = model_of("s3", operation)
    params = minimal(op_model.input_shape) if op_model.input_shape is not None else {}
    req = wire("s3", operation, params, style="virtual")
    if "Bucket" not in params:
        req = dataclasses.replace(req, bucket_from_host=None)
    elif operation != "GetBucketLocation":  # botocore always sends that one path-style
        assert req.bucket_from_host == BUCKET
    op = identify_like_gateway(req)
    assert op.name == S3_WIRE_ALIASES.get(operation, operation)
    for name, value in scalar_params_sent(op_model, params).items():
        assert op.params.get(name) == value, name


TRICKY_KEYS = [
    "plain.txt",
    "with space.txt",
    "a+b=c&d.txt",
    "literal%2Fpercent",
    "../escape/../../etc/passwd",
    "./dot/./segments/.",
    "trailing/slash/",
    "/leading-slash",
    "double//slash",
    "unicode/ü/日本語/🙂.csv",
    "question?mark#hash",
    "semi;colon,comma",
    "tilde~star*brackets[]",
    "percent%20already",
    "..",
]


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_s3_keys_round_trip_exactly(key: str, style: str) -> None:
    for operation, extra in [
        ("GetObject", {}),
        ("HeadObject", {"VersionId": "v1"}),
        ("PutObject", {"Body": b"x"}),
        ("DeleteObject", {}),
        ("GetObjectTagging", {"VersionId": "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"}),
        ("CreateMultipartUpload", {}),
        ("UploadPart", {"UploadId": "up+load/id", "PartNumber": 3, "Body": b"x"}),
        ("ListParts", {"UploadId": "u1"}),
        ("AbortMultipartUpload", {"UploadId": "u1"}),
    ]:
        req = wire("s3", operation, {"Bucket": BUCKET, "Key": key, **extra}, style=style)
        op = identify_without_body(req)
        assert op.name == operation
        assert op.params["Bucket"] == BUCKET
        assert op.params["Key"] == key
        for name, value in extra.items():
            if name != "Body":
                assert op.params[name] == value


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_s3_copy_source_round_trip(key: str) -> None:
    for operation, extra in [
        ("CopyObject", {}),
        ("UploadPartCopy", {"UploadId": "u1", "PartNumber": 2}),
    ]:
        for version in (None, "v1.2_3"):
            source: dict[str, str] = {"Bucket": "source-bucket", "Key": key}
            if version:
                source["VersionId"] = version
            params = {"Bucket": BUCKET, "Key": "dest/" + key, "CopySource": source, **extra}
            op = identify_without_body(wire("s3", operation, params))
            assert op.name == operation
            assert op.params["CopySource"] == source
            assert op.params["Key"] == "dest/" + key


def test_s3_delete_objects_body_round_trip() -> None:
    objects = [{"Key": k} for k in TRICKY_KEYS] + [
        {"Key": "versioned & <xml> \"quoted\" 'apos'", "VersionId": "v9"},
        {"Key": "line\nbreak\r\nand\ttab"},
    ]
    req = wire("s3", "DeleteObjects", {"Bucket": BUCKET, "Delete": {"Objects": objects}})
    first = identify_without_body(req)
    assert first.name == "DeleteObjects"
    assert "Delete" not in first.params
    assert needs_body("s3", "DeleteObjects")
    op = identify(req)
    assert op.params["Delete"]["Objects"] == objects


def test_s3_put_bucket_encryption_body_is_read_for_its_default_key() -> None:
    """The default KMS key a bucket is given is in the body (found in review: it was not read,
    so the key was never checked against the grant)."""
    key = "1234abcd-12ab-34cd-56ef-1234567890ab"
    config = {
        "Rules": [
            {
                "ApplyServerSideEncryptionByDefault": {
                    "SSEAlgorithm": "aws:kms",
                    "KMSMasterKeyID": key,
                },
                "BucketKeyEnabled": True,
            }
        ]
    }
    req = wire(
        "s3",
        "PutBucketEncryption",
        {"Bucket": BUCKET, "ServerSideEncryptionConfiguration": config},
    )
    assert "ServerSideEncryptionConfiguration" not in identify_without_body(req).params
    op = identify(req)
    assert op.params["ServerSideEncryptionConfiguration"] == config


def test_s3_path_decoding_rules() -> None:
    def get(path: str, bucket: str | None = None) -> Operation:
        return identify(AwsRequest("GET", path, "", {}, None, "s3", REGION, bucket))

    assert get("/bkt/a%2Fb").params == {"Bucket": "bkt", "Key": "a/b"}
    assert get("/bkt/a+b").params["Key"] == "a+b"
    assert get("/bkt/a%2Bb").params["Key"] == "a+b"
    assert get("/bkt/a%252Fb").params["Key"] == "a%2Fb"  # decoded once only
    assert get("/bkt/x/../y").params["Key"] == "x/../y"
    assert get("/bkt/%2E%2E/y").params["Key"] == "../y"
    assert get("/bkt//k").params["Key"] == "/k"
    assert get("/bkt/").name == "ListObjects"
    assert get("/bkt").name == "ListObjects"
    assert get("/").name == "ListBuckets"
    assert get("/", bucket="bkt").params == {"Bucket": "bkt"}
    assert get("/bkt/k", bucket="vhost").params == {"Bucket": "vhost", "Key": "bkt/k"}
    assert get("//k", bucket="vhost").params == {"Bucket": "vhost", "Key": "/k"}


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "expected"),
    [
        ("GET", "/bkt", "list-type=2", {}, "ListObjectsV2"),
        ("GET", "/bkt", "", {}, "ListObjects"),
        ("GET", "/bkt", "versions", {}, "ListObjectVersions"),
        ("GET", "/bkt", "versioning", {}, "GetBucketVersioning"),
        ("GET", "/bkt", "uploads", {}, "ListMultipartUploads"),
        ("GET", "/bkt", "acl", {}, "GetBucketAcl"),
        ("GET", "/bkt", "location", {}, "GetBucketLocation"),
        ("GET", "/bkt", "analytics", {}, "ListBucketAnalyticsConfigurations"),
        ("GET", "/bkt", "analytics&id=a1", {}, "GetBucketAnalyticsConfiguration"),
        ("HEAD", "/bkt", "", {}, "HeadBucket"),
        ("HEAD", "/bkt/k", "versionId=v1", {}, "HeadObject"),
        ("GET", "/bkt/k", "versionId=v1", {}, "GetObject"),
        ("GET", "/bkt/k", "uploadId=u1", {}, "ListParts"),
        ("GET", "/bkt/k", "tagging&versionId=v1", {}, "GetObjectTagging"),
        ("GET", "/bkt/k", "acl", {}, "GetObjectAcl"),
        ("PUT", "/bkt/k", "", {}, "PutObject"),
        ("PUT", "/bkt/k", "", {"x-amz-copy-source": "src/k"}, "CopyObject"),
        ("PUT", "/bkt/k", "partNumber=1&uploadId=u", {}, "UploadPart"),
        (
            "PUT",
            "/bkt/k",
            "partNumber=1&uploadId=u",
            {"x-amz-copy-source": "src/k"},
            "UploadPartCopy",
        ),
        ("PUT", "/bkt/k", "tagging", {}, "PutObjectTagging"),
        ("POST", "/bkt/k", "uploads", {}, "CreateMultipartUpload"),
        ("POST", "/bkt/k", "uploadId=u", {}, "CompleteMultipartUpload"),
        ("POST", "/bkt", "delete", {}, "DeleteObjects"),
        ("DELETE", "/bkt/k", "", {}, "DeleteObject"),
        ("DELETE", "/bkt/k", "versionId=v", {}, "DeleteObject"),
        ("DELETE", "/bkt/k", "uploadId=u", {}, "AbortMultipartUpload"),
        ("DELETE", "/bkt", "", {}, "DeleteBucket"),
        ("PUT", "/bkt", "", {}, "CreateBucket"),
        ("PUT", "/bkt", "lifecycle", {}, "PutBucketLifecycleConfiguration"),
        ("GET", "/bkt", "x-id=ListObjects", {}, "ListObjects"),
        ("GET", "/bkt/k", "x-id=GetObject", {}, "GetObject"),
        ("GET", "/bkt/k", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=60", {}, "GetObject"),
    ],
)
def test_s3_routing(method: str, path: str, query: str, headers: dict, expected: str) -> None:
    op = identify(AwsRequest(method, path, query, headers, None, "s3", REGION))
    assert op.name == expected


# --------------------------------------------------------------------------------------------
# SQS: json and the older query protocol


def _form(method: str, query: str, body: bytes | None, service: str = "sqs") -> AwsRequest:
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    return AwsRequest(method, "/", query, headers if body else {}, body, service, REGION)


QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/jobs"


def test_sqs_json_and_query_forms_agree() -> None:
    via_json = identify(
        wire("sqs", "SendMessage", {"QueueUrl": QUEUE, "MessageBody": "hello world"})
    )
    body = (
        b"Action=SendMessage&Version=2012-11-05"
        b"&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Fjobs"
        b"&MessageBody=hello+world"
    )
    via_query = identify(_form("POST", "", body))
    assert (
        via_json
        == via_query
        == Operation("sqs", "SendMessage", {"QueueUrl": QUEUE, "MessageBody": "hello world"})
    )


def test_sqs_query_nested_parameters() -> None:
    body = (
        b"Action=SendMessageBatch&QueueUrl=q"
        b"&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=one"
        b"&SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=two"
        b"&SendMessageBatchRequestEntry.2.DelaySeconds=5"
        b"&SendMessageBatchRequestEntry.2.MessageAttribute.1.Name=color"
        b"&SendMessageBatchRequestEntry.2.MessageAttribute.1.Value.DataType=String"
        b"&SendMessageBatchRequestEntry.2.MessageAttribute.1.Value.StringValue=blue"
    )
    op = identify(_form("POST", "", body))
    assert op.params == {
        "QueueUrl": "q",
        "Entries": [
            {"Id": "a", "MessageBody": "one"},
            {
                "Id": "b",
                "MessageBody": "two",
                "DelaySeconds": 5,
                "MessageAttributes": {"color": {"DataType": "String", "StringValue": "blue"}},
            },
        ],
    }
    body = (
        b"Action=SetQueueAttributes&QueueUrl=q&Attribute.1.Name=VisibilityTimeout"
        b"&Attribute.1.Value=40&Attribute.2.Name=Policy&Attribute.2.Value=%7B%7D"
    )
    assert identify(_form("POST", "", body)).params == {
        "QueueUrl": "q",
        "Attributes": {"VisibilityTimeout": "40", "Policy": "{}"},
    }
    body = b"Action=ReceiveMessage&QueueUrl=q&AttributeName.1=All&MaxNumberOfMessages=10"
    assert identify(_form("POST", "", body)).params == {
        "QueueUrl": "q",
        "AttributeNames": ["All"],
        "MaxNumberOfMessages": 10,
    }


# Bodies serialized by botocore 1.31.0 from SQS's last query-protocol model (2012-11-05), which
# the AWS CLI v1 and older SDKs still send.
LEGACY_SQS_BODIES = [
    (
        b"Action=CreateQueue&Version=2012-11-05&QueueName=jobs&Attribute.1.Name=DelaySeconds"
        b"&Attribute.1.Value=5&Attribute.2.Name=Policy&Attribute.2.Value=%7B%22a%22%3A+1%7D"
        b"&Tag.1.Key=team&Tag.1.Value=data",
        "CreateQueue",
        {
            "QueueName": "jobs",
            "Attributes": {"DelaySeconds": "5", "Policy": '{"a": 1}'},
            "tags": {"team": "data"},
        },
    ),
    (
        b"Action=AddPermission&Version=2012-11-05&QueueUrl=q&Label=l&AWSAccountId.1=111122223333"
        b"&AWSAccountId.2=444455556666&ActionName.1=SendMessage",
        "AddPermission",
        {
            "QueueUrl": "q",
            "Label": "l",
            "AWSAccountIds": ["111122223333", "444455556666"],
            "Actions": ["SendMessage"],
        },
    ),
    (
        b"Action=ChangeMessageVisibilityBatch&Version=2012-11-05&QueueUrl=q"
        b"&ChangeMessageVisibilityBatchRequestEntry.1.Id=1"
        b"&ChangeMessageVisibilityBatchRequestEntry.1.ReceiptHandle=r+1"
        b"&ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout=3",
        "ChangeMessageVisibilityBatch",
        {"QueueUrl": "q", "Entries": [{"Id": "1", "ReceiptHandle": "r 1", "VisibilityTimeout": 3}]},
    ),
    (
        b"Action=UntagQueue&Version=2012-11-05&QueueUrl=q&TagKey.1=a&TagKey.2=b",
        "UntagQueue",
        {"QueueUrl": "q", "TagKeys": ["a", "b"]},
    ),
    (
        b"Action=SendMessage&Version=2012-11-05&QueueUrl=q&MessageBody=b"
        b"&MessageAttribute.1.Name=n&MessageAttribute.1.Value.DataType=String.List"
        b"&MessageAttribute.1.Value.StringListValue.1=x"
        b"&MessageAttribute.1.Value.StringListValue.2=y",
        "SendMessage",
        {
            "QueueUrl": "q",
            "MessageBody": "b",
            "MessageAttributes": {"n": {"DataType": "String.List", "StringListValues": ["x", "y"]}},
        },
    ),
]


@pytest.mark.parametrize(("body", "name", "params"), LEGACY_SQS_BODIES)
def test_sqs_legacy_query_bodies(body: bytes, name: str, params: dict) -> None:
    assert identify(_form("POST", "", body)) == Operation("sqs", name, params)


def test_query_protocol_in_query_string() -> None:
    req = AwsRequest(
        "GET", "/", "Action=GetCallerIdentity&Version=2011-06-15", {}, None, "sts", REGION
    )
    assert identify(req) == Operation("sts", "GetCallerIdentity", {})


def test_sqs_query_in_query_string_and_body_pending() -> None:
    op = identify(_form("GET", "Action=DeleteQueue&QueueUrl=q&Version=2012-11-05", None))
    assert op == Operation("sqs", "DeleteQueue", {"QueueUrl": "q"})
    req = _form("POST", "", b"Action=DeleteQueue&QueueUrl=q")
    with pytest.raises(BodyRequired):
        identify_without_body(req)
    assert identify(req).params == {"QueueUrl": "q"}


def test_query_protocol_round_trip_values() -> None:
    attrs = {"color": {"DataType": "String", "StringValue": "blue green"}}
    params = {
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": "m&=+",
        "MessageAttributes": attrs,
    }
    op = identify(wire("sns", "Publish", params))
    assert op.params == params
    entries = [{"Id": "1", "Message": "a"}, {"Id": "2", "Message": "b", "Subject": "s"}]
    params2 = {"TopicArn": "arn:aws:sns:us-east-1:1:t", "PublishBatchRequestEntries": entries}
    assert identify(wire("sns", "PublishBatch", params2)).params == params2
    params3 = {"Name": "t", "Attributes": {"DisplayName": "x", "Policy": "{}"}}
    assert identify(wire("sns", "CreateTopic", params3)).params == params3
    params4 = {
        "RoleArn": "arn:aws:iam::123456789012:role/r",
        "RoleSessionName": "session",
        "PolicyArns": [{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
        "DurationSeconds": 900,
    }
    assert identify(wire("sts", "AssumeRole", params4)).params == params4


def test_ec2_is_named_but_only_named() -> None:
    c = _session().create_client(
        "ec2",
        region_name=REGION,
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKID",
        aws_secret_access_key="secret",
    )
    c.meta.events.register("before-send", _capture)
    with pytest.raises(Captured) as info:
        c.describe_instances(InstanceIds=["i-0123456789abcdef0"])
    prepared = info.value.request
    headers = {
        k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in prepared.headers.items()
    }
    req = AwsRequest(
        "POST",
        "/",
        "",
        headers,
        prepared.body.encode() if isinstance(prepared.body, str) else prepared.body,
        "ec2",
        REGION,
    )
    assert identify(req) == Operation("ec2", "DescribeInstances", {})
    assert needs_body("ec2", "DescribeInstances")


# --------------------------------------------------------------------------------------------
# needs_body


@pytest.mark.parametrize(
    ("service", "operation", "expected"),
    [
        ("s3", "PutObject", False),
        ("s3", "UploadPart", False),
        ("s3", "GetObject", False),
        ("s3", "PutBucketPolicy", False),
        ("s3", "DeleteObjects", True),
        ("s3", "CreateBucket", True),
        ("s3", "RestoreObject", True),
        ("s3", "PutBucketEncryption", True),
        ("lambda", "Invoke", False),
        ("lambda", "InvokeAsync", False),
        ("lambda", "GetFunction", False),
        ("lambda", "CreateFunction", True),
        ("lambda", "CreateEventSourceMapping", True),
        ("dynamodb", "GetItem", True),
        ("sqs", "SendMessage", True),
        ("sns", "Publish", True),
        ("sts", "GetCallerIdentity", True),
    ],
)
def test_needs_body(service: str, operation: str, expected: bool) -> None:
    assert needs_body(service, operation) is expected


def test_needs_body_unknown() -> None:
    with pytest.raises(UnsupportedOperation):
        needs_body("ec3", "RunInstances")
    with pytest.raises(UnsupportedOperation):
        needs_body("s3", "GetObjects")


def test_json_first_pass_names_operation_without_params() -> None:
    req = wire("dynamodb", "GetItem", {"TableName": "orders", "Key": {"id": {"S": "1"}}})
    assert identify_without_body(req) == Operation("dynamodb", "GetItem", {})
    assert identify(req).params == {"TableName": "orders", "Key": {"id": {"S": "1"}}}


def test_parse_copy_source() -> None:
    assert parse_copy_source("/bkt/a%2Fb%2Bc%20d?versionId=x") == {
        "Bucket": "bkt",
        "Key": "a/b+c d",
        "VersionId": "x",
    }
    for bad in [
        # S3 may read a raw '+' as a space (SDKs always send %2B), and ';' or '#' as the end
        # of the path: each would name another key than the one checked.
        "/bkt/a+b",
        "/bkt/a;b",
        "/bkt/a#b",
        "b",
        "b/",
        "%62/k",
        "b/k?versionId=",
        "b/k?other=1",
        "b/k?versionId=1&x=2",
        "arn:aws:s3:us-east-1:1:accesspoint/ap/object/k",
        "b/k,c/d",
        "b/%zz",
    ]:
        with pytest.raises(UnsupportedOperation):
            parse_copy_source(bad)


# --------------------------------------------------------------------------------------------
# Fail closed


def _json(target: str, body: bytes = b"{}", service: str = "dynamodb", **kw: Any) -> AwsRequest:
    headers = {"x-amz-target": target, "content-type": "application/x-amz-json-1.0"}
    headers.update(kw.pop("headers", {}))
    return AwsRequest(
        kw.pop("method", "POST"),
        kw.pop("path", "/"),
        kw.pop("query", ""),
        headers,
        body,
        service,
        REGION,
    )


def _s3(
    method: str, path: str, query: str = "", headers: dict | None = None, **kw: Any
) -> AwsRequest:
    return AwsRequest(
        method, path, query, headers or {}, kw.get("body"), "s3", REGION, kw.get("bucket")
    )


REFUSED = {
    "unknown service": AwsRequest("GET", "/", "", {}, None, "iam", REGION),
    "unknown s3 subresource": _s3("GET", "/bkt/k", "foo"),
    "two subresources": _s3("GET", "/bkt/k", "acl&tagging"),
    "subresource plus uploadId": _s3("GET", "/bkt/k", "tagging&uploadId=u"),
    "case-changed subresource": _s3("GET", "/bkt", "ACL"),
    "percent-encoded query key": _s3("GET", "/bkt", "%61cl"),
    "duplicate versionId": _s3("GET", "/bkt/k", "versionId=a&versionId=b"),
    "duplicate subresource": _s3("GET", "/bkt", "acl&acl"),
    "ambiguous plus in query": _s3("GET", "/bkt/k", "versionId=a+b"),
    "semicolon in query": _s3("GET", "/bkt/k", "versionId=a;acl"),
    "subresource with value": _s3("GET", "/bkt", "acl=1"),
    "wrong list-type": _s3("GET", "/bkt", "list-type=1"),
    "x-id mismatch": _s3("GET", "/bkt/k", "x-id=DeleteObject"),
    "partNumber without uploadId": _s3("PUT", "/bkt/k", "partNumber=1"),
    # An empty discriminator could be read upstream as "none": DeleteObject, not an abort.
    "empty uploadId": _s3("DELETE", "/bkt/k", "uploadId="),
    "empty versionId": _s3("GET", "/bkt/k", "versionId="),
    "empty versionId on delete": _s3("DELETE", "/bkt/k", "versionId"),
    "head with subresource": _s3("HEAD", "/bkt", "acl"),
    "lower-case method": _s3("get", "/bkt/k"),
    "options": _s3("OPTIONS", "/bkt/k"),
    "post object form": _s3("POST", "/bkt"),
    "post to object": _s3("POST", "/bkt/k"),
    "percent-encoded bucket": _s3("GET", "/%62kt/k"),
    "bucket with slash via vhost": _s3("GET", "/k", bucket="a/b"),
    "invalid bucket": _s3("GET", "/-bad-/k"),
    "malformed percent": _s3("GET", "/bkt/a%zz"),
    "invalid utf-8": _s3("GET", "/bkt/%ff"),
    "raw space": _s3("GET", "/bkt/a b"),
    "raw non-ascii": _s3("GET", "/bkt/ü"),
    "x-amz-target on s3": _s3(
        "GET", "/bkt/k", headers={"x-amz-target": "DynamoDB_20120810.GetItem"}
    ),
    "copy source with comma": _s3("PUT", "/bkt/k", headers={"x-amz-copy-source": "s/a,s/b"}),
    "copy source arn": _s3(
        "PUT",
        "/bkt/k",
        headers={"x-amz-copy-source": "arn:aws:s3:us-east-1:1:accesspoint/a/object/k"},
    ),
    "bad bool header": _s3(
        "DELETE", "/bkt/k", headers={"x-amz-bypass-governance-retention": "yes"}
    ),
    "json target case": _json("dynamodb_20120810.GetItem"),
    "json target op case": _json("DynamoDB_20120810.getitem"),
    "json two targets": _json("DynamoDB_20120810.GetItem,DynamoDB_20120810.DeleteItem"),
    "json other prefix": _json("DynamoDBStreams_20120810.GetRecords"),
    "json query string": _json("DynamoDB_20120810.GetItem", query="Action=DeleteTable"),
    "json path": _json("DynamoDB_20120810.GetItem", path="/x"),
    "json GET": _json("DynamoDB_20120810.GetItem", method="GET"),
    "json cbor": _json(
        "DynamoDB_20120810.GetItem", headers={"content-type": "application/x-amz-cbor-1.1"}
    ),
    "json gzip": _json("DynamoDB_20120810.GetItem", headers={"content-encoding": "gzip"}),
    "json duplicate key": _json("DynamoDB_20120810.GetItem", b'{"TableName":"a","TableName":"b"}'),
    "json case-variant member": _json(
        "DynamoDB_20120810.GetItem", b'{"TableName":"a","tablename":"b","Key":{}}'
    ),
    "json unknown member": _json("DynamoDB_20120810.GetItem", b'{"TableName":"a","Key":{},"X":1}'),
    "json wrong type": _json("DynamoDB_20120810.GetItem", b'{"TableName":["a"],"Key":{}}'),
    "json null": _json("DynamoDB_20120810.GetItem", b'{"TableName":null,"Key":{}}'),
    "json NaN": _json("DynamoDB_20120810.GetItem", b'{"TableName":"a","Limit":NaN}'),
    "json array body": _json("DynamoDB_20120810.GetItem", b"[]"),
    "json not utf-8": _json("DynamoDB_20120810.GetItem", b'{"TableName":"\xff"}'),
    "json bom": _json("DynamoDB_20120810.GetItem", b'\xef\xbb\xbf{"TableName":"a"}'),
    "sqs json with form body": _json(
        "AmazonSQS.DeleteQueue",
        b"Action=SendMessage&QueueUrl=q",
        service="sqs",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    "sqs target plus action": _json(
        "AmazonSQS.ListQueues", b"{}", service="sqs", query="Action=DeleteQueue&QueueUrl=q"
    ),
    "query duplicate action": _form("POST", "Action=ListQueues", b"Action=DeleteQueue&QueueUrl=q"),
    "query duplicate param": _form("POST", "", b"Action=DeleteQueue&QueueUrl=a&QueueUrl=b"),
    "query lower-case action": _form("POST", "", b"action=DeleteQueue&QueueUrl=q"),
    "query extra action case": _form("POST", "", b"Action=ListQueues&ACTION=DeleteQueue"),
    "query unknown param": _form("POST", "", b"Action=DeleteQueue&QueueUrl=q&Bogus=1"),
    "query case-variant param": _form("POST", "", b"Action=DeleteQueue&queueurl=q"),
    "query unknown action": _form("POST", "", b"Action=DeleteEverything"),
    "query old version": _form("POST", "", b"Action=DeleteQueue&QueueUrl=q&Version=2009-02-01"),
    "query path": AwsRequest(
        "POST",
        "/123456789012/jobs",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        b"Action=DeleteQueue",
        "sqs",
        REGION,
    ),
    "query with target": AwsRequest(
        "POST",
        "/",
        "",
        {"content-type": "application/x-www-form-urlencoded", "x-amz-target": "x.Publish"},
        b"Action=Publish&TopicArn=t&Message=m",
        "sns",
        REGION,
    ),
    "query json body": AwsRequest(
        "POST",
        "/",
        "",
        {"content-type": "application/x-amz-json-1.0"},
        b'{"Action":"DeleteQueue"}',
        "sqs",
        REGION,
    ),
    "query no action": _form("POST", "", b"QueueUrl=q"),
    "query gap in list": _form(
        "POST", "", b"Action=ReceiveMessage&QueueUrl=q&AttributeName.1=All&AttributeName.3=x"
    ),
    "query zero-padded index": _form(
        "POST", "", b"Action=ReceiveMessage&QueueUrl=q&AttributeName.01=All"
    ),
    "query semicolon": _form("POST", "", b"Action=DeleteQueue;QueueUrl=q"),
    "repeated header name": AwsRequest(
        "POST",
        "/",
        "",
        {
            "X-Amz-Target": "DynamoDB_20120810.GetItem",
            "x-amz-target": "DynamoDB_20120810.DeleteItem",
            "content-type": "application/x-amz-json-1.0",
        },
        None,
        "dynamodb",
        REGION,
    ),
    "method override": _s3("POST", "/bkt/k", "uploads", {"x-http-method-override": "DELETE"}),
    "query plus in query string": AwsRequest(
        "GET",
        "/",
        "Action=AssumeRole&RoleArn=arn:aws:iam::1:role/a+b&RoleSessionName=s1",
        {},
        None,
        "sts",
        REGION,
    ),
    "query bad int": _form("POST", "", b"Action=ReceiveMessage&QueueUrl=q&MaxNumberOfMessages=1e3"),
    "query scalar with children": _form("POST", "", b"Action=DeleteQueue&QueueUrl.1=q"),
    "query GET with body": AwsRequest(
        "GET",
        "/",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        b"Action=DeleteQueue&QueueUrl=q",
        "sqs",
        REGION,
    ),
    "lambda dot segment": AwsRequest(
        "GET", "/2015-03-31/functions/..", "", {}, None, "lambda", REGION
    ),
    "lambda encoded slash": AwsRequest(
        "GET", "/2015-03-31/functions/a%2Fpolicy", "", {}, None, "lambda", REGION
    ),
    "lambda trailing slash": AwsRequest(
        "GET", "/2015-03-31/functions/", "", {}, None, "lambda", REGION
    ),
    "lambda encoded literal": AwsRequest(
        "GET", "/2015-03-31/function%73/f", "", {}, None, "lambda", REGION
    ),
    "lambda unknown query": AwsRequest(
        "GET", "/2015-03-31/functions/f", "Qualifier=1&Extra=2", {}, None, "lambda", REGION
    ),
    "lambda list value": AwsRequest(
        "GET",
        "/2019-09-30/functions/f/provisioned-concurrency",
        "List=SOME",
        {},
        None,
        "lambda",
        REGION,
    ),
}


@pytest.mark.parametrize("req", list(REFUSED.values()), ids=list(REFUSED))
def test_refused(req: AwsRequest) -> None:
    with pytest.raises(UnsupportedOperation):
        identify(req)


def test_unknown_service_message() -> None:
    with pytest.raises(UnsupportedOperation, match="service 'iam' is not supported by jitgate"):
        identify(AwsRequest("POST", "/", "", {}, b"Action=ListUsers", "iam", REGION))


def test_unknown_operation_message_names_request() -> None:
    with pytest.raises(UnsupportedOperation, match="GET") as info:
        identify(_s3("GET", "/bkt/k", "foo"))
    assert "/bkt/k" in str(info.value)
    with pytest.raises(UnsupportedOperation, match="X-Amz-Target"):
        identify(_json("DynamoDB_20120810.Nope"))


def test_delete_objects_xml_is_strict() -> None:
    base = _s3("POST", "/bkt", "delete")

    def with_body(body: bytes) -> AwsRequest:
        return AwsRequest(base.method, base.raw_path, base.query, {}, body, "s3", REGION)

    ok = with_body(b"<Delete><Object><Key>a</Key></Object><Quiet>true</Quiet></Delete>")
    assert identify(ok).params["Delete"] == {"Objects": [{"Key": "a"}], "Quiet": True}
    for bad in [
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "y">]><Delete><Object><Key>&x;</Key>'
        b"</Object></Delete>",
        b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
        b"<Delete><Object><key>a</key></Object></Delete>",
        b"<Delete><Objects><Key>a</Key></Objects></Delete>",
        b"<Remove><Object><Key>a</Key></Object></Remove>",
        b"<Delete><Object><Key>a</Key></Object></Delete><Delete/>",
        b"<Delete><Object><Key>a<Key>b</Key></Key></Object></Delete>",
        b"not xml",
    ]:
        with pytest.raises(UnsupportedOperation):
            identify(with_body(bad))


def test_json_rest_body_is_strict() -> None:
    req = wire(
        "lambda", "CreateEventSourceMapping", {"FunctionName": "f", "EventSourceArn": "arn:x"}
    )
    assert identify(req).params == {"FunctionName": "f", "EventSourceArn": "arn:x"}
    body = json.dumps({"FunctionName": "f", "functionName": "g"}).encode()
    with pytest.raises(UnsupportedOperation):
        identify(
            AwsRequest(req.method, req.raw_path, req.query, req.headers, body, "lambda", REGION)
        )


def test_warm_up_loads_every_supported_service() -> None:
    from jitgate.awsapi import operations

    operations._index.cache_clear()
    operations.warm_up()
    assert operations._index.cache_info().currsize == len(operations.SUPPORTED_SERVICES)
