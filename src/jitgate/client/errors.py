"""Exceptions the agent SDK raises. Each message is one clear sentence fit to show a person.

``JitgateClientError`` is the base class; catch it to handle every jitgate failure at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jitgate.client.models import Grant


class JitgateClientError(Exception):
    """A request to jitgate failed. ``code`` is jitgate's stable error code when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class JitgateUnavailable(JitgateClientError):
    """jitgate could not be reached (connection refused, timeout, DNS)."""


class AuthenticationFailed(JitgateClientError):
    """The token was refused (HTTP 401): wrong, disabled or expired."""


class PermissionDenied(JitgateClientError):
    """The token is valid but may not do this (HTTP 403)."""


class NotFound(JitgateClientError):
    """No such grant or agent, or not one this token may see (HTTP 404)."""


class RequestRefused(JitgateClientError):
    """jitgate refused the request as invalid (HTTP 400): the message names the offending item,
    for example an unknown action, an ARN that does not fit, a wildcard or a duration above the
    allowed maximum."""


class GrantError(JitgateClientError):
    """A grant exists but cannot be used; ``grant`` is its last known state."""

    def __init__(self, message: str, grant: Grant) -> None:
        super().__init__(message, code=grant.status)
        self.grant = grant


class GrantDenied(GrantError):
    """The policy or an approver denied the grant. ``reasons`` says why."""

    @property
    def reasons(self) -> list[str]:
        return self.grant.reasons


class GrantNotActive(GrantError):
    """The grant ended (lapsed, revoked or expired) before it could be used."""


class ApprovalTimeout(GrantError):
    """Nobody approved the grant in time. The SDK withdrew (revoked) the pending request."""


class ScopeUnavailable(JitgateClientError):
    """jitgate cannot map the planned call to IAM (the AWS endpoint would refuse it too)."""
