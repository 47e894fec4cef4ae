"""Amazon SQS: operation -> (IAM action, resource ARN) pairs.

Resource, per the IAM service authorization reference:
  queue  arn:{p}:sqs:{region}:{account}:{QueueName}

A ``QueueUrl`` names the queue as ``<scheme>://<host>/<account>/<name>``: the account and name
come from the path, the region from the host when it is an AWS SQS host
(``sqs.us-west-2.amazonaws.com``, ``us-west-2.queue.amazonaws.com``, ``queue.amazonaws.com``),
else from the request's region. The batch operations need the non-batch IAM actions.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from jitgate.awsapi.mapping.common import (
    PARTITION,
    REGION,
    Rule,
    access_function,
    encryption_key_accesses,
    param_reader,
    refuser,
    rule_maker,
    star,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.operations import unique_keys
from jitgate.awsapi.types import Access, Operation

_PREFIX = "sqs"

_ACCOUNT_RE = re.compile(r"\d{12}")
_QUEUE_NAME = r"[A-Za-z0-9_\-]{1,80}(?:\.fifo)?"
_QUEUE_NAME_RE = re.compile(_QUEUE_NAME)
_QUEUE_ARN_RE = re.compile(rf"arn:{PARTITION}:sqs:{REGION}:\d{{12}}:{_QUEUE_NAME}")
# AWS SQS endpoints: sqs.<region>.amazonaws.com[.cn], <region>.queue.amazonaws.com[.cn], and the
# legacy queue.amazonaws.com (us-east-1).
_AWS_HOST_RES = (
    re.compile(rf"sqs\.(?P<region>{REGION})\.amazonaws\.com(?:\.cn)?"),
    re.compile(rf"(?P<region>{REGION})\.queue\.amazonaws\.com(?:\.cn)?"),
)
_LEGACY_HOST = "queue.amazonaws.com"


_refuse = refuser("sqs")
_param = param_reader("sqs")
_on = rule_maker(_PREFIX)


def _region_of_host(host: str) -> str | None:
    """The region an AWS SQS host names; None for a host that is not an AWS SQS endpoint."""
    host = host.lower()
    if host == _LEGACY_HOST:
        return "us-east-1"
    for pattern in _AWS_HOST_RES:
        match = pattern.fullmatch(host)
        if match:
            return match.group("region")
    return None


def _queue_arn_from_url(op: Operation, ctx: MappingContext, url: Any) -> str:
    if not isinstance(url, str):
        _refuse(op, f"QueueUrl {url!r} is not a queue URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        _refuse(op, f"QueueUrl {url!r} is not a queue URL")
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        _refuse(op, f"QueueUrl {url!r} is not a queue URL")
    segments = parts.path.split("/")
    if len(segments) != 3 or segments[0] != "":
        _refuse(op, f"QueueUrl {url!r} does not have the form <endpoint>/<account>/<queue>")
    account, name = segments[1], segments[2]
    if not _ACCOUNT_RE.fullmatch(account) or not _QUEUE_NAME_RE.fullmatch(name):
        _refuse(op, f"QueueUrl {url!r} does not name an account and a queue")
    region = _region_of_host(host)
    if region is not None and region != ctx.region:
        _refuse(
            op, f"QueueUrl {url!r} is in region {region}, not in the request's region {ctx.region}"
        )
    return f"arn:{ctx.partition}:sqs:{ctx.region}:{account}:{name}"


def _queue_url(op: Operation, ctx: MappingContext) -> list[str]:
    return [_queue_arn_from_url(op, ctx, _param(op, "QueueUrl"))]


def _queue_name(op: Operation, ctx: MappingContext) -> list[str]:
    name = _param(op, "QueueName")
    if not isinstance(name, str) or not _QUEUE_NAME_RE.fullmatch(name):
        _refuse(op, f"QueueName {name!r} is not a valid queue name")
    owner = op.params.get("QueueOwnerAWSAccountId") or ctx.account
    if not isinstance(owner, str) or not _ACCOUNT_RE.fullmatch(owner):
        _refuse(op, f"QueueOwnerAWSAccountId {owner!r} is not an account id")
    return [f"arn:{ctx.partition}:sqs:{ctx.region}:{owner}:{name}"]


def _queue_arn(op: Operation, key: str, *, required: bool = True) -> str | None:
    value = _param(op, key, required=required)
    if value is None:
        return None
    if not isinstance(value, str) or not _QUEUE_ARN_RE.fullmatch(value):
        _refuse(op, f"{key} {value!r} is not a queue ARN")
    return value


def _source_arn(op: Operation, ctx: MappingContext) -> list[str]:
    return [_queue_arn(op, "SourceArn") or ""]


def _create_queue(op: Operation, ctx: MappingContext) -> list[Access]:
    if op.params.get("QueueOwnerAWSAccountId") is not None:
        _refuse(op, "CreateQueue does not take QueueOwnerAWSAccountId")
    queue = _queue_name(op, ctx)[0]
    out = [Access("sqs:CreateQueue", queue)]
    if op.params.get("tags"):
        out.append(Access("sqs:TagQueue", queue))  # tagging on creation needs sqs:TagQueue
    return out + _attribute_accesses(op, ctx)


def _set_queue_attributes(op: Operation, ctx: MappingContext) -> list[Access]:
    return [Access("sqs:SetQueueAttributes", _queue_url(op, ctx)[0]), *_attribute_accesses(op, ctx)]


def _attribute_accesses(op: Operation, ctx: MappingContext) -> list[Access]:
    """Attributes that make SQS act on something else: a dead-letter queue (messages received
    too often are moved there, a send the grant must cover) and an encryption key."""
    attributes = op.params.get("Attributes")
    if not isinstance(attributes, dict):
        return []
    out: list[Access] = []
    redrive = attributes.get("RedrivePolicy")
    if redrive:
        try:
            # A key given twice (RepeatedKey, a ValueError) is refused: the queue checked must be
            # the queue SQS uses (found in review).
            policy = (
                json.loads(redrive, object_pairs_hook=unique_keys)
                if isinstance(redrive, str)
                else None
            )
        except ValueError:
            policy = None
        target = policy.get("deadLetterTargetArn") if isinstance(policy, dict) else None
        if not isinstance(target, str) or not _QUEUE_ARN_RE.fullmatch(target):
            _refuse(op, "RedrivePolicy must be JSON naming a queue ARN as deadLetterTargetArn")
        out.append(Access("sqs:SendMessage", target))
    return out + encryption_key_accesses(op, ctx, attributes, "alias/aws/sqs", _refuse)


def _start_message_move_task(op: Operation, ctx: MappingContext) -> list[Access]:
    """A redrive reads and deletes from the dead-letter queue and sends to the destination."""
    source = _queue_arn(op, "SourceArn") or ""
    destination = _queue_arn(op, "DestinationArn", required=False)
    if destination is None:
        _refuse(
            op,
            "without DestinationArn the messages go back to their original source "
            "queues, which the request does not name",
        )
    return [
        Access("sqs:StartMessageMoveTask", source),
        Access("sqs:ReceiveMessage", source),
        Access("sqs:DeleteMessage", source),
        Access("sqs:GetQueueAttributes", source),
        Access("sqs:SendMessage", destination),
    ]


_RULES: dict[str, Rule] = {
    "SendMessage": _on(_queue_url),
    "SendMessageBatch": _on(_queue_url, "sqs:SendMessage"),
    "ReceiveMessage": _on(_queue_url),
    "DeleteMessage": _on(_queue_url),
    "DeleteMessageBatch": _on(_queue_url, "sqs:DeleteMessage"),
    "ChangeMessageVisibility": _on(_queue_url),
    "ChangeMessageVisibilityBatch": _on(_queue_url, "sqs:ChangeMessageVisibility"),
    "GetQueueAttributes": _on(_queue_url),
    "SetQueueAttributes": _set_queue_attributes,
    "PurgeQueue": _on(_queue_url),
    "DeleteQueue": _on(_queue_url),
    "AddPermission": _on(_queue_url),
    "RemovePermission": _on(_queue_url),
    "TagQueue": _on(_queue_url),
    "UntagQueue": _on(_queue_url),
    "ListQueueTags": _on(_queue_url),
    "ListDeadLetterSourceQueues": _on(_queue_url),
    "GetQueueUrl": _on(_queue_name),
    "CreateQueue": _create_queue,
    "ListQueues": _on(star),
    "ListMessageMoveTasks": _on(_source_arn),
    "StartMessageMoveTask": _start_message_move_task,
}

_REFUSED: dict[str, str] = {
    "CancelMessageMoveTask": "the task handle is opaque, so the queue it acts on cannot be "
    "known exactly",
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("sqs", _RULES, _REFUSED)
