"""Shared value types for the AWS wire layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class UnsupportedOperation(Exception):
    """The request cannot be identified or mapped exactly; the gateway refuses it (fail closed).

    The message is shown to the caller, so it names what was not understood and never how to
    get around the refusal.
    """


@dataclass(frozen=True)
class AwsRequest:
    """One incoming AWS API request, as it arrived on the wire."""

    method: str  # "GET", "PUT", ...
    raw_path: str  # exactly as sent, still percent-encoded, without the query string
    query: str  # raw query string without the leading "?" ("" when none)
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ","
    body: bytes | None  # None when the body is streamed and not buffered (e.g. S3 PutObject)
    service: str  # signing name from the SigV4 credential scope: "s3", "dynamodb", ...
    region: str  # region from the SigV4 credential scope
    bucket_from_host: str | None = None  # S3 virtual-hosted style bucket, found by the gateway


@dataclass(frozen=True)
class Operation:
    """An identified API operation and its input parameters.

    ``params`` is keyed by the botocore input shape's member names (e.g. ``Bucket``, ``Key``,
    ``TableName``, ``QueueUrl``), with values as botocore would have been given them.
    """

    service: str  # botocore service name: "s3", "dynamodb", "secretsmanager", "logs", ...
    name: str  # botocore operation name: "GetObject", "BatchGetItem", ...
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Access:
    """One (IAM action, resource ARN) pair that a call needs the grant to cover.

    ``match`` says how the ARN compares with granted ARNs:
    - "exact": the usual case (with prefix grants ending in "*" handled by the matcher);
    - "secret-name": a Secrets Manager secret addressed by name only, so the ARN has no random
      suffix; it is covered by a grant of the same name-only ARN or of "NAME-??????".
    """

    action: str  # "s3:GetObject"
    arn: str  # "arn:aws:s3:::reports/2026/q3.csv", or "*" for actions without resource types
    match: str = "exact"
