"""The agent SDK: ask jitgate for a grant and use it with any AWS SDK.

``Gate`` (boto3) and ``AsyncGate`` (aiobotocore) find jitgate through ``JITGATE_URL`` and
authenticate with ``JITGATE_TOKEN`` unless given ``url=`` and ``token=``. See docs/sdk.md.
"""

from jitgate.client._core import github_actions_token, token_file
from jitgate.client.aio import AsyncGate
from jitgate.client.errors import (
    ApprovalTimeout,
    AuthenticationFailed,
    GrantDenied,
    GrantError,
    GrantNotActive,
    JitgateClientError,
    JitgateUnavailable,
    NotFound,
    PermissionDenied,
    RequestRefused,
    ScopeUnavailable,
)
from jitgate.client.gate import Gate
from jitgate.client.models import Grant, GrantCredentials, PlannedScope
from jitgate.client.sessions import JitgateSession

__all__ = [
    "ApprovalTimeout",
    "AsyncGate",
    "AuthenticationFailed",
    "Gate",
    "Grant",
    "GrantCredentials",
    "GrantDenied",
    "GrantError",
    "GrantNotActive",
    "JitgateClientError",
    "JitgateSession",
    "JitgateUnavailable",
    "NotFound",
    "PermissionDenied",
    "PlannedScope",
    "RequestRefused",
    "ScopeUnavailable",
    "github_actions_token",
    "token_file",
]
