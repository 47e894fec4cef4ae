"""Amazon SNS: operation -> (IAM action, resource ARN) pairs.

Resource, per the IAM service authorization reference:
  topic  arn:{p}:sns:{region}:{account}:{TopicName}

Operations with no resource type in the IAM reference (SMS, platform applications and
endpoints, ListTopics, ...) map to "*". A subscription ARN is ``<topic ARN>:<subscription id>``;
the subscription calls act on that topic. Attributes that name an IAM role for SNS to use
(``...RoleArn``) also need ``iam:PassRole`` on that role.
"""

from __future__ import annotations

import re
from typing import Any

from jitgate.awsapi.mapping.common import (
    PARTITION,
    REGION,
    ROLE_ARN_RE,
    Arns,
    Rule,
    access_function,
    encryption_key_accesses,
    param_reader,
    refuser,
    rule_maker,
    star,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation

_PREFIX = "sns"

_TOPIC_NAME = r"[A-Za-z0-9_\-]{1,256}(?:\.fifo)?"
_TOPIC_NAME_RE = re.compile(_TOPIC_NAME)
_TOPIC_ARN = rf"arn:{PARTITION}:sns:{REGION}:\d{{12}}:{_TOPIC_NAME}"
_TOPIC_ARN_RE = re.compile(_TOPIC_ARN)
_SUBSCRIPTION_ARN_RE = re.compile(rf"(?P<topic>{_TOPIC_ARN}):[0-9a-fA-F\-]{{36}}")


_refuse = refuser("sns")
_param = param_reader("sns")
_on = rule_maker(_PREFIX)


def _topic_arn_of(op: Operation, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _TOPIC_ARN_RE.fullmatch(value):
        _refuse(op, f"{key} {value!r} is not a topic ARN")
    return value


def _arns(key: str) -> Arns:
    """The topic ARN in parameter ``key``."""

    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        return [_topic_arn_of(op, key, _param(op, key))]

    return arns


_topic = _arns("TopicArn")
_resource = _arns("ResourceArn")


def _subscription_topic(op: Operation, ctx: MappingContext) -> list[str]:
    value = _param(op, "SubscriptionArn")
    match = _SUBSCRIPTION_ARN_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _refuse(op, f"SubscriptionArn {value!r} is not a subscription ARN")
    return [match.group("topic")]


def _role_arns(op: Operation, attributes: Any, key: str) -> list[Access]:
    """iam:PassRole for every attribute that hands SNS an IAM role."""
    if attributes is None:
        return []
    if not isinstance(attributes, dict):
        _refuse(op, f"{key} is not a map")
    out = []
    for name, value in attributes.items():
        if isinstance(name, str) and name.lower().endswith("rolearn"):
            if not isinstance(value, str) or not ROLE_ARN_RE.fullmatch(value):
                _refuse(op, f"attribute {name} {value!r} is not an IAM role ARN")
            out.append(Access("iam:PassRole", value))
    return out


def _publish(op: Operation, ctx: MappingContext) -> list[Access]:
    topic = op.params.get("TopicArn")
    target = op.params.get("TargetArn")
    if op.params.get("PhoneNumber") is not None:
        _refuse(op, "publishing to a phone number (SMS) has no topic to scope it to")
    if topic is not None and target is not None:
        _refuse(op, "the request gives both TopicArn and TargetArn")
    if topic is not None:
        return [Access("sns:Publish", _topic_arn_of(op, "TopicArn", topic))]
    if isinstance(target, str) and _TOPIC_ARN_RE.fullmatch(target):
        return [Access("sns:Publish", target)]
    if target is not None:
        _refuse(
            op,
            f"TargetArn {target!r} is not a topic ARN; publishing to a platform "
            "endpoint is not mapped",
        )
    _refuse(op, "the request names no topic")


def _create_topic(op: Operation, ctx: MappingContext) -> list[Access]:
    name = _param(op, "Name")
    if not isinstance(name, str) or not _TOPIC_NAME_RE.fullmatch(name):
        _refuse(op, f"Name {name!r} is not a valid topic name")
    topic = f"arn:{ctx.partition}:sns:{ctx.region}:{ctx.account}:{name}"
    out = [Access("sns:CreateTopic", topic)]
    if op.params.get("Tags"):
        out.append(Access("sns:TagResource", topic))
    if op.params.get("DataProtectionPolicy") is not None:
        out.append(Access("sns:PutDataProtectionPolicy", topic))
    out += _role_arns(op, op.params.get("Attributes"), "Attributes")
    return out + encryption_key_accesses(
        op, ctx, op.params.get("Attributes"), "alias/aws/sns", _refuse
    )


def _set_topic_attributes(op: Operation, ctx: MappingContext) -> list[Access]:
    topic = _topic(op, ctx)[0]
    name = _param(op, "AttributeName")
    value = op.params.get("AttributeValue")
    attributes = {name: value} if value is not None else {}
    return [
        Access("sns:SetTopicAttributes", topic),
        *_role_arns(op, attributes, "Attribute"),
        *encryption_key_accesses(op, ctx, attributes, "alias/aws/sns", _refuse),
    ]


def _subscribe(op: Operation, ctx: MappingContext) -> list[Access]:
    topic = _topic(op, ctx)[0]
    return [
        Access("sns:Subscribe", topic),
        *_role_arns(op, op.params.get("Attributes"), "Attributes"),
    ]


def _set_subscription_attributes(op: Operation, ctx: MappingContext) -> list[Access]:
    topic = _subscription_topic(op, ctx)[0]
    name = _param(op, "AttributeName")
    value = op.params.get("AttributeValue")
    attributes = {name: value} if value is not None else {}
    return [
        Access("sns:SetSubscriptionAttributes", topic),
        *_role_arns(op, attributes, "Attribute"),
    ]


_RULES: dict[str, Rule] = {
    # topics
    "CreateTopic": _create_topic,
    "DeleteTopic": _on(_topic),
    "GetTopicAttributes": _on(_topic),
    "SetTopicAttributes": _set_topic_attributes,
    "AddPermission": _on(_topic),
    "RemovePermission": _on(_topic),
    "ListTopics": _on(star),
    "Publish": _publish,
    "PublishBatch": _on(_topic, "sns:Publish"),
    "GetDataProtectionPolicy": _on(_resource),
    "PutDataProtectionPolicy": _on(_resource),
    "TagResource": _on(_resource),
    "UntagResource": _on(_resource),
    "ListTagsForResource": _on(_resource),
    # subscriptions
    "Subscribe": _subscribe,
    "ConfirmSubscription": _on(_topic),
    "ListSubscriptionsByTopic": _on(_topic),
    "ListSubscriptions": _on(star),
    "Unsubscribe": _on(_subscription_topic),
    "GetSubscriptionAttributes": _on(_subscription_topic),
    "SetSubscriptionAttributes": _set_subscription_attributes,
    # SMS, platform applications and endpoints: no resource type in IAM
    "CheckIfPhoneNumberIsOptedOut": _on(star),
    "ListPhoneNumbersOptedOut": _on(star),
    "OptInPhoneNumber": _on(star),
    "GetSMSAttributes": _on(star),
    "GetSMSSandboxAccountStatus": _on(star),
    "ListSMSSandboxPhoneNumbers": _on(star),
    "CreateSMSSandboxPhoneNumber": _on(star),
    "DeleteSMSSandboxPhoneNumber": _on(star),
    "VerifySMSSandboxPhoneNumber": _on(star),
    "ListOriginationNumbers": _on(star),
    "ListPlatformApplications": _on(star),
    "GetPlatformApplicationAttributes": _on(star),
    "DeletePlatformApplication": _on(star),
    "ListEndpointsByPlatformApplication": _on(star),
    "CreatePlatformEndpoint": _on(star),
    "GetEndpointAttributes": _on(star),
    "SetEndpointAttributes": _on(star),
    "DeleteEndpoint": _on(star),
}

_ROLES = "its attributes can hand SNS IAM roles and credentials whose permissions are not mapped"

_REFUSED: dict[str, str] = {
    "CreatePlatformApplication": _ROLES,
    "SetPlatformApplicationAttributes": _ROLES,
    "SetSMSAttributes": _ROLES,
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("sns", _RULES, _REFUSED)
