"""Amazon CloudWatch Logs: operation -> (IAM action, resource ARN) pairs.

Resources, per the IAM service authorization reference:
  log-group   arn:{p}:logs:{region}:{account}:log-group:{LogGroupName}
  log-stream  arn:{p}:logs:{region}:{account}:log-group:{LogGroupName}:log-stream:{LogStreamName}
  destination arn:{p}:logs:{region}:{account}:destination:{DestinationName}
  delivery, delivery-source, delivery-destination, anomaly-detector, lookup-table, ...

Which resource type an action takes follows the IAM reference: stream-level actions
(CreateLogStream, DeleteLogStream, PutLogEvents, GetLogEvents) take the log stream, the rest
the log group. A ``logGroupIdentifier`` may be a log group name or a log group ARN (without a
trailing ":*"). Actions with no resource type in the IAM reference map to "*".
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
    param_reader,
    refuser,
    rule_maker,
    star,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation

_PREFIX = "logs"

_LOGS_ARN = rf"arn:{PARTITION}:logs:{REGION}:\d{{12}}"
_GROUP = r"[A-Za-z0-9_./#\-]{1,512}"
_GROUP_RE = re.compile(_GROUP)
_GROUP_ARN_RE = re.compile(rf"{_LOGS_ARN}:log-group:{_GROUP}")
_STREAM_RE = re.compile(r"[^:*]{1,512}")
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,60}")
_DESTINATION_NAME_RE = re.compile(r"[^:*]{1,512}")
_DESTINATION_ARN_RE = re.compile(rf"{_LOGS_ARN}:destination:[^:*]{{1,512}}")
_ANOMALY_DETECTOR_ARN_RE = re.compile(rf"{_LOGS_ARN}:anomaly-detector:[A-Za-z0-9\-]{{1,64}}")
_LOOKUP_TABLE_ARN_RE = re.compile(rf"{_LOGS_ARN}:lookup-table:[A-Za-z0-9_.\-]{{1,256}}")
_TAGGABLE_ARN_RE = re.compile(
    rf"{_LOGS_ARN}:(?:log-group:{_GROUP}|destination:[^:*]{{1,512}}"
    rf"|(?:delivery|delivery-source|delivery-destination):[A-Za-z0-9_.\-]{{1,64}}"
    rf"|anomaly-detector:[A-Za-z0-9\-]{{1,64}}|lookup-table:[A-Za-z0-9_.\-]{{1,256}}"
    rf"|scheduled-query:[A-Za-z0-9\-]{{1,64}})"
)
_ANY_ARN_RE = re.compile(rf"arn:{PARTITION}:[a-z0-9\-]+:{REGION}:(?P<account>\d{{12}}):.+")


_refuse = refuser("logs")
_param = param_reader("logs")
_on = rule_maker(_PREFIX)


def _group_arn_of(op: Operation, ctx: MappingContext, value: Any, key: str) -> str:
    """A log group name or log group ARN -> the log group ARN."""
    if isinstance(value, str) and value.startswith("arn:"):
        if not _GROUP_ARN_RE.fullmatch(value):
            _refuse(op, f"{key} {value!r} is not a log group ARN (without a trailing ':*')")
        return value
    if not isinstance(value, str) or not _GROUP_RE.fullmatch(value):
        _refuse(op, f"{key} {value!r} is not a valid log group name")
    return f"arn:{ctx.partition}:logs:{ctx.region}:{ctx.account}:log-group:{value}"


def _one_group(op: Operation, ctx: MappingContext) -> str:
    """The log group named by logGroupName or logGroupIdentifier (exactly one of them)."""
    name = op.params.get("logGroupName")
    identifier = op.params.get("logGroupIdentifier")
    if name is not None and identifier is not None:
        _refuse(op, "the request gives both logGroupName and logGroupIdentifier")
    if name is not None:
        if isinstance(name, str) and name.startswith("arn:"):
            _refuse(op, f"logGroupName {name!r} must be a name, not an ARN")
        return _group_arn_of(op, ctx, name, "logGroupName")
    if identifier is not None:
        return _group_arn_of(op, ctx, identifier, "logGroupIdentifier")
    _refuse(op, "the request names no log group")


def _group(op: Operation, ctx: MappingContext) -> list[str]:
    return [_one_group(op, ctx)]


def _stream(op: Operation, ctx: MappingContext) -> list[str]:
    group = _one_group(op, ctx)
    stream = _param(op, "logStreamName")
    if not isinstance(stream, str) or not _STREAM_RE.fullmatch(stream):
        _refuse(op, f"logStreamName {stream!r} is not a valid log stream name")
    return [f"{group}:log-stream:{stream}"]


def _groups(key: str, *, required: bool = True) -> Arns:
    """Every log group in the list parameter ``key`` (names or ARNs)."""

    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        values = _param(op, key, required=required)
        if values is None:
            return []
        if not isinstance(values, list) or not values:
            _refuse(op, f"{key} must list at least one log group")
        return [_group_arn_of(op, ctx, value, f"{key} entry") for value in values]

    return arns


def _named(kind: str, key: str, pattern: re.Pattern[str] = _NAME_RE) -> Arns:
    """A resource of type ``kind`` named by parameter ``key``."""

    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        value = _param(op, key)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            _refuse(op, f"{key} {value!r} is not a valid {kind} name")
        return [f"arn:{ctx.partition}:logs:{ctx.region}:{ctx.account}:{kind}:{value}"]

    return arns


def _arn_param(key: str, pattern: re.Pattern[str], *, required: bool = True) -> Arns:
    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        value = _param(op, key, required=required)
        if value is None:
            return ["*"]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            _refuse(op, f"{key} {value!r} is not an ARN of a resource this operation acts on")
        return [value]

    return arns


def _pass_role(op: Operation, key: str) -> list[Access]:
    role = op.params.get(key)
    if role is None:
        return []
    if not isinstance(role, str) or not ROLE_ARN_RE.fullmatch(role):
        _refuse(op, f"{key} {role!r} is not an IAM role ARN")
    return [Access("iam:PassRole", role)]


def _no_kms_key(op: Operation) -> None:
    """A key named for a log group (or detector) is then used by CloudWatch Logs for what is
    written to it; which KMS rights of the caller that takes is not confirmed, so the call is
    refused (CreateLogGroup and AssociateKmsKey: found in review)."""
    if op.params.get("kmsKeyId") is not None:
        _refuse(op, "kmsKeyId names a KMS key, which needs KMS permissions that are not mapped")


def _create_log_group(op: Operation, ctx: MappingContext) -> list[Access]:
    _no_kms_key(op)
    group = _group_arn_of(op, ctx, _param(op, "logGroupName"), "logGroupName")
    out = [Access("logs:CreateLogGroup", group)]
    if op.params.get("tags"):
        out.append(Access("logs:TagResource", group))  # tagging on creation
    return out


def _kms_key_group(op: Operation, ctx: MappingContext) -> list[str]:
    _no_kms_key(op)
    if op.params.get("resourceIdentifier") is not None:
        _refuse(op, "resourceIdentifier names query results, which have no IAM resource to map")
    return _group(op, ctx)


# SOURCE at the start of any line (after comment lines too) or of a pipeline stage, and the
# command's own form "SOURCE logGroups(" anywhere.
_SOURCE_COMMAND_RE = re.compile(
    r"(?:^|\|)\s*source\b|\bsource\s+loggroups\s*\(", re.IGNORECASE | re.MULTILINE
)


def _start_query(op: Operation, ctx: MappingContext) -> list[Access]:
    """The log groups named in the parameters; a query that chooses more in its own text (SQL's
    FROM, PPL's source=, Logs Insights' SOURCE command) is refused: the text is not parsed."""
    language = op.params.get("queryLanguage")
    if language not in (None, "CWLI"):
        _refuse(op, f"queryLanguage {language!r} names log groups inside the query text")
    query = op.params.get("queryString")
    if isinstance(query, str) and _SOURCE_COMMAND_RE.search(query):
        _refuse(op, "the query text chooses log groups (SOURCE), which is not parsed")
    arns = []
    if op.params.get("logGroupName") is not None:
        arns.append(_group_arn_of(op, ctx, op.params["logGroupName"], "logGroupName"))
    arns += _groups("logGroupNames", required=False)(op, ctx)
    arns += _groups("logGroupIdentifiers", required=False)(op, ctx)
    if not arns:
        _refuse(op, "the log groups are chosen inside the query text, which is not parsed")
    return [Access("logs:StartQuery", arn) for arn in arns]


def _put_subscription_filter(op: Operation, ctx: MappingContext) -> list[Access]:
    group = _group_arn_of(op, ctx, _param(op, "logGroupName"), "logGroupName")
    out = [Access("logs:PutSubscriptionFilter", group)]
    destination = _param(op, "destinationArn")
    if isinstance(destination, str) and _DESTINATION_ARN_RE.fullmatch(destination):
        # a CloudWatch Logs destination (the cross-account path) is itself checked by IAM
        out.append(Access("logs:PutSubscriptionFilter", destination))
    else:
        # Kinesis, Firehose and Lambda destinations are not checked against the caller: keep
        # them in the signing account so the log data cannot be sent elsewhere.
        arn = _ANY_ARN_RE.fullmatch(destination) if isinstance(destination, str) else None
        if arn is None or arn.group("account") != ctx.account:
            _refuse(
                op,
                f"destinationArn {destination!r} is neither a CloudWatch Logs destination nor "
                f"a resource in account {ctx.account}",
            )
    out += _pass_role(op, "roleArn")
    return out


def _put_destination(op: Operation, ctx: MappingContext) -> list[Access]:
    destination = _named("destination", "destinationName", _DESTINATION_NAME_RE)(op, ctx)
    out = [Access("logs:PutDestination", destination[0])]
    if op.params.get("tags"):
        out.append(Access("logs:TagResource", destination[0]))
    out += _pass_role(op, "roleArn")
    return out


def _create_anomaly_detector(op: Operation, ctx: MappingContext) -> list[Access]:
    if op.params.get("tags"):
        _refuse(op, "tags also need logs:TagResource on the new detector, whose ARN is not known")
    _no_kms_key(op)
    groups = _groups("logGroupArnList")(op, ctx)
    return [Access("logs:CreateLogAnomalyDetector", arn) for arn in groups]


_RULES: dict[str, Rule] = {
    # log groups
    "CreateLogGroup": _create_log_group,
    "DeleteLogGroup": _on(_group),
    "DescribeLogGroups": _on(star),
    "ListLogGroups": _on(star),
    "PutRetentionPolicy": _on(_group),
    "DeleteRetentionPolicy": _on(_group),
    "PutLogGroupDeletionProtection": _on(_group),
    "AssociateKmsKey": _on(_kms_key_group),
    "DisassociateKmsKey": _on(_kms_key_group),
    "TagLogGroup": _on(_group),
    "UntagLogGroup": _on(_group),
    "ListTagsLogGroup": _on(_group),
    "GetLogGroupFields": _on(_group),
    "PutDataProtectionPolicy": _on(_group),
    "GetDataProtectionPolicy": _on(_group),
    "DeleteDataProtectionPolicy": _on(_group),
    "PutTransformer": _on(_group),
    "GetTransformer": _on(_group),
    "DeleteTransformer": _on(_group),
    # log streams and events
    "CreateLogStream": _on(_stream),
    "DeleteLogStream": _on(_stream),
    "DescribeLogStreams": _on(_group),
    "PutLogEvents": _on(_stream),
    "GetLogEvents": _on(_stream),
    "FilterLogEvents": _on(_group),
    # Logs Insights
    "StartQuery": _start_query,
    "StopQuery": _on(star),
    "DescribeQueries": _on(star),
    "PutQueryDefinition": _on(star),
    "DescribeQueryDefinitions": _on(star),
    "DeleteQueryDefinition": _on(star),
    "StartLiveTail": _on(_groups("logGroupIdentifiers")),
    # metric and subscription filters
    "PutMetricFilter": _on(_group),
    "DeleteMetricFilter": _on(_group),
    "DescribeMetricFilters": _on(_group),
    "TestMetricFilter": _on(star),
    "TestTransformer": _on(star),
    "PutSubscriptionFilter": _put_subscription_filter,
    "DeleteSubscriptionFilter": _on(_group),
    "DescribeSubscriptionFilters": _on(_group),
    # destinations
    "PutDestination": _put_destination,
    "PutDestinationPolicy": _on(_named("destination", "destinationName", _DESTINATION_NAME_RE)),
    "DeleteDestination": _on(_named("destination", "destinationName", _DESTINATION_NAME_RE)),
    "DescribeDestinations": _on(star),
    # tags on any CloudWatch Logs resource
    "TagResource": _on(_arn_param("resourceArn", _TAGGABLE_ARN_RE)),
    "UntagResource": _on(_arn_param("resourceArn", _TAGGABLE_ARN_RE)),
    "ListTagsForResource": _on(_arn_param("resourceArn", _TAGGABLE_ARN_RE)),
    # vended log deliveries (read and delete)
    "GetDelivery": _on(_named("delivery", "id")),
    "DeleteDelivery": _on(_named("delivery", "id")),
    "DescribeDeliveries": _on(star),
    "GetDeliverySource": _on(_named("delivery-source", "name")),
    "DescribeDeliverySources": _on(star),
    "GetDeliveryDestination": _on(_named("delivery-destination", "name")),
    "DeleteDeliveryDestination": _on(_named("delivery-destination", "name")),
    "GetDeliveryDestinationPolicy": _on(_named("delivery-destination", "deliveryDestinationName")),
    "PutDeliveryDestinationPolicy": _on(_named("delivery-destination", "deliveryDestinationName")),
    "DeleteDeliveryDestinationPolicy": _on(
        _named("delivery-destination", "deliveryDestinationName")
    ),
    "DescribeDeliveryDestinations": _on(star),
    "DescribeConfigurationTemplates": _on(star),
    # anomaly detection
    "CreateLogAnomalyDetector": _create_anomaly_detector,
    "GetLogAnomalyDetector": _on(_arn_param("anomalyDetectorArn", _ANOMALY_DETECTOR_ARN_RE)),
    "UpdateLogAnomalyDetector": _on(_arn_param("anomalyDetectorArn", _ANOMALY_DETECTOR_ARN_RE)),
    "DeleteLogAnomalyDetector": _on(_arn_param("anomalyDetectorArn", _ANOMALY_DETECTOR_ARN_RE)),
    "UpdateAnomaly": _on(_arn_param("anomalyDetectorArn", _ANOMALY_DETECTOR_ARN_RE)),
    "ListAnomalies": _on(
        _arn_param("anomalyDetectorArn", _ANOMALY_DETECTOR_ARN_RE, required=False)
    ),
    "ListLogAnomalyDetectors": _on(star),
    # lookup tables addressed by ARN
    "GetLookupTable": _on(_arn_param("lookupTableArn", _LOOKUP_TABLE_ARN_RE)),
    "DeleteLookupTable": _on(_arn_param("lookupTableArn", _LOOKUP_TABLE_ARN_RE)),
    "DescribeLookupTables": _on(star),
    # account-wide settings and listings with no resource type in IAM
    "DescribeAccountPolicies": _on(star),
    "DescribeResourcePolicies": _on(star),
    "PutResourcePolicy": _on(star),
    "DeleteResourcePolicy": _on(star),
    "DescribeExportTasks": _on(star),
    "CancelExportTask": _on(star),
    "DescribeImportTasks": _on(star),
    "DescribeImportTaskBatches": _on(star),
    "CancelImportTask": _on(star),
    "DescribeFieldIndexes": _on(star),
    "DescribeIndexPolicies": _on(star),
    "PutIndexPolicy": _on(star),
    "DeleteIndexPolicy": _on(star),
    "GetLogFields": _on(star),
    "ListAggregateLogGroupSummaries": _on(star),
    "ListIntegrations": _on(star),
    "GetIntegration": _on(star),
    "DeleteIntegration": _on(star),
    "ListScheduledQueries": _on(star),
    "GetStorageTierPolicy": _on(star),
    "ListSyslogConfigurations": _on(star),
}

_OPAQUE = "the request identifies its log groups only by an opaque id, so they cannot be known"
_NEW_ARN = (
    "it creates a resource whose ARN is not known before it exists, and needs permissions on "
    "other resources that are not mapped"
)
_SCHEDULED = "a scheduled query may be named by name or ARN, and IAM checks its id-based ARN"

_REFUSED: dict[str, str] = {
    "CreateExportTask": "the export writes to the Amazon S3 bucket the request names, which IAM "
    "does not check against the caller, so where the data goes cannot be scoped",
    "GetQueryResults": _OPAQUE,
    "ListLogGroupsForQuery": _OPAQUE,
    "GetLogRecord": "the log record pointer is opaque, so its log group cannot be known",
    "GetLogObject": "the IAM reference does not list this operation",
    "CreateImportTask": _NEW_ARN,
    "CreateDelivery": _NEW_ARN,
    "UpdateDeliveryConfiguration": "it needs permissions on the delivery source and "
    "destination, which the request does not name",
    "PutDeliverySource": "it needs permission on the source resource of another service, "
    "which is not mapped",
    "PutDeliveryDestination": "it can pass an IAM role and write to another service's "
    "resource, which is not mapped",
    "DeleteDeliverySource": "the IAM reference gives it an inconsistent resource type",
    "PutAccountPolicy": "depending on the policy type it needs further permissions that "
    "are not mapped",
    "DeleteAccountPolicy": "depending on the policy type it needs further permissions that "
    "are not mapped",
    "CreateLookupTable": _NEW_ARN,
    "UpdateLookupTable": "it can name a KMS key or a query, which need permissions that are "
    "not mapped",
    "CreateScheduledQuery": _NEW_ARN,
    "GetScheduledQuery": _SCHEDULED,
    "GetScheduledQueryHistory": _SCHEDULED,
    "UpdateScheduledQuery": _SCHEDULED,
    "DeleteScheduledQuery": _SCHEDULED,
    "PutIntegration": "it connects another service with permissions that are not mapped",
    "AssociateSourceToS3TableIntegration": "it connects Amazon S3 Tables with permissions that "
    "are not mapped",
    "DisassociateSourceFromS3TableIntegration": "it changes an Amazon S3 Tables integration "
    "with permissions that are not mapped",
    "ListSourcesForS3TableIntegration": "it reads an Amazon S3 Tables integration whose IAM "
    "mapping is not settled",
    "PutStorageTierPolicy": "it changes account-wide storage with permissions that are not mapped",
    "PutSyslogConfiguration": "it connects a VPC endpoint with permissions that are not mapped",
    "DeleteSyslogConfiguration": "it changes a VPC endpoint connection with permissions that "
    "are not mapped",
    "PutBearerTokenAuthentication": "it changes how a log group authenticates writers, which "
    "is not mapped",
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("logs", _RULES, _REFUSED)
