"""Errors that cross module boundaries. Each carries a message fit to show the caller."""

from __future__ import annotations


class JitgateError(Exception):
    """Base class: ``code`` is a stable machine-readable name, ``str(self)`` the human message."""

    code = "error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(JitgateError):
    code = "invalid_request"
    status = 400


class ScopeError(JitgateError):
    """A requested action or resource is not acceptable; the message names it and why."""

    code = "invalid_scope"
    status = 400


class NotFound(JitgateError):
    code = "not_found"
    status = 404


class NotYours(NotFound):
    """Something that exists but belongs to another agent: answered as if it did not exist
    (its existence is not revealed), and recorded as a denial like any other refusal."""


class Forbidden(JitgateError):
    code = "forbidden"
    status = 403


class Unauthorized(JitgateError):
    code = "unauthorized"
    status = 401


class Conflict(JitgateError):
    """The state changed under the caller (for example two approvers at once)."""

    code = "conflict"
    status = 409


class PolicyError(JitgateError):
    """A policy file failed to parse or validate; names file, line and reason."""

    code = "policy_error"
    status = 500


class AuditUnavailable(JitgateError):
    """The audit log cannot be written: nothing may proceed."""

    code = "audit_unavailable"
    status = 503


class AuditNotDurable(AuditUnavailable):
    """The event was committed but could not be made durable (its fsync failed): nothing may
    proceed, and what was waiting for it should record that it did not."""
