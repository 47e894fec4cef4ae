"""AWS KMS: operation -> (IAM action, resource ARN) pairs.

Resources, per the IAM service authorization reference:
  key    arn:{p}:kms:{region}:{account}:key/{KeyId}
  alias  arn:{p}:kms:{region}:{account}:alias/{Alias}

A ``KeyId`` may be a key id, a key ARN, an alias name ("alias/x") or an alias ARN. A key id
becomes the key ARN in the request's account and region; a key ARN is used as given. KMS
authorizes key operations on the key an alias points to, not on the alias, and the request does
not say which key that is: an alias on a key operation is refused (fail closed). Only CreateAlias
names every resource IAM checks (the alias and its target key); DeleteAlias and UpdateAlias also
need permission on the key the alias currently points to, which the request does not name.
"""

from __future__ import annotations

import re
from typing import Any

from jitgate.awsapi.mapping.common import (
    KMS_KEY_ID,
    PARTITION,
    REGION,
    Rule,
    access_function,
    param_reader,
    refuser,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation

_PREFIX = "kms"

_REGION_RE = re.compile(REGION)
_KEY_ID = KMS_KEY_ID
_KEY_ID_RE = re.compile(_KEY_ID)
_KEY_ARN_RE = re.compile(
    rf"arn:(?P<partition>{PARTITION}):kms:(?P<region>{REGION}):(?P<account>\d{{12}}):"
    rf"key/(?P<id>{_KEY_ID})"
)
_ALIAS_NAME = r"alias/[A-Za-z0-9/_\-]{1,250}"
_ALIAS_NAME_RE = re.compile(_ALIAS_NAME)
_ALIAS_ARN_RE = re.compile(rf"arn:{PARTITION}:kms:{REGION}:\d{{12}}:{_ALIAS_NAME}")


_refuse = refuser("kms")
_param = param_reader("kms")


def _key_arn(op: Operation, ctx: MappingContext, value: Any, key: str = "KeyId") -> str:
    """A key id or key ARN -> the key ARN; an alias (which names no key exactly) is refused."""
    if isinstance(value, str):
        if _KEY_ARN_RE.fullmatch(value):
            return value
        if _KEY_ID_RE.fullmatch(value):
            return f"arn:{ctx.partition}:kms:{ctx.region}:{ctx.account}:key/{value}"
        if _ALIAS_NAME_RE.fullmatch(value) or _ALIAS_ARN_RE.fullmatch(value):
            _refuse(
                op,
                f"{key} {value!r} is an alias; KMS authorizes this operation on the key the "
                "alias points to, so name the key by its key id or key ARN",
            )
    _refuse(op, f"{key} {value!r} is not a KMS key id or key ARN")


def _alias_arn(op: Operation, ctx: MappingContext, value: Any, key: str = "AliasName") -> str:
    if isinstance(value, str):
        if _ALIAS_ARN_RE.fullmatch(value):
            return value
        if _ALIAS_NAME_RE.fullmatch(value):
            return f"arn:{ctx.partition}:kms:{ctx.region}:{ctx.account}:{value}"
    _refuse(op, f"{key} {value!r} is not a KMS alias name or alias ARN")


def _on_key(action: str | None = None, key: str = "KeyId") -> Rule:
    """``action`` (default ``kms:<OperationName>``) on the key that parameter ``key`` names."""

    def rule(op: Operation, ctx: MappingContext) -> list[Access]:
        name = action or f"{_PREFIX}:{op.name}"
        return [Access(name, _key_arn(op, ctx, _param(op, key), key))]

    return rule


def _on_star(op: Operation, ctx: MappingContext) -> list[Access]:
    return [Access(f"{_PREFIX}:{op.name}", "*")]


def _decrypt(op: Operation, ctx: MappingContext) -> list[Access]:
    if op.params.get("KeyId") is None:
        _refuse(
            op,
            "without KeyId the key is the one recorded inside the ciphertext, which cannot "
            "be known exactly",
        )
    return _on_key()(op, ctx)


def _re_encrypt(op: Operation, ctx: MappingContext) -> list[Access]:
    source = op.params.get("SourceKeyId")
    if source is None:
        _refuse(
            op,
            "without SourceKeyId the source key is the one recorded inside the ciphertext, "
            "which cannot be known exactly",
        )
    return [
        Access("kms:ReEncryptFrom", _key_arn(op, ctx, source, "SourceKeyId")),
        Access(
            "kms:ReEncryptTo",
            _key_arn(op, ctx, _param(op, "DestinationKeyId"), "DestinationKeyId"),
        ),
    ]


def _create_alias(op: Operation, ctx: MappingContext) -> list[Access]:
    alias = _alias_arn(op, ctx, _param(op, "AliasName"))
    key = _key_arn(op, ctx, _param(op, "TargetKeyId"), "TargetKeyId")
    return [Access("kms:CreateAlias", alias), Access("kms:CreateAlias", key)]


def _create_key(op: Operation, ctx: MappingContext) -> list[Access]:
    if op.params.get("Tags"):
        _refuse(
            op,
            "Tags also need kms:TagResource on the new key, whose ARN is not known before it "
            "exists",
        )
    return [Access("kms:CreateKey", "*")]


def _retire_grant(op: Operation, ctx: MappingContext) -> list[Access]:
    """KMS identifies the grant by GrantId and KeyId, or by a grant token alone: with a token
    the grant (and its key) may be another than the KeyId given, so tokens are refused."""
    if op.params.get("KeyId") is None or op.params.get("GrantId") is None:
        _refuse(op, "the grant must be named by KeyId and GrantId (a grant token is opaque)")
    if op.params.get("GrantToken") is not None:
        _refuse(op, "GrantToken names a grant opaquely, perhaps on another key")
    return _on_key()(op, ctx)


def _update_primary_region(op: Operation, ctx: MappingContext) -> list[Access]:
    """Needs kms:UpdatePrimaryRegion on the current primary key and on the replica."""
    primary = _key_arn(op, ctx, _param(op, "KeyId"))
    region = _param(op, "PrimaryRegion")
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        _refuse(op, f"PrimaryRegion {region!r} is not a region")
    match = _KEY_ARN_RE.fullmatch(primary)
    if match is None or not match.group("id").startswith("mrk-"):
        _refuse(op, "KeyId must name a multi-Region key")
    replica = (
        f"arn:{match.group('partition')}:kms:{region}:{match.group('account')}:"
        f"key/{match.group('id')}"
    )
    return [
        Access("kms:UpdatePrimaryRegion", primary),
        Access("kms:UpdatePrimaryRegion", replica),
    ]


_KEY_OPERATIONS = (
    # cryptographic operations
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "Sign",
    "Verify",
    "GenerateMac",
    "VerifyMac",
    "GetPublicKey",
    "DeriveSharedSecret",
    "Encapsulate",
    "Decapsulate",
    # key management
    "DescribeKey",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "EnableKeyRotation",
    "DisableKeyRotation",
    "GetKeyRotationStatus",
    "RotateKeyOnDemand",
    "ListKeyRotations",
    "GetKeyLastUsage",
    "UpdateKeyDescription",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "ListKeyPolicies",
    "TagResource",
    "UntagResource",
    "ListResourceTags",
    "CreateGrant",
    "ListGrants",
    "RevokeGrant",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "DeleteImportedKeyMaterial",
)

_RULES: dict[str, Rule] = {
    **{name: _on_key() for name in _KEY_OPERATIONS},
    "Decrypt": _decrypt,
    "ReEncrypt": _re_encrypt,
    "RetireGrant": _retire_grant,
    "UpdatePrimaryRegion": _update_primary_region,
    "CreateAlias": _create_alias,
    "CreateKey": _create_key,
    # no resource type in IAM
    "ListKeys": _on_star,
    "ListAliases": _on_star,
    "ListRetirableGrants": _on_star,
    "GenerateRandom": _on_star,
    "DescribeCustomKeyStores": _on_star,
    "ConnectCustomKeyStore": _on_star,
    "DisconnectCustomKeyStore": _on_star,
    "DeleteCustomKeyStore": _on_star,
}

_ALIAS_KEY = (
    "it also needs permission on the key the alias currently points to, which the request "
    "does not name"
)
_KEY_STORE = (
    "a custom key store also needs AWS CloudHSM or external key store permissions, which are "
    "not mapped"
)

_REFUSED: dict[str, str] = {
    "DeleteAlias": _ALIAS_KEY,
    "UpdateAlias": _ALIAS_KEY,
    "ReplicateKey": "it creates a key in another region, which needs permissions there that "
    "are not mapped",
    "CreateCustomKeyStore": _KEY_STORE,
    "UpdateCustomKeyStore": _KEY_STORE,
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("kms", _RULES, _REFUSED)
