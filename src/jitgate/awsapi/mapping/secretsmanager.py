"""AWS Secrets Manager: operation -> (IAM action, resource ARN) pairs.

Resource, per the IAM service authorization reference:
  Secret  arn:{p}:secretsmanager:{region}:{account}:secret:{SecretId}

A secret's ARN is its name plus "-" and six random characters. ``SecretId`` may be:
- a full ARN (with the suffix) or a partial ARN (without it): used as given;
- a bare name: ``arn:{p}:secretsmanager:{region}:{account}:secret:{name}`` with
  ``match="secret-name"``, since the suffix is unknown (the grant matcher compares it with
  name-only grants and ``NAME-??????`` grants).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from jitgate.awsapi.mapping.common import (
    PARTITION,
    REGION,
    ROLE_ARN_RE,
    Rule,
    access_function,
    kms_key_arn,
    param_reader,
    refuser,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation

_PREFIX = "secretsmanager"

_SECRET_NAME = r"[A-Za-z0-9/_+=.@\-]{1,512}"
_SECRET_NAME_RE = re.compile(_SECRET_NAME)
_SECRET_ARN_RE = re.compile(
    rf"arn:{PARTITION}:secretsmanager:{REGION}:\d{{12}}:secret:"
    rf"{_SECRET_NAME}"
)
_LAMBDA_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:function:"
    r"[A-Za-z0-9_\-]{1,64}(?::[A-Za-z0-9$_\-]{1,128})?"
)


_refuse = refuser("secretsmanager")
_param = param_reader("secretsmanager")


def _secret(
    op: Operation, ctx: MappingContext, action: str, value: Any, key: str = "SecretId"
) -> Access:
    """The access ``action`` needs on the secret a SecretId (name or ARN) names."""
    if isinstance(value, str) and value.startswith("arn:"):
        if not _SECRET_ARN_RE.fullmatch(value):
            _refuse(op, f"{key} {value!r} is not a secret ARN")
        return Access(action, value)
    if not isinstance(value, str) or not _SECRET_NAME_RE.fullmatch(value):
        _refuse(op, f"{key} {value!r} is not a valid secret name")
    arn = f"arn:{ctx.partition}:secretsmanager:{ctx.region}:{ctx.account}:secret:{value}"
    return Access(action, arn, match="secret-name")


def _kms_accesses(op: Operation, ctx: MappingContext, actions: tuple[str, ...]) -> list[Access]:
    """Using a customer managed key (KmsKeyId) also needs KMS permissions on that key."""
    value = op.params.get("KmsKeyId")
    if value is None:
        return []
    key = kms_key_arn(op, ctx, value, "KmsKeyId", _refuse)
    return [Access(action, key) for action in actions]


def _on_secret(action: str | None = None) -> Rule:
    """``action`` (default ``secretsmanager:<OperationName>``) on the secret SecretId names."""

    def rule(op: Operation, ctx: MappingContext) -> list[Access]:
        name = action or f"{_PREFIX}:{op.name}"
        return [_secret(op, ctx, name, _param(op, "SecretId"))]

    return rule


def _on_star(op: Operation, ctx: MappingContext) -> list[Access]:
    return [Access(f"{_PREFIX}:{op.name}", "*")]


def _create_secret(op: Operation, ctx: MappingContext) -> list[Access]:
    if op.params.get("CrossAccountPrimaryARN") is not None:
        _refuse(
            op, "a cross-account replica involves a secret in another account, which is not mapped"
        )
    secret = _secret(op, ctx, "secretsmanager:CreateSecret", _param(op, "Name"), "Name")
    if secret.match != "secret-name":
        _refuse(op, "Name must be a secret name, not an ARN")
    out = [secret]
    if op.params.get("Tags"):
        out.append(Access("secretsmanager:TagResource", secret.arn, secret.match))
    if op.params.get("AddReplicaRegions"):
        out.append(Access("secretsmanager:ReplicateSecretToRegions", secret.arn, secret.match))
        out += _replicas(op, ctx)
    out += _kms_accesses(op, ctx, ("kms:GenerateDataKey", "kms:Decrypt"))
    return out


def _replicate(op: Operation, ctx: MappingContext) -> list[Access]:
    return [
        _secret(op, ctx, "secretsmanager:ReplicateSecretToRegions", _param(op, "SecretId")),
        *_replicas(op, ctx),
    ]


def _replicas(op: Operation, ctx: MappingContext) -> list[Access]:
    """Replicating a secret encrypts each replica with the key named for its Region, with the
    caller's (jitgate's) KMS rights: that key must be in the grant. Overwriting a same-named
    secret in the other Region would replace a secret the grant does not name."""
    if op.params.get("ForceOverwriteReplicaSecret"):
        _refuse(
            op,
            "ForceOverwriteReplicaSecret would overwrite a secret in another Region that the "
            "grant does not name",
        )
    replicas = _param(op, "AddReplicaRegions")
    if not isinstance(replicas, list) or not replicas:
        _refuse(op, "AddReplicaRegions must name at least one Region")
    out: list[Access] = []
    for replica in replicas:
        region = replica.get("Region") if isinstance(replica, dict) else None
        if not isinstance(region, str) or not re.fullmatch(REGION, region):
            _refuse(op, f"AddReplicaRegions entry {replica!r} has no valid Region")
        key = replica.get("KmsKeyId")
        if key is not None:
            where = dataclasses.replace(ctx, region=region)
            arn = kms_key_arn(op, where, key, "AddReplicaRegions KmsKeyId", _refuse)
            out += [Access("kms:GenerateDataKey", arn), Access("kms:Encrypt", arn)]
    return out


def _update_secret(op: Operation, ctx: MappingContext) -> list[Access]:
    out = [_secret(op, ctx, "secretsmanager:UpdateSecret", _param(op, "SecretId"))]
    out += _kms_accesses(op, ctx, ("kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"))
    return out


def _rotate_secret(op: Operation, ctx: MappingContext) -> list[Access]:
    out = [_secret(op, ctx, "secretsmanager:RotateSecret", _param(op, "SecretId"))]
    function = op.params.get("RotationLambdaARN")
    if function is not None:
        if not isinstance(function, str) or not _LAMBDA_ARN_RE.fullmatch(function):
            _refuse(op, f"RotationLambdaARN {function!r} is not a Lambda function ARN")
        out.append(Access("lambda:InvokeFunction", function))
    role = op.params.get("ExternalSecretRotationRoleArn")
    if role is not None:
        if not isinstance(role, str) or not ROLE_ARN_RE.fullmatch(role):
            _refuse(op, f"ExternalSecretRotationRoleArn {role!r} is not an IAM role ARN")
        out.append(Access("iam:PassRole", role))
    return out


def _batch_get_secret_value(op: Operation, ctx: MappingContext) -> list[Access]:
    if op.params.get("Filters"):
        _refuse(
            op,
            "Filters select secrets by their attributes, so the secrets read cannot be "
            "known exactly",
        )
    ids = _param(op, "SecretIdList")
    if not isinstance(ids, list) or not ids:
        _refuse(op, "SecretIdList must name at least one secret")
    out = [Access("secretsmanager:BatchGetSecretValue", "*")]
    out += [
        _secret(op, ctx, "secretsmanager:GetSecretValue", sid, "SecretIdList entry") for sid in ids
    ]
    return out


_RULES: dict[str, Rule] = {
    "GetSecretValue": _on_secret(),
    "BatchGetSecretValue": _batch_get_secret_value,
    "DescribeSecret": _on_secret(),
    "ListSecretVersionIds": _on_secret(),
    "ListSecrets": _on_star,
    "GetRandomPassword": _on_star,
    "CreateSecret": _create_secret,
    "PutSecretValue": _on_secret(),
    "UpdateSecret": _update_secret,
    "UpdateSecretVersionStage": _on_secret(),
    "DeleteSecret": _on_secret(),
    "RestoreSecret": _on_secret(),
    "RotateSecret": _rotate_secret,
    "CancelRotateSecret": _on_secret(),
    "TagResource": _on_secret(),
    "UntagResource": _on_secret(),
    "GetResourcePolicy": _on_secret(),
    "PutResourcePolicy": _on_secret(),
    "DeleteResourcePolicy": _on_secret(),
    "ValidateResourcePolicy": _on_secret(),
    "ReplicateSecretToRegions": _replicate,
    "RemoveRegionsFromReplication": _on_secret(),
    "StopReplicationToReplica": _on_secret(),
}

_NOT_IN_IAM = "the IAM reference does not list this operation, so it cannot be mapped exactly"

_REFUSED: dict[str, str] = {
    "AssociateCrossAccountReplica": _NOT_IN_IAM,
    "DisassociateCrossAccountReplica": _NOT_IN_IAM,
    "ListResourcePolicies": _NOT_IN_IAM,
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("secretsmanager", _RULES, _REFUSED)
