"""Control-plane routes for the record's integrity (mounted by ``api.app``).

- ``GET /v1/audit/keys``: the public keys that sign checkpoints, with validity windows.
  Public and secret-free by design: anyone verifying a copy needs them.
- ``GET /v1/audit/status``: checkpoints and how far behind each sink is (auditors).
- ``GET /v1/audit/checkpoints?after=N``: signed checkpoints (auditors).
- ``GET /v1/audit/integrity``: the full database verification (auditors).
- ``GET /v1/audit/metrics``: the status as Prometheus text (auditors, approvers, admins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from jitgate.audit.checkpoint import load_checkpoints
from jitgate.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from jitgate.core import Jitgate


def audit_integrity_router(core: Jitgate) -> APIRouter:
    router = APIRouter()

    def auditor(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        principal = core.identity.authenticate(token.strip())
        request.state.principal = principal
        if principal.is_agent:
            raise Forbidden("agent tokens cannot use this endpoint")
        if not principal.can_read_audit():
            raise Forbidden("this endpoint needs an auditor, approver or admin")

    @router.get("/v1/audit/keys")
    def audit_keys() -> dict[str, Any]:
        return core.integrity.public_keys()

    @router.get("/v1/audit/status")
    def audit_status(request: Request) -> dict[str, Any]:
        auditor(request)
        return core.integrity.status()

    @router.get("/v1/audit/checkpoints")
    def audit_checkpoints(request: Request, after: int = 0, limit: int = 100) -> dict[str, Any]:
        auditor(request)
        with core.db.read() as connection:
            found = load_checkpoints(
                connection, after=max(0, after), limit=max(1, min(limit, 1000))
            )
        return {
            "checkpoints": [
                {**cp.summary(), "body": cp.body, "signature": cp.signature} for cp in found
            ]
        }

    @router.get("/v1/audit/integrity")
    def audit_integrity(request: Request) -> dict[str, Any]:
        auditor(request)
        return core.integrity.verify().as_dict()

    @router.get("/v1/audit/metrics", response_class=PlainTextResponse)
    def audit_metrics(request: Request) -> str:
        # The head sequence number alone tells how busy everyone else is: auditors only
        # (Prometheus sends a bearer token with `authorization` in its scrape config).
        auditor(request)
        return core.integrity.metrics()

    return router
