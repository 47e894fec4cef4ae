"""AWS-shaped errors, in the protocol the calling SDK parses for that service."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

REST_XML, REST_JSON, JSON, QUERY = "rest-xml", "rest-json", "json", "query"

_PROTOCOLS = {
    "s3": REST_XML,
    "lambda": REST_JSON,
    "dynamodb": JSON,
    "secretsmanager": JSON,
    "ssm": JSON,
    "kms": JSON,
    "logs": JSON,
    "sns": QUERY,
    "sts": QUERY,
}

# HTTP status for each error code jitgate answers with.
STATUS = {
    "MissingAuthenticationToken": 403,
    "IncompleteSignature": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "InvalidAccessKeyId": 403,
    "InvalidClientTokenId": 403,
    "InvalidToken": 400,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "ExpiredToken": 400,
    "AccessDenied": 403,
    "XAmzContentSHA256Mismatch": 400,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "IncompleteBody": 400,
    "UnsupportedOperation": 400,
    "EntityTooLarge": 400,
    "RequestTimeout": 400,  # S3's answer to a body that stopped arriving
    "ServiceUnavailable": 503,
    "SlowDown": 503,
    "InternalError": 500,
    "BadGateway": 502,  # the upstream's answer could not be passed on
}


@dataclass(frozen=True)
class AwsError(Exception):
    code: str
    message: str

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)


def protocol_for(service: str, headers: Mapping[str, str]) -> str:
    """The wire protocol the client expects errors in."""
    if service == "sqs":
        return JSON if "x-amz-json" in headers.get("content-type", "") else QUERY
    known = _PROTOCOLS.get(service)
    if known is not None:
        return known
    if "x-amz-json" in headers.get("content-type", "") or "x-amz-target" in headers:
        return JSON
    return QUERY


def render(
    error: AwsError, protocol: str, request_id: str, *, service: str = "", head: bool = False
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body for an error, as the service itself would send it."""
    status = error.status
    headers: list[tuple[bytes, bytes]] = [(b"x-amzn-requestid", request_id.encode())]
    if protocol == REST_XML:
        headers.append((b"x-amz-request-id", request_id.encode()))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
            f"<RequestId>{escape(request_id)}</RequestId></Error>"
        ).encode()
        content_type = b"application/xml"
    elif protocol == QUERY:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
            f"</Error><RequestId>{escape(request_id)}</RequestId></ErrorResponse>"
        ).encode()
        content_type = b"text/xml"
    elif protocol == REST_JSON:
        headers.append((b"x-amzn-errortype", error.code.encode()))
        body = json.dumps({"Type": "User", "message": error.message}).encode()
        content_type = b"application/json"
    else:
        body = json.dumps({"__type": error.code, "message": error.message}).encode()
        version = b"1.0" if service in ("dynamodb", "sqs") else b"1.1"
        content_type = b"application/x-amz-json-" + version
        if service == "sqs":  # awsQueryCompatible: botocore reads the query-style code here
            headers.append((b"x-amzn-query-error", f"{error.code};Sender".encode()))
    headers.append((b"content-type", content_type))
    if head:
        body = b""
    headers.append((b"content-length", str(len(body)).encode()))
    return status, headers, body
