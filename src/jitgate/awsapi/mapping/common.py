"""What every per-service mapping module shares: ARN fragments, refusals, the rule dispatcher.

Each module keeps a declarative table ``_RULES`` from operation name to a rule
``(Operation, MappingContext) -> list[Access]``, and optionally ``_REFUSED`` naming why an
operation is refused; :func:`access_function` turns those into the module's ``access_for``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation, UnsupportedOperation

PARTITION = r"aws(?:-[a-z]+)*"
REGION = r"[a-z]{2}(?:-[a-z]+)+-\d+"
ROLE_ARN_RE = re.compile(rf"arn:{PARTITION}:iam::\d{{12}}:role/[\w+=,.@/\-]{{1,512}}")
NOT_MAPPED = "this operation is not mapped to IAM by jitgate"
KMS_KEY_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}"
_KMS_KEY_ID_RE = re.compile(KMS_KEY_ID)
_KMS_KEY_ARN_RE = re.compile(rf"arn:{PARTITION}:kms:{REGION}:\d{{12}}:key/(?:{KMS_KEY_ID})")

Rule = Callable[[Operation, MappingContext], list[Access]]
Arns = Callable[[Operation, MappingContext], list[str]]


def refuser(service: str) -> Callable[[Operation, str], NoReturn]:
    """``refuse(op, why)`` raising UnsupportedOperation("<service> <Operation>: <why>")."""

    def refuse(op: Operation, why: str) -> NoReturn:
        raise UnsupportedOperation(f"{service} {op.name}: {why}")

    return refuse


def param_reader(service: str) -> Callable[..., Any]:
    """``param(op, key, required=True)``: a parameter, refusing the call when a required one is missing."""
    refuse = refuser(service)

    def param(op: Operation, key: str, *, required: bool = True) -> Any:
        value = op.params.get(key)
        if value is None and required:
            refuse(op, f"the request has no {key}")
        return value

    return param


def dedupe(accesses: Iterable[Access]) -> list[Access]:
    return list(dict.fromkeys(accesses))


def access_function(
    service: str,
    rules: Mapping[str, Rule],
    refused: Mapping[str, str] | None = None,
    default_refusal: str = NOT_MAPPED,
) -> Callable[[Operation, MappingContext], list[Access]]:
    """The module's ``access_for``: the rule's pairs, or UnsupportedOperation naming why not."""
    reasons = refused or {}

    def access_for(op: Operation, ctx: MappingContext) -> list[Access]:
        """Every (IAM action, resource ARN) pair ``op`` needs; UnsupportedOperation if not exact."""
        rule = rules.get(op.name)
        if rule is None:
            raise UnsupportedOperation(
                f"{service} {op.name}: {reasons.get(op.name, default_refusal)}"
            )
        try:
            return dedupe(rule(op, ctx))
        except UnsupportedOperation:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise UnsupportedOperation(
                f"{service} {op.name}: the request parameters could not be understood"
            ) from exc

    return access_for


def star(op: Operation, ctx: MappingContext) -> list[str]:
    """The ARN list of an action that has no resource types."""
    return ["*"]


def rule_maker(prefix: str) -> Callable[..., Rule]:
    """``on(arns, action=None)``: a rule granting ``action`` (default ``<prefix>:<Operation>``)
    on every ARN that ``arns`` yields."""

    def on(arns: Arns, action: str | None = None) -> Rule:
        def rule(op: Operation, ctx: MappingContext) -> list[Access]:
            name = action or f"{prefix}:{op.name}"
            return [Access(name, arn) for arn in arns(op, ctx)]

        return rule

    return on


def kms_key_arn(
    op: Operation,
    ctx: MappingContext,
    value: Any,
    key: str,
    refuse: Callable[[Operation, str], NoReturn],
) -> str:
    """The ARN of the customer managed key a parameter names (key id or key ARN).

    Another service using a KMS key on the caller's behalf does so with the caller's KMS
    rights, here jitgate's: the grant must name the key. An alias is refused: it names no key
    exactly (the key behind it can change).
    """
    if isinstance(value, str):
        if _KMS_KEY_ARN_RE.fullmatch(value):
            return value
        if _KMS_KEY_ID_RE.fullmatch(value):
            return f"arn:{ctx.partition}:kms:{ctx.region}:{ctx.account}:key/{value}"
    refuse(
        op,
        f"{key} {value!r} is not a KMS key id or key ARN (an alias does not name its key exactly)",
    )


def encryption_key_accesses(
    op: Operation,
    ctx: MappingContext,
    attributes: Any,
    aws_managed: str,
    refuse: Callable[[Operation, str], NoReturn],
) -> list[Access]:
    """A queue's or topic's ``KmsMasterKeyId`` attribute: every later send or publish encrypts
    with that key under the sender's KMS rights (jitgate's), so the grant must name the key.
    The service's own AWS managed key (``alias/aws/sqs``, ``alias/aws/sns``) needs nothing."""
    if not isinstance(attributes, Mapping):
        return []
    value = attributes.get("KmsMasterKeyId")
    if value is None or value == "" or value == aws_managed:
        return []
    key = kms_key_arn(op, ctx, value, "KmsMasterKeyId", refuse)
    return [Access("kms:GenerateDataKey", key), Access("kms:Decrypt", key)]
