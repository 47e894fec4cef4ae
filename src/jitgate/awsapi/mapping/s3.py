"""S3 operations -> the IAM actions and ARNs they need.

Sources: the "Actions defined by Amazon S3" service authorization reference and the
"Permissions" section of each operation in the S3 API reference. Most operations need one
action on the bucket or on the object; the name often differs from the operation
(ListObjectsV2 -> s3:ListBucket, DeleteBucketCors -> s3:PutBucketCORS, ...), and many object
operations check a ``...Version...`` action instead when a version is named. Request headers
that the API reference says need more (ACLs, tags, Object Lock, governance bypass) add the
action they need (a customer managed KMS key named for encryption adds the KMS actions S3
performs with it). Operations in :data:`REFUSED` are refused, with the reason given there;
every botocore S3 operation is either in :data:`RULES`, handled specially, or refused.

Object ARNs are ``arn:{partition}:s3:::{bucket}/{key}`` with the key exactly as S3 will act on
it (no normalisation: ``a/../b`` stays as is).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NoReturn

from jitgate.awsapi.mapping.common import kms_key_arn
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.operations import parse_copy_source
from jitgate.awsapi.types import Access, Operation, UnsupportedOperation

BUCKET: Final = "bucket"
OBJECT: Final = "object"
ALL: Final = "*"


@dataclass(frozen=True)
class Rule:
    """``action`` (without the ``s3:`` prefix) on the ``resource`` the operation addresses.

    ``version_action`` replaces ``action`` when the call names an object version (VersionId).
    """

    action: str
    resource: str  # BUCKET, OBJECT or ALL
    version_action: str | None = None


def _b(action: str) -> Rule:
    return Rule(action, BUCKET)


def _o(action: str, version_action: str | None = None) -> Rule:
    return Rule(action, OBJECT, version_action)


RULES: Final[Mapping[str, Rule]] = MappingProxyType(
    {
        # --- service level
        "ListBuckets": Rule("ListAllMyBuckets", ALL),
        # --- buckets
        "DeleteBucket": _b("DeleteBucket"),
        "HeadBucket": _b("ListBucket"),
        "ListObjects": _b("ListBucket"),
        "ListObjectsV2": _b("ListBucket"),
        "ListObjectVersions": _b("ListBucketVersions"),
        "ListMultipartUploads": _b("ListBucketMultipartUploads"),
        "GetBucketLocation": _b("GetBucketLocation"),
        "GetBucketAbac": _b("GetBucketAbac"),
        "PutBucketAbac": _b("PutBucketAbac"),
        "GetBucketAccelerateConfiguration": _b("GetAccelerateConfiguration"),
        "PutBucketAccelerateConfiguration": _b("PutAccelerateConfiguration"),
        "GetBucketAcl": _b("GetBucketAcl"),
        "PutBucketAcl": _b("PutBucketAcl"),
        "GetBucketAnalyticsConfiguration": _b("GetAnalyticsConfiguration"),
        "ListBucketAnalyticsConfigurations": _b("GetAnalyticsConfiguration"),
        "PutBucketAnalyticsConfiguration": _b("PutAnalyticsConfiguration"),
        "DeleteBucketAnalyticsConfiguration": _b("PutAnalyticsConfiguration"),
        "GetBucketCors": _b("GetBucketCORS"),
        "PutBucketCors": _b("PutBucketCORS"),
        "DeleteBucketCors": _b("PutBucketCORS"),
        "GetBucketEncryption": _b("GetEncryptionConfiguration"),
        "PutBucketEncryption": _b("PutEncryptionConfiguration"),
        "DeleteBucketEncryption": _b("PutEncryptionConfiguration"),
        "GetBucketIntelligentTieringConfiguration": _b("GetIntelligentTieringConfiguration"),
        "ListBucketIntelligentTieringConfigurations": _b("GetIntelligentTieringConfiguration"),
        "PutBucketIntelligentTieringConfiguration": _b("PutIntelligentTieringConfiguration"),
        "DeleteBucketIntelligentTieringConfiguration": _b("PutIntelligentTieringConfiguration"),
        "GetBucketInventoryConfiguration": _b("GetInventoryConfiguration"),
        "ListBucketInventoryConfigurations": _b("GetInventoryConfiguration"),
        "PutBucketInventoryConfiguration": _b("PutInventoryConfiguration"),
        "DeleteBucketInventoryConfiguration": _b("PutInventoryConfiguration"),
        "GetBucketLifecycle": _b("GetLifecycleConfiguration"),
        "GetBucketLifecycleConfiguration": _b("GetLifecycleConfiguration"),
        "PutBucketLifecycle": _b("PutLifecycleConfiguration"),
        "PutBucketLifecycleConfiguration": _b("PutLifecycleConfiguration"),
        "DeleteBucketLifecycle": _b("PutLifecycleConfiguration"),
        "GetBucketLogging": _b("GetBucketLogging"),
        "PutBucketLogging": _b("PutBucketLogging"),
        "GetBucketMetadataTableConfiguration": _b("GetBucketMetadataTableConfiguration"),
        "DeleteBucketMetadataTableConfiguration": _b("DeleteBucketMetadataTableConfiguration"),
        "GetBucketMetricsConfiguration": _b("GetMetricsConfiguration"),
        "ListBucketMetricsConfigurations": _b("GetMetricsConfiguration"),
        "PutBucketMetricsConfiguration": _b("PutMetricsConfiguration"),
        "DeleteBucketMetricsConfiguration": _b("PutMetricsConfiguration"),
        "GetBucketNotification": _b("GetBucketNotification"),
        "GetBucketNotificationConfiguration": _b("GetBucketNotification"),
        "PutBucketNotification": _b("PutBucketNotification"),
        "PutBucketNotificationConfiguration": _b("PutBucketNotification"),
        "GetBucketOwnershipControls": _b("GetBucketOwnershipControls"),
        "PutBucketOwnershipControls": _b("PutBucketOwnershipControls"),
        "DeleteBucketOwnershipControls": _b("PutBucketOwnershipControls"),
        "GetBucketPolicy": _b("GetBucketPolicy"),
        "PutBucketPolicy": _b("PutBucketPolicy"),
        "DeleteBucketPolicy": _b("DeleteBucketPolicy"),
        "GetBucketPolicyStatus": _b("GetBucketPolicyStatus"),
        "GetBucketReplication": _b("GetReplicationConfiguration"),
        "DeleteBucketReplication": _b("PutReplicationConfiguration"),
        "GetBucketRequestPayment": _b("GetBucketRequestPayment"),
        "PutBucketRequestPayment": _b("PutBucketRequestPayment"),
        "GetBucketTagging": _b("GetBucketTagging"),
        "PutBucketTagging": _b("PutBucketTagging"),
        "DeleteBucketTagging": _b("PutBucketTagging"),
        "GetBucketVersioning": _b("GetBucketVersioning"),
        "PutBucketVersioning": _b("PutBucketVersioning"),
        "GetBucketWebsite": _b("GetBucketWebsite"),
        "PutBucketWebsite": _b("PutBucketWebsite"),
        "DeleteBucketWebsite": _b("DeleteBucketWebsite"),
        "GetObjectLockConfiguration": _b("GetBucketObjectLockConfiguration"),
        "PutObjectLockConfiguration": _b("PutBucketObjectLockConfiguration"),
        "GetPublicAccessBlock": _b("GetBucketPublicAccessBlock"),
        "PutPublicAccessBlock": _b("PutBucketPublicAccessBlock"),
        "DeletePublicAccessBlock": _b("PutBucketPublicAccessBlock"),
        # --- objects
        "GetObject": _o("GetObject", "GetObjectVersion"),
        "HeadObject": _o("GetObject", "GetObjectVersion"),
        "SelectObjectContent": _o("GetObject"),
        "GetObjectTorrent": _o("GetObjectTorrent"),
        "PutObject": _o("PutObject"),  # + header-driven extras
        "CreateMultipartUpload": _o("PutObject"),  # + header-driven extras
        "UploadPart": _o("PutObject"),
        "CompleteMultipartUpload": _o("PutObject"),
        "AbortMultipartUpload": _o("AbortMultipartUpload"),
        "ListParts": _o("ListMultipartUploadParts"),
        "DeleteObject": _o("DeleteObject", "DeleteObjectVersion"),
        "RestoreObject": _o("RestoreObject"),
        "GetObjectAcl": _o("GetObjectAcl", "GetObjectVersionAcl"),
        "PutObjectAcl": _o("PutObjectAcl", "PutObjectVersionAcl"),
        "GetObjectTagging": _o("GetObjectTagging", "GetObjectVersionTagging"),
        "PutObjectTagging": _o("PutObjectTagging", "PutObjectVersionTagging"),
        "DeleteObjectTagging": _o("DeleteObjectTagging", "DeleteObjectVersionTagging"),
        "GetObjectLegalHold": _o("GetObjectLegalHold"),
        "PutObjectLegalHold": _o("PutObjectLegalHold"),
        "GetObjectRetention": _o("GetObjectRetention"),
        "PutObjectRetention": _o("PutObjectRetention"),
        "GetObjectAnnotation": _o("GetObjectAnnotation", "GetObjectVersionAnnotation"),
        "PutObjectAnnotation": _o("PutObjectAnnotation", "PutObjectVersionAnnotation"),
        "DeleteObjectAnnotation": _o("DeleteObjectAnnotation", "DeleteObjectVersionAnnotation"),
        "ListObjectAnnotations": _o("ListObjectAnnotations", "ListObjectVersionAnnotations"),
    }
)

#: Operations refused, and why. Shown to the caller.
REFUSED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "CreateSession": "S3 Express directory buckets (s3express:CreateSession)",
        "ListDirectoryBuckets": "S3 Express directory buckets (s3express actions)",
        "RenameObject": "S3 Express directory buckets only (no s3: action)",
        "WriteGetObjectResponse": "S3 Object Lambda (s3-object-lambda: actions)",
        "PutBucketReplication": "also needs iam:PassRole on the role named in the body",
        "CreateBucketMetadataConfiguration": "also needs s3tables: permissions",
        "CreateBucketMetadataTableConfiguration": "also needs s3tables: permissions",
        "GetBucketMetadataConfiguration": "IAM action not confirmed",
        "DeleteBucketMetadataConfiguration": "IAM action not confirmed",
        "UpdateBucketMetadataAnnotationTableConfiguration": "also needs s3tables: permissions",
        "UpdateBucketMetadataInventoryTableConfiguration": "also needs s3tables: permissions",
        "UpdateBucketMetadataJournalTableConfiguration": "also needs s3tables: permissions",
        "UpdateObjectEncryption": "also needs kms: permissions on the new key",
    }
)

# Request parameters (headers) that need an extra action on the object written.
_OBJECT_WRITE_EXTRAS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("ACL", "GrantFullControl", "GrantRead", "GrantReadACP", "GrantWriteACP"), "PutObjectAcl"),
    (("Tagging",), "PutObjectTagging"),
    (("ObjectLockMode", "ObjectLockRetainUntilDate"), "PutObjectRetention"),
    (("ObjectLockLegalHoldStatus",), "PutObjectLegalHold"),
)
_BUCKET_ACL_PARAMS: Final = (
    "ACL",
    "GrantFullControl",
    "GrantRead",
    "GrantReadACP",
    "GrantWrite",
    "GrantWriteACP",
)
# Parameters whose IAM requirements are not confirmed: a call carrying them is refused.
_UNCONFIRMED_PARAMS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "PutObject": (
            "ObjectLockEventHold",
            "ObjectLockEventHoldDurationDays",
            "ObjectLockEventHoldDurationYears",
        ),
        "CreateMultipartUpload": (
            "ObjectLockEventHold",
            "ObjectLockEventHoldDurationDays",
            "ObjectLockEventHoldDurationYears",
        ),
        "CopyObject": (
            "ObjectLockEventHold",
            "ObjectLockEventHoldDurationDays",
            "ObjectLockEventHoldDurationYears",
            "AnnotationDirective",
        ),
        "CreateBucket": ("BucketNamespace",),
    }
)
_WITH_WRITE_EXTRAS: Final = frozenset({"PutObject", "CreateMultipartUpload"})
_WITH_BYPASS: Final = frozenset({"DeleteObject", "PutObjectRetention"})

_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]\Z")
# Names that look like buckets but address access points, directory buckets, table buckets.
_NOT_BUCKET_SUFFIXES: Final = (
    "-s3alias",
    "--ol-s3",
    "--op-s3",
    "--x-s3",
    "--table-s3",
    ".mrap",
)


def _refuse(op: Operation, why: str) -> UnsupportedOperation:
    return UnsupportedOperation(f"operation s3:{op.name} is not supported by jitgate: {why}")


def _refuse_now(op: Operation, why: str) -> NoReturn:
    raise _refuse(op, why)


def _bucket(op: Operation, value: Any) -> str:
    if not isinstance(value, str) or not _BUCKET_NAME.match(value):
        raise _refuse(op, "a bucket name is required")
    if value.lower().endswith(_NOT_BUCKET_SUFFIXES):
        raise _refuse(op, "access points and directory buckets are not supported")
    return value


def _key(op: Operation, value: Any) -> str:
    if not isinstance(value, str) or value == "":
        raise _refuse(op, "an object key is required")
    return value


def _bucket_arn(ctx: MappingContext, bucket: str) -> str:
    return f"arn:{ctx.partition}:s3:::{bucket}"


def _object_arn(ctx: MappingContext, bucket: str, key: str) -> str:
    return f"arn:{ctx.partition}:s3:::{bucket}/{key}"


def _present(params: Mapping[str, Any], names: Iterable[str]) -> bool:
    return any(params.get(name) is not None for name in names)


def _access(action: str, arn: str) -> Access:
    return Access(f"s3:{action}", arn)


def _rule_access(op: Operation, rule: Rule, ctx: MappingContext) -> list[Access]:
    params = op.params
    if rule.resource == ALL:
        return [_access(rule.action, "*")]
    bucket = _bucket(op, params.get("Bucket"))
    if rule.resource == BUCKET:
        return [_access(rule.action, _bucket_arn(ctx, bucket))]
    arn = _object_arn(ctx, bucket, _key(op, params.get("Key")))
    versioned = rule.version_action is not None and params.get("VersionId") is not None
    action = rule.version_action if versioned and rule.version_action else rule.action
    accesses = [_access(action, arn)]
    if op.name in _WITH_WRITE_EXTRAS:
        accesses += _write_extras(params, arn)
        accesses += _sse_kms_key(op, ctx)
    if op.name in _WITH_BYPASS and params.get("BypassGovernanceRetention"):
        accesses.append(_access("BypassGovernanceRetention", arn))
    return accesses


def _write_extras(params: Mapping[str, Any], arn: str) -> list[Access]:
    return [
        _access(action, arn) for names, action in _OBJECT_WRITE_EXTRAS if _present(params, names)
    ]


def _copy_source(op: Operation) -> Mapping[str, Any]:
    source = op.params.get("CopySource")
    if isinstance(source, str):
        return parse_copy_source(source)
    if not isinstance(source, Mapping):
        raise _refuse(op, "CopySource is required")
    return source


def _copy(op: Operation, ctx: MappingContext) -> list[Access]:
    """CopyObject / UploadPartCopy: read the source, write the destination."""
    source = _copy_source(op)
    src_arn = _object_arn(ctx, _bucket(op, source.get("Bucket")), _key(op, source.get("Key")))
    read = "GetObjectVersion" if source.get("VersionId") is not None else "GetObject"
    params = op.params
    dst_arn = _object_arn(ctx, _bucket(op, params.get("Bucket")), _key(op, params.get("Key")))
    accesses = [_access(read, src_arn), _access("PutObject", dst_arn)]
    if op.name == "CopyObject":
        accesses += _write_extras(params, dst_arn)
        accesses += _sse_kms_key(op, ctx)
    return accesses


# What S3 asks KMS for, with the caller's rights, when a request names a customer managed key
# (User Guide, "Using server-side encryption with AWS KMS keys"): a new object's data key; a
# multipart upload also decrypts that data key for each part.
_SSE_KMS_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "PutObject": ("kms:GenerateDataKey",),
        "CopyObject": ("kms:GenerateDataKey",),
        "CreateMultipartUpload": ("kms:GenerateDataKey", "kms:Decrypt"),
    }
)


def _sse_kms_key(op: Operation, ctx: MappingContext) -> list[Access]:
    """x-amz-server-side-encryption-aws-kms-key-id: S3 uses that key with jitgate's KMS rights,
    so the grant must name the key as well (without the header S3 uses the bucket default or
    the AWS managed key, which the caller does not choose)."""
    value = op.params.get("SSEKMSKeyId")
    if value is None:
        return []
    key = kms_key_arn(op, ctx, value, "SSEKMSKeyId", _refuse_now)
    return [Access(action, key) for action in _SSE_KMS_ACTIONS[op.name]]


def _put_bucket_encryption(op: Operation, ctx: MappingContext) -> list[Access]:
    """PutBucketEncryption: a default KMS key named in the body is the one S3 then uses, with
    the writer's and reader's KMS rights (jitgate's), for every object written without a key
    of its own (kms:GenerateDataKey) and read back (kms:Decrypt), calls that jitgate maps to
    s3: actions alone. So choosing it needs both on the key, as naming it on a write does
    (found in review)."""
    accesses = _rule_access(op, RULES[op.name], ctx)
    config = op.params.get("ServerSideEncryptionConfiguration")
    rules = config.get("Rules") if isinstance(config, Mapping) else None
    if not isinstance(rules, list) or not rules:
        raise _refuse(op, "the body's ServerSideEncryptionConfiguration names no rule")
    for rule in rules:
        default = (
            rule.get("ApplyServerSideEncryptionByDefault") if isinstance(rule, Mapping) else None
        )
        value = default.get("KMSMasterKeyID") if isinstance(default, Mapping) else None
        if value is not None:
            key = kms_key_arn(op, ctx, value, "KMSMasterKeyID", _refuse_now)
            accesses += [Access("kms:GenerateDataKey", key), Access("kms:Decrypt", key)]
    return accesses


def _delete_objects(op: Operation, ctx: MappingContext) -> list[Access]:
    """DeleteObjects: every key in the body is deleted, so every key needs its action."""
    bucket = _bucket(op, op.params.get("Bucket"))
    delete = op.params.get("Delete")
    objects = delete.get("Objects") if isinstance(delete, Mapping) else None
    if not isinstance(objects, list) or not objects:
        raise _refuse(op, "the request body must list the objects to delete")
    bypass = bool(op.params.get("BypassGovernanceRetention"))
    accesses: list[Access] = []
    for item in objects:
        if not isinstance(item, Mapping):
            raise _refuse(op, "the request body must list the objects to delete")
        arn = _object_arn(ctx, bucket, _key(op, item.get("Key")))
        versioned = item.get("VersionId") is not None
        accesses.append(_access("DeleteObjectVersion" if versioned else "DeleteObject", arn))
        if bypass:
            accesses.append(_access("BypassGovernanceRetention", arn))
    return accesses


def _get_object_attributes(op: Operation, ctx: MappingContext) -> list[Access]:
    """GetObjectAttributes needs GetObject + GetObjectAttributes on unversioned buckets and
    GetObjectVersion + GetObjectVersionAttributes on versioned ones. Whether the bucket is
    versioned is not in the request, so all four are required."""
    bucket = _bucket(op, op.params.get("Bucket"))
    arn = _object_arn(ctx, bucket, _key(op, op.params.get("Key")))
    actions = ("GetObject", "GetObjectAttributes", "GetObjectVersion", "GetObjectVersionAttributes")
    return [_access(action, arn) for action in actions]


def _create_bucket(op: Operation, ctx: MappingContext) -> list[Access]:
    params = op.params
    arn = _bucket_arn(ctx, _bucket(op, params.get("Bucket")))
    config = params.get("CreateBucketConfiguration") or {}
    if not isinstance(config, Mapping):
        raise _refuse(op, "CreateBucketConfiguration is not understood")
    if config.get("Tags"):
        raise _refuse(op, "tagging a bucket at creation is not supported")
    if config.get("Bucket") is not None or config.get("Location") is not None:
        raise _refuse(op, "directory buckets are not supported")
    accesses = [_access("CreateBucket", arn)]
    if _present(params, _BUCKET_ACL_PARAMS):
        accesses.append(_access("PutBucketAcl", arn))
    if params.get("ObjectLockEnabledForBucket"):
        accesses.append(_access("PutBucketObjectLockConfiguration", arn))
        accesses.append(_access("PutBucketVersioning", arn))
    if params.get("ObjectOwnership") is not None:
        accesses.append(_access("PutBucketOwnershipControls", arn))
    return accesses


def _restore_object(op: Operation, ctx: MappingContext) -> list[Access]:
    """A plain restore acts on its object; a SELECT restore writes its results wherever
    OutputLocation says, with the caller's (jitgate's) rights: refused."""
    request = op.params.get("RestoreRequest") or {}
    chosen = [k for k in ("Type", "SelectParameters", "OutputLocation") if k in request]
    if chosen:
        raise _refuse(op, f"{chosen[0]} (a SELECT restore writing elsewhere) is not supported")
    return _rule_access(op, RULES[op.name], ctx)


_SPECIAL: Final[Mapping[str, Callable[[Operation, MappingContext], list[Access]]]] = (
    MappingProxyType(
        {
            "CopyObject": _copy,
            "UploadPartCopy": _copy,
            "DeleteObjects": _delete_objects,
            "GetObjectAttributes": _get_object_attributes,
            "CreateBucket": _create_bucket,
            "RestoreObject": _restore_object,
            "PutBucketEncryption": _put_bucket_encryption,
        }
    )
)

#: Every S3 operation jitgate maps.
SUPPORTED: Final[frozenset[str]] = frozenset(RULES) | frozenset(_SPECIAL)


def access_for(op: Operation, ctx: MappingContext) -> list[Access]:
    """The (action, ARN) pairs an S3 call needs; UnsupportedOperation if not mapped exactly."""
    if op.name in REFUSED:
        raise _refuse(op, REFUSED[op.name])
    unconfirmed = [p for p in _UNCONFIRMED_PARAMS.get(op.name, ()) if op.params.get(p) is not None]
    if unconfirmed:
        raise _refuse(op, f"parameter {unconfirmed[0]} is not supported")
    special = _SPECIAL.get(op.name)
    if special is not None:
        accesses = special(op, ctx)
    elif op.name in RULES:
        accesses = _rule_access(op, RULES[op.name], ctx)
    else:
        raise UnsupportedOperation(f"operation s3:{op.name} is not supported by jitgate")
    return list(dict.fromkeys(accesses))  # drop repeats, keep order
