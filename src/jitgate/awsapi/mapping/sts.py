"""AWS STS: operation -> (IAM action, resource ARN) pairs.

GetCallerIdentity needs no scope: the gateway answers it itself with the grant's identity.
AssumeRole needs ``sts:AssumeRole`` on the role, plus ``sts:TagSession`` when it passes session
tags, ``sts:SetSourceIdentity`` when it sets a source identity and ``sts:SetContext`` when it
passes provided contexts (all on the role); the gateway also refuses it when the credentials it
would return outlive the grant (``jitgate.gateway.app.outliving_grant``), so an expired
grant leaves nothing that works. Every other STS operation is refused: jitgate does not mint
further credentials for agents.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation, UnsupportedOperation

_ROLE_ARN_RE = re.compile(r"arn:aws(?:-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/\-]{1,512}")

_Rule = Callable[[Operation, MappingContext], list[Access]]


def _get_caller_identity(op: Operation, ctx: MappingContext) -> list[Access]:
    return []


def _assume_role(op: Operation, ctx: MappingContext) -> list[Access]:
    role = op.params.get("RoleArn")
    if not isinstance(role, str) or not _ROLE_ARN_RE.fullmatch(role):
        raise UnsupportedOperation(f"sts AssumeRole: RoleArn {role!r} is not an IAM role ARN")
    out = [Access("sts:AssumeRole", role)]
    if op.params.get("Tags") or op.params.get("TransitiveTagKeys"):
        out.append(Access("sts:TagSession", role))
    if op.params.get("SourceIdentity") is not None:
        out.append(Access("sts:SetSourceIdentity", role))
    if op.params.get("ProvidedContexts"):
        out.append(Access("sts:SetContext", role))
    return out


_RULES: dict[str, _Rule] = {
    "GetCallerIdentity": _get_caller_identity,
    "AssumeRole": _assume_role,
}

_NO_CREDENTIALS = "jitgate does not mint further credentials for agents"

_REFUSED: dict[str, str] = {
    "DecodeAuthorizationMessage": "it reveals the authorization details of jitgate's own "
    "identity, which agents are not given",
    "GetAccessKeyInfo": "it looks up access keys, which agents do not hold",
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


def access_for(op: Operation, ctx: MappingContext) -> list[Access]:
    """Every (IAM action, resource ARN) pair ``op`` needs; UnsupportedOperation if refused."""
    rule = _RULES.get(op.name)
    if rule is None:
        reason = _REFUSED.get(op.name, _NO_CREDENTIALS)
        raise UnsupportedOperation(f"sts {op.name}: {reason}")
    return rule(op, ctx)
