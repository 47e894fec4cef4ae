"""Amazon DynamoDB (and DynamoDB Streams): operation -> (IAM action, resource ARN) pairs.

Resources, per the IAM service authorization reference:
  table   arn:{p}:dynamodb:{region}:{account}:table/{TableName}
  index   arn:{p}:dynamodb:{region}:{account}:table/{TableName}/index/{IndexName}
  stream  arn:{p}:dynamodb:{region}:{account}:table/{TableName}/stream/{StreamLabel}
  backup  arn:{p}:dynamodb:{region}:{account}:table/{TableName}/backup/{BackupName}
  export  arn:{p}:dynamodb:{region}:{account}:table/{TableName}/export/{ExportName}
  import  arn:{p}:dynamodb:{region}:{account}:table/{TableName}/import/{ImportName}
  global-table  arn:{p}:dynamodb::{account}:global-table/{GlobalTableName}

``TableName`` may be a table name or a full table ARN (then the ARN's account and region are
used as they are). The DynamoDB Streams operations (botocore service ``dynamodbstreams``, IAM
prefix ``dynamodb``) are mapped here too.
"""

from __future__ import annotations

import re
from typing import Any

from jitgate.awsapi.mapping.common import (
    PARTITION,
    REGION,
    Arns,
    Rule,
    access_function,
    dedupe,
    param_reader,
    refuser,
    rule_maker,
    star,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation

_PREFIX = "dynamodb"

_ACCOUNT = r"\d{12}"
_NAME = r"[A-Za-z0-9_.\-]{3,255}"
_TABLE_NAME_RE = re.compile(_NAME)
_INDEX_NAME_RE = re.compile(_NAME)
_TABLE_ARN_RE = re.compile(rf"arn:{PARTITION}:dynamodb:{REGION}:{_ACCOUNT}:table/{_NAME}")
_STREAM_ARN_RE = re.compile(
    rf"arn:{PARTITION}:dynamodb:{REGION}:{_ACCOUNT}:table/{_NAME}/stream/[A-Za-z0-9:._\-]+"
)
_BACKUP_ARN_RE = re.compile(
    rf"arn:{PARTITION}:dynamodb:{REGION}:{_ACCOUNT}:table/{_NAME}/backup/[A-Za-z0-9_.\-]+"
)
_EXPORT_ARN_RE = re.compile(
    rf"arn:{PARTITION}:dynamodb:{REGION}:{_ACCOUNT}:table/{_NAME}/export/[A-Za-z0-9_.\-]+"
)
_IMPORT_ARN_RE = re.compile(
    rf"arn:{PARTITION}:dynamodb:{REGION}:{_ACCOUNT}:table/{_NAME}/import/[A-Za-z0-9_.\-]+"
)


_refuse = refuser("dynamodb")
_param = param_reader("dynamodb")
_on = rule_maker(_PREFIX)


# ---------------------------------------------------------------------------------------------
# helpers


def _text(op: Operation, key: str, value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        _refuse(op, f"{key} {value!r} is not a valid {what}")
    return value


def _table_arn(op: Operation, ctx: MappingContext, value: Any, key: str = "TableName") -> str:
    """A table name or table ARN -> the table ARN."""
    if isinstance(value, str) and value.startswith("arn:"):
        return _text(op, key, value, _TABLE_ARN_RE, "table ARN")
    name = _text(op, key, value, _TABLE_NAME_RE, "table name")
    return f"arn:{ctx.partition}:dynamodb:{ctx.region}:{ctx.account}:table/{name}"


# ---------------------------------------------------------------------------------------------
# ARN getters: (op, ctx) -> ARNs


def _table(op: Operation, ctx: MappingContext) -> list[str]:
    return [_table_arn(op, ctx, _param(op, "TableName"))]


def _table_or_index(op: Operation, ctx: MappingContext) -> list[str]:
    """Query/Scan: IAM checks the index when the call reads an index, else the table."""
    table = _table_arn(op, ctx, _param(op, "TableName"))
    index = _param(op, "IndexName", required=False)
    if index is None:
        return [table]
    return [f"{table}/index/{_text(op, 'IndexName', index, _INDEX_NAME_RE, 'index name')}"]


def _table_and_index(op: Operation, ctx: MappingContext) -> list[str]:
    """SearchVectors: the IAM reference requires both the table and the index."""
    table = _table_arn(op, ctx, _param(op, "TableName"))
    index = _text(op, "IndexName", _param(op, "IndexName"), _INDEX_NAME_RE, "index name")
    return [table, f"{table}/index/{index}"]


def _table_no_index(op: Operation, ctx: MappingContext) -> list[str]:
    if op.params.get("IndexName") is not None:
        _refuse(
            op,
            "IndexName is given, and which resource IAM checks for an index here is "
            "not settled, so it cannot be mapped exactly",
        )
    return _table(op, ctx)


def _request_items_tables(op: Operation, ctx: MappingContext) -> list[str]:
    items = _param(op, "RequestItems")
    if not isinstance(items, dict) or not items:
        _refuse(op, "RequestItems must name at least one table")
    return [_table_arn(op, ctx, name, "RequestItems table") for name in items]


def _arn_param(key: str, *patterns: re.Pattern[str], required: bool = True) -> Arns:
    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        value = _param(op, key, required=required)
        if value is None:
            return ["*"]
        if not isinstance(value, str) or not any(p.fullmatch(value) for p in patterns):
            _refuse(op, f"{key} {value!r} is not an ARN of a resource this operation acts on")
        return [value]

    return arns


def _global_table(op: Operation, ctx: MappingContext) -> list[str]:
    name = _text(op, "GlobalTableName", _param(op, "GlobalTableName"), _TABLE_NAME_RE, "table name")
    return [f"arn:{ctx.partition}:dynamodb::{ctx.account}:global-table/{name}"]


# ---------------------------------------------------------------------------------------------
# rules: (op, ctx) -> accesses


def _transact_get(op: Operation, ctx: MappingContext) -> list[Access]:
    items = _param(op, "TransactItems")
    if not isinstance(items, list) or not items:
        _refuse(op, "TransactItems must hold at least one item")
    out = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"Get"} or not isinstance(item["Get"], dict):
            _refuse(op, "every TransactItems entry must be exactly one Get")
        out.append(Access("dynamodb:GetItem", _table_arn(op, ctx, item["Get"].get("TableName"))))
    return dedupe(out)


_TRANSACT_WRITE_ACTIONS = {
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
}


def _transact_write(op: Operation, ctx: MappingContext) -> list[Access]:
    items = _param(op, "TransactItems")
    if not isinstance(items, list) or not items:
        _refuse(op, "TransactItems must hold at least one item")
    out = []
    for item in items:
        kinds = [k for k in item if item[k] is not None] if isinstance(item, dict) else []
        if len(kinds) != 1 or kinds[0] not in _TRANSACT_WRITE_ACTIONS:
            _refuse(
                op,
                "every TransactItems entry must be exactly one of "
                "ConditionCheck, Put, Update or Delete",
            )
        body = item[kinds[0]]
        if not isinstance(body, dict):
            _refuse(op, f"the {kinds[0]} entry is not a structure")
        table = _table_arn(op, ctx, body.get("TableName"))
        out.append(Access(_TRANSACT_WRITE_ACTIONS[kinds[0]], table))
    return dedupe(out)


def _sse_kms_key(op: Operation, key: str) -> None:
    sse = op.params.get(key)
    if isinstance(sse, dict) and sse.get("KMSMasterKeyId") is not None:
        _refuse(
            op,
            f"{key}.KMSMasterKeyId names a KMS key, and the KMS permissions that needs "
            "are not mapped",
        )


def _create_table(op: Operation, ctx: MappingContext) -> list[Access]:
    for key in ("GlobalTableSourceArn", "GlobalTableSettingsReplicationMode"):
        if op.params.get(key) is not None:
            _refuse(
                op,
                f"{key} makes this a global table replica, which touches tables in "
                "other regions and is not mapped",
            )
    _sse_kms_key(op, "SSESpecification")
    table = _table(op, ctx)[0]
    out = [Access("dynamodb:CreateTable", table)]
    if op.params.get("Tags"):
        out.append(Access("dynamodb:TagResource", table))
    if op.params.get("ResourcePolicy") is not None:
        out.append(Access("dynamodb:PutResourcePolicy", table))
    return out


def _update_table(op: Operation, ctx: MappingContext) -> list[Access]:
    for key in (
        "ReplicaUpdates",
        "GlobalTableWitnessUpdates",
        "MultiRegionConsistency",
        "GlobalTableSettingsReplicationMode",
    ):
        if op.params.get(key) is not None:
            _refuse(
                op, f"{key} changes global table replicas in other regions, which is not mapped"
            )
    _sse_kms_key(op, "SSESpecification")
    return [Access("dynamodb:UpdateTable", _table(op, ctx)[0])]


def _list_streams(op: Operation, ctx: MappingContext) -> list[Access]:
    return [Access("dynamodb:ListStreams", "*")]


def _streams_only(rule: Rule) -> Rule:
    """Operations of the DynamoDB Streams API (botocore service ``dynamodbstreams``)."""

    def checked(op: Operation, ctx: MappingContext) -> list[Access]:
        if op.service != "dynamodbstreams":
            _refuse(op, "this is a DynamoDB Streams operation, not a DynamoDB one")
        return rule(op, ctx)

    return checked


# ---------------------------------------------------------------------------------------------
# the table

_TABLE_OR_STREAM = (_TABLE_ARN_RE, _STREAM_ARN_RE)

_RULES: dict[str, Rule] = {
    # items
    "GetItem": _on(_table),
    "PutItem": _on(_table),
    "UpdateItem": _on(_table),
    "DeleteItem": _on(_table),
    "Query": _on(_table_or_index),
    "Scan": _on(_table_or_index),
    "SearchVectors": _on(_table_and_index),
    "BatchGetItem": _on(_request_items_tables),
    "BatchWriteItem": _on(_request_items_tables),
    "TransactGetItems": _transact_get,
    "TransactWriteItems": _transact_write,
    # tables
    "CreateTable": _create_table,
    "UpdateTable": _update_table,
    "DeleteTable": _on(_table),
    "DescribeTable": _on(_table),
    "ListTables": _on(star),
    "DescribeTimeToLive": _on(_table),
    "UpdateTimeToLive": _on(_table),
    "DescribeContinuousBackups": _on(_table),
    "UpdateContinuousBackups": _on(_table),
    "DescribeKinesisStreamingDestination": _on(_table),
    "DescribeContributorInsights": _on(_table_no_index),
    "UpdateContributorInsights": _on(_table_no_index),
    "ListContributorInsights": _on(star),
    "DescribeLimits": _on(star),
    "DescribeEndpoints": _on(star),
    # tags and resource policies (tables and streams)
    "TagResource": _on(_arn_param("ResourceArn", *_TABLE_OR_STREAM)),
    "UntagResource": _on(_arn_param("ResourceArn", *_TABLE_OR_STREAM)),
    "ListTagsOfResource": _on(_arn_param("ResourceArn", *_TABLE_OR_STREAM)),
    "GetResourcePolicy": _on(_arn_param("ResourceArn", *_TABLE_OR_STREAM)),
    "PutResourcePolicy": _on(_arn_param("ResourceArn", *_TABLE_OR_STREAM)),
    "DeleteResourcePolicy": _on(_arn_param("ResourceArn", *_TABLE_OR_STREAM)),
    # backups, exports, imports
    "CreateBackup": _on(_table),
    "DescribeBackup": _on(_arn_param("BackupArn", _BACKUP_ARN_RE)),
    "DeleteBackup": _on(_arn_param("BackupArn", _BACKUP_ARN_RE)),
    "ListBackups": _on(star),
    "DescribeExport": _on(_arn_param("ExportArn", _EXPORT_ARN_RE)),
    "ListExports": _on(_arn_param("TableArn", _TABLE_ARN_RE, required=False)),
    "DescribeImport": _on(_arn_param("ImportArn", _IMPORT_ARN_RE)),
    "ListImports": _on(_arn_param("TableArn", _TABLE_ARN_RE, required=False)),
    # global tables (read only)
    "DescribeGlobalTable": _on(_global_table),
    "DescribeGlobalTableSettings": _on(_global_table),
    "ListGlobalTables": _on(star),
    # DynamoDB Streams
    "DescribeStream": _streams_only(_on(_arn_param("StreamArn", _STREAM_ARN_RE))),
    "GetShardIterator": _streams_only(_on(_arn_param("StreamArn", _STREAM_ARN_RE))),
    "ListStreams": _streams_only(_list_streams),
}

_PARTIQL = (
    "PartiQL statements name their tables inside SQL text, which jitgate does not "
    "parse, so the tables cannot be known exactly"
)
_GLOBAL = (
    "it changes global table replicas in other regions, which needs permissions that are not mapped"
)

_REFUSED: dict[str, str] = {
    "ExecuteStatement": _PARTIQL,
    "BatchExecuteStatement": _PARTIQL,
    "ExecuteTransaction": _PARTIQL,
    "GetRecords": "the shard iterator is opaque, so the stream it reads cannot be known exactly",
    "RestoreTableFromBackup": "a restore needs item-level permissions on the new table besides "
    "the restore itself, which are not mapped",
    "RestoreTableToPointInTime": "a restore needs item-level permissions on the new table "
    "besides the restore itself, which are not mapped",
    "ExportTableToPointInTime": "an export writes to Amazon S3 with the caller's permissions, "
    "which are not mapped",
    "ImportTable": "an import reads from Amazon S3 and creates a table, which needs "
    "permissions that are not mapped",
    "CreateGlobalTable": _GLOBAL,
    "UpdateGlobalTable": _GLOBAL,
    "UpdateGlobalTableSettings": _GLOBAL,
    "EnableKinesisStreamingDestination": "it writes to a Kinesis data stream, which needs "
    "permissions that are not mapped",
    "DisableKinesisStreamingDestination": "it changes a Kinesis streaming destination, which "
    "needs permissions that are not mapped",
    "UpdateKinesisStreamingDestination": "it changes a Kinesis streaming destination, which "
    "needs permissions that are not mapped",
    "DescribeTableReplicaAutoScaling": "it needs Application Auto Scaling permissions, which "
    "are not mapped",
    "UpdateTableReplicaAutoScaling": "it needs Application Auto Scaling permissions, which "
    "are not mapped",
    "StartBulkPutItems": "the IAM reference does not list this operation",
    "DescribeBulkOperation": "the IAM reference does not list this operation",
    "CancelBulkOperation": "the IAM reference does not list this operation",
    "ListBulkOperations": "the IAM reference does not list this operation",
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("dynamodb", _RULES, _REFUSED)
