"""The context a per-service mapping needs besides the operation itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MappingContext:
    """Where a call is executed: the account, region and partition that ARNs are built in.

    ``account`` is the 12-digit account id of the identity jitgate signs with upstream,
    ``region`` the region from the request's SigV4 scope, ``partition`` "aws", "aws-cn", ...
    """

    account: str
    region: str
    partition: str = "aws"
