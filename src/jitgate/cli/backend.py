"""Where CLI commands run: against a server over HTTP, or directly on the local store.

Both backends return the same JSON-shaped dicts as the HTTP API, so the CLI renders one shape.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from jitgate.api.app import explain
from jitgate.core import Jitgate
from jitgate.errors import JitgateError
from jitgate.identity.service import LOCAL_ADMIN


class BackendError(Exception):
    """A refusal or failure, with the one-line message to print."""


class Backend(Protocol):
    def create_agent(self, name: str, groups: list[str], owner: str | None) -> dict[str, Any]: ...
    def list_agents(self) -> list[dict[str, Any]]: ...
    def set_agent_disabled(self, name: str, disabled: bool) -> dict[str, Any]: ...
    def create_user(
        self, name: str, role: str, *, groups: list[str] = ..., password: str | None = ...
    ) -> dict[str, Any]: ...
    def request_grant(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def list_grants(
        self, status: str | None, agent: str | None, limit: int
    ) -> list[dict[str, Any]]: ...
    def get_grant(self, grant_id: str) -> dict[str, Any]: ...
    def grant_calls(self, grant_id: str) -> list[dict[str, Any]]: ...
    def decide(
        self, grant_id: str, verb: str, comment: str, fingerprint: str | None = ...
    ) -> dict[str, Any]: ...
    def audit_events(
        self, after_seq: int, limit: int, grant_id: str | None, agent: str | None
    ) -> list[dict[str, Any]]: ...
    def audit_verify(self) -> dict[str, Any]: ...
    def policy_check(self, body: dict[str, Any]) -> dict[str, Any]: ...


class LocalBackend:
    """Runs commands in-process on the store under $JITGATE_HOME, as the host's admin."""

    def __init__(self, core: Jitgate) -> None:
        self.core = core

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JitgateError as exc:
            raise BackendError(exc.message) from None

    def create_agent(self, name: str, groups: list[str], owner: str | None) -> dict[str, Any]:
        record, token = self._call(self.core.identity.create_agent, name, groups, owner=owner)
        return {**record.as_dict(), "token": token}

    def list_agents(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in self.core.identity.list_agents()]

    def set_agent_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        record = self._call(
            self.core.identity.set_agent_disabled,
            name,
            disabled,
            on_disable=self.core.grants.end_all_for_agent,
        )
        return record.as_dict()

    def create_user(
        self, name: str, role: str, *, groups: list[str] = (), password: str | None = None
    ) -> dict[str, Any]:
        record, token = self._call(
            self.core.identity.create_user, name, role, groups=groups, password=password
        )
        return {**record, "token": token}

    def set_password(self, name: str, password: str) -> None:
        self._call(self.core.identity.set_password, name, password)

    def set_user_disabled(self, name: str, disabled: bool) -> None:
        self._call(self.core.identity.set_user_disabled, name, disabled)

    def request_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        grant, credentials = self._call(
            self.core.grants.request,
            LOCAL_ADMIN,
            actions=body["actions"],
            resources=body["resources"],
            duration_seconds=body.get("duration_seconds"),
            reason=body.get("reason", ""),
            agent=body.get("agent"),
            one_call=bool(body.get("one_call")),
            operation=body.get("operation"),
        )
        return grant.as_dict(credentials)

    def list_grants(
        self, status: str | None, agent: str | None, limit: int
    ) -> list[dict[str, Any]]:
        grants = self._call(
            self.core.grants.list, LOCAL_ADMIN, status=status, agent=agent, limit=limit
        )
        return [g.as_dict() for g in grants]

    def get_grant(self, grant_id: str) -> dict[str, Any]:
        grant, _ = self._call(self.core.grants.get, LOCAL_ADMIN, grant_id)
        return grant.as_dict()

    def grant_calls(self, grant_id: str) -> list[dict[str, Any]]:
        self.get_grant(grant_id)
        return [
            e.as_dict()
            for e in self.core.audit.events(grant_id=grant_id, type_prefix="call.", limit=10_000)
        ]

    def decide(
        self, grant_id: str, verb: str, comment: str, fingerprint: str | None = None
    ) -> dict[str, Any]:
        if verb == "approve":
            return self._call(
                self.core.grants.approve, LOCAL_ADMIN, grant_id, comment, fingerprint=fingerprint
            ).as_dict()
        method = {"deny": self.core.grants.deny, "revoke": self.core.grants.revoke}[verb]
        return self._call(method, LOCAL_ADMIN, grant_id, comment).as_dict()

    def audit_events(
        self, after_seq: int, limit: int, grant_id: str | None, agent: str | None
    ) -> list[dict[str, Any]]:
        return [
            e.as_dict()
            for e in self.core.audit.events(
                after_seq=after_seq, limit=limit, grant_id=grant_id, agent=agent
            )
        ]

    def audit_tail(self, count: int) -> list[dict[str, Any]]:
        return [
            e.as_dict() for e in reversed(self.core.audit.events(limit=count, newest_first=True))
        ]

    def audit_verify(self) -> dict[str, Any]:
        return self.core.audit.verify().as_dict()

    def policy_check(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            explain,
            self.core,
            body["agent"],
            body["actions"],
            body["resources"],
            body.get("duration_seconds", 300),
            body.get("reason", "policy check"),
        )


class RemoteBackend:
    """Runs commands against a jitgate server's control-plane API with a bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach jitgate at {self.client.base_url}: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            message = payload.get("message") if isinstance(payload, dict) else None
            raise BackendError(message or f"HTTP {response.status_code} from {path}")
        return payload

    def create_agent(self, name: str, groups: list[str], owner: str | None) -> dict[str, Any]:
        return self._send(
            "POST", "/v1/agents", json={"name": name, "groups": groups, "owner": owner}
        )

    def list_agents(self) -> list[dict[str, Any]]:
        return self._send("GET", "/v1/agents")["agents"]

    def set_agent_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        return self._send("POST", f"/v1/agents/{name}/{'disable' if disabled else 'enable'}")

    def create_user(
        self, name: str, role: str, *, groups: list[str] = (), password: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "role": role, "groups": list(groups)}
        if password is not None:
            body["password"] = password
        return self._send("POST", "/v1/users", json=body)

    def set_password(self, name: str, password: str) -> None:
        self._send("POST", f"/v1/users/{name}/password", json={"password": password})

    def set_user_disabled(self, name: str, disabled: bool) -> None:
        self._send("POST", f"/v1/users/{name}/{'disable' if disabled else 'enable'}")

    def request_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send(
            "POST", "/v1/grants", json={k: v for k, v in body.items() if v is not None}
        )

    def list_grants(
        self, status: str | None, agent: str | None, limit: int
    ) -> list[dict[str, Any]]:
        params = {
            k: v
            for k, v in {"status": status, "agent": agent, "limit": limit}.items()
            if v is not None
        }
        return self._send("GET", "/v1/grants", params=params)["grants"]

    def get_grant(self, grant_id: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/grants/{grant_id}")

    def grant_calls(self, grant_id: str) -> list[dict[str, Any]]:
        return self._send("GET", f"/v1/grants/{grant_id}/calls")["calls"]

    def decide(
        self, grant_id: str, verb: str, comment: str, fingerprint: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"comment": comment}
        if fingerprint is not None:
            body["fingerprint"] = fingerprint
        return self._send("POST", f"/v1/grants/{grant_id}/{verb}", json=body)

    def audit_events(
        self, after_seq: int, limit: int, grant_id: str | None, agent: str | None
    ) -> list[dict[str, Any]]:
        params = {
            k: v
            for k, v in {
                "after_seq": after_seq,
                "limit": limit,
                "grant_id": grant_id,
                "agent": agent,
            }.items()
            if v is not None
        }
        return self._send("GET", "/v1/audit", params=params)["events"]

    def audit_tail(self, count: int) -> list[dict[str, Any]]:
        return self._send("GET", "/v1/audit", params={"tail": count})["events"]

    def audit_verify(self) -> dict[str, Any]:
        return self._send("GET", "/v1/audit/verify")

    def policy_check(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/v1/policy/check", json=body)
