"""Which (IAM action, resource ARN) pairs an identified AWS call needs.

One module per service (``mapping/<service>.py``) holds a small declarative table and exposes
``SUPPORTED: frozenset[str]`` (the operation names it maps) and
``access_for(op: Operation, ctx: MappingContext) -> list[Access]``. This package only
dispatches, and fails closed: a service without a module, an operation outside ``SUPPORTED``,
or a mapping that names no access at all is refused with UnsupportedOperation.

The same function answers "what scope does this planned call need?" for agents and humans:
build an :class:`~jitgate.awsapi.types.Operation` from botocore-style parameters and ask.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Final

from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation, UnsupportedOperation

__all__ = ["MAPPED_SERVICES", "MappingContext", "required_access", "supported_operations"]

#: botocore service name -> module under jitgate.awsapi.mapping
_MODULES: Final[dict[str, str]] = {
    "s3": "s3",
    "dynamodb": "dynamodb",
    "sqs": "sqs",
    "sns": "sns",
    "secretsmanager": "secretsmanager",
    "ssm": "ssm",
    "kms": "kms",
    "lambda": "lambda_",
    "logs": "logs",
    "sts": "sts",
}

#: Services with a mapping module (the module may still be missing at run time: then refused).
MAPPED_SERVICES: Final[frozenset[str]] = frozenset(_MODULES)


def _unsupported_service(service: str) -> UnsupportedOperation:
    return UnsupportedOperation(f"service '{service}' is not supported by jitgate")


@functools.cache
def _module(service: str) -> ModuleType:
    """The service's mapping module, imported once (import_module costs ~3 us a call)."""
    name = _MODULES.get(service)
    if name is None:
        raise _unsupported_service(service)
    qualified = f"{__name__}.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            raise _unsupported_service(service) from None
        raise


def supported_operations(service: str) -> frozenset[str]:
    """The operation names jitgate maps for ``service`` (empty when it maps none)."""
    try:
        module = _module(service)
    except UnsupportedOperation:
        return frozenset()
    supported = getattr(module, "SUPPORTED", frozenset())
    return frozenset(supported)


def required_access(
    op: Operation, *, account: str, region: str, partition: str = "aws"
) -> list[Access]:
    """Every (action, ARN) the grant must cover for ``op`` to be forwarded.

    Raises UnsupportedOperation when the operation cannot be mapped exactly.
    """
    module = _module(op.service)
    supported = getattr(module, "SUPPORTED", frozenset())
    ctx = MappingContext(account=account, region=region, partition=partition)
    if op.name not in supported:
        # Let the service module say why it refuses (its reasons are more useful to the agent);
        # whatever it answers, an operation outside SUPPORTED is never forwarded.
        try:
            module.access_for(op, ctx)
        except UnsupportedOperation:
            raise
        except Exception:  # noqa: BLE001, S110 - any other failure: the generic refusal below
            pass
        raise UnsupportedOperation(f"operation {op.service}:{op.name} is not supported by jitgate")
    try:
        accesses = list(module.access_for(op, ctx))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Parameters the mapping could not read (missing, or not the expected type): refuse.
        raise UnsupportedOperation(
            f"operation {op.service}:{op.name}: request parameters could not be mapped"
        ) from exc
    if not accesses:
        # Every forwarded call must be covered by something the grant names.
        raise UnsupportedOperation(f"operation {op.service}:{op.name} maps to no IAM access")
    for access in accesses:
        if not isinstance(access, Access) or ":" not in access.action or not access.arn:
            raise UnsupportedOperation(f"operation {op.service}:{op.name} has no exact IAM mapping")
    return accesses
