"""AWS Systems Manager, Parameter Store only: operation -> (IAM action, resource ARN) pairs.

Resource, per the IAM service authorization reference:
  parameter  arn:{p}:ssm:{region}:{account}:parameter/{ParameterNameWithoutLeadingSlash}

"/a/b" -> ``parameter/a/b``; "name" -> ``parameter/name``; a full parameter ARN is used as
given. GetParameter and GetParameters accept a version or label selector ("name:3",
"name:label"); IAM checks the parameter itself, so the selector is dropped. AWS public
parameters ("/aws/service/...") belong to no account: their ARNs have an empty account field.
Every other Systems Manager API (Run Command, sessions, documents, automation, ...) is refused.
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
    kms_key_arn,
    param_reader,
    refuser,
    rule_maker,
    star,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation

_PREFIX = "ssm"

# A parameter name: one segment, or a hierarchy that starts with "/". Up to 2048 characters.
_NAME = r"(?:[A-Za-z0-9_.\-]+|(?:/[A-Za-z0-9_.\-]+)+)"
_NAME_RE = re.compile(_NAME)
_SELECTOR = r"(?::[A-Za-z0-9_.\-]{1,100})?"
_NAME_WITH_SELECTOR_RE = re.compile(rf"(?P<name>{_NAME}){_SELECTOR}")
_ARN_RE = re.compile(
    rf"(?P<arn>arn:{PARTITION}:ssm:{REGION}:(?:\d{{12}})?:parameter/"
    rf"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*)"
)
_ARN_WITH_SELECTOR_RE = re.compile(rf"{_ARN_RE.pattern}{_SELECTOR}")
_PATH_RE = re.compile(r"/|(?:/[A-Za-z0-9_.\-]+)+/?")
_MAX_NAME = 2048
_PUBLIC_PREFIX = "/aws/service/"
_SECRETS_PREFIX = "/aws/reference/secretsmanager/"


_refuse = refuser("ssm")
_param = param_reader("ssm")
_on = rule_maker(_PREFIX)

_ONLY_PARAMETER_STORE = "only Parameter Store operations are supported"


def _parameter_arn(
    op: Operation, ctx: MappingContext, value: Any, key: str, *, selector: bool
) -> str:
    """A parameter name or ARN (with a version/label selector when ``selector``) -> its ARN."""
    if not isinstance(value, str) or len(value) > _MAX_NAME + 200:
        _refuse(op, f"{key} {value!r} is not a parameter name")
    if value.startswith("arn:"):
        match = (_ARN_WITH_SELECTOR_RE if selector else _ARN_RE).fullmatch(value)
        if match is None:
            _refuse(op, f"{key} {value!r} is not a parameter ARN")
        arn = match.group("arn")
        _check_name(op, key, "/" + arn.split(":parameter/", 1)[1])  # the name it stands for
        return arn
    match = (_NAME_WITH_SELECTOR_RE if selector else _NAME_RE).fullmatch(value)
    if match is None:
        _refuse(op, f"{key} {value!r} is not a valid parameter name")
    name = match.group("name") if selector else value
    _check_name(op, key, name)
    account = "" if name.startswith(_PUBLIC_PREFIX) else ctx.account
    return f"arn:{ctx.partition}:ssm:{ctx.region}:{account}:parameter/{name.removeprefix('/')}"


def _check_name(op: Operation, key: str, name: str) -> None:
    """Refuse names that reach Secrets Manager or that hold '.'/'..' segments, however named.

    "/aws/reference/secretsmanager/NAME" returns a secret's value: it needs
    secretsmanager:GetSecretValue on the secret, which a Parameter Store grant never names.
    AWS reserves the "aws" prefix whatever its case, so the check ignores case too.
    """
    lowered = name.lower()
    if lowered.startswith(_SECRETS_PREFIX) or _SECRETS_PREFIX.startswith(lowered.rstrip("/") + "/"):
        _refuse(
            op,
            f"{key} {name!r} reads Secrets Manager secrets through Parameter Store, which "
            "is not mapped",
        )
    if any(segment in (".", "..") for segment in name.split("/")):
        _refuse(op, f"{key} {name!r} has a '.' or '..' segment")


def _name(selector: bool = False) -> Arns:
    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        return [_parameter_arn(op, ctx, _param(op, "Name"), "Name", selector=selector)]

    return arns


def _names(selector: bool = False) -> Arns:
    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        names = _param(op, "Names")
        if not isinstance(names, list) or not names:
            _refuse(op, "Names must list at least one parameter")
        return [_parameter_arn(op, ctx, n, "Names entry", selector=selector) for n in names]

    return arns


def _path(op: Operation, ctx: MappingContext) -> list[str]:
    path = _param(op, "Path")
    if not isinstance(path, str) or len(path) > _MAX_NAME or not _PATH_RE.fullmatch(path):
        _refuse(op, f"Path {path!r} is not a parameter hierarchy")
    if path == "/":
        _refuse(op, "Path '/' covers every parameter, which has no exact IAM resource")
    _check_name(op, "Path", path)
    account = "" if path.startswith(_PUBLIC_PREFIX) else ctx.account
    return [f"arn:{ctx.partition}:ssm:{ctx.region}:{account}:parameter/{path[1:]}"]


def _tagged_parameter(op: Operation, ctx: MappingContext) -> list[str]:
    if op.params.get("ResourceType") != "Parameter":
        _refuse(op, f"{_ONLY_PARAMETER_STORE} (ResourceType must be Parameter)")
    return [_parameter_arn(op, ctx, _param(op, "ResourceId"), "ResourceId", selector=False)]


def _put_parameter(op: Operation, ctx: MappingContext) -> list[Access]:
    parameter = _name()(op, ctx)[0]
    if parameter.split(":")[4] == "":
        _refuse(op, "AWS public parameters cannot be written")
    out = [Access("ssm:PutParameter", parameter)]
    if op.params.get("DataType") == "aws:ec2:image":
        # Parameter Store checks the AMI id with the caller's EC2 rights, which tells the caller
        # whether that image exists and is visible to jitgate (found in review).
        out.append(Access("ec2:DescribeImages", "*"))
    if op.params.get("Tags"):
        out.append(Access("ssm:AddTagsToResource", parameter))
    key = op.params.get("KeyId")
    if key is not None:
        # A SecureString under a customer managed key is encrypted with the caller's rights:
        # a standard parameter by kms:Encrypt, an advanced one by envelope encryption
        # (kms:GenerateDataKey). Without Tier=Standard the tier may be advanced (the account's
        # default tier, or the parameter's own when it is overwritten): both are needed (found
        # in review).
        key_arn = kms_key_arn(op, ctx, key, "KeyId", _refuse)
        out.append(Access("kms:Encrypt", key_arn))
        if op.params.get("Tier") != "Standard":
            out.append(Access("kms:GenerateDataKey", key_arn))
    return out


_RULES: dict[str, Rule] = {
    "GetParameter": _on(_name(selector=True)),
    "GetParameters": _on(_names(selector=True)),
    "GetParameterHistory": _on(_name()),
    "GetParametersByPath": _on(_path),
    "DescribeParameters": _on(star),
    "PutParameter": _put_parameter,
    "DeleteParameter": _on(_name()),
    "DeleteParameters": _on(_names()),
    "LabelParameterVersion": _on(_name()),
    "UnlabelParameterVersion": _on(_name()),
    "AddTagsToResource": _on(_tagged_parameter),
    "RemoveTagsFromResource": _on(_tagged_parameter),
    "ListTagsForResource": _on(_tagged_parameter),
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("ssm", _RULES, default_refusal=_ONLY_PARAMETER_STORE)
