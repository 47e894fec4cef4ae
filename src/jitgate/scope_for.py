"""What scope does a planned AWS call need? The same answer the AWS endpoint will enforce.

A planned call (service, operation, parameters, region) is serialized by botocore exactly as an
SDK would send it, then identified and mapped by the gateway's own code
(:func:`jitgate.awsapi.operations.identify` and :func:`jitgate.awsapi.mapping.required_access`).
So the answer is not a second opinion: an operation the gateway would refuse is refused here
with the gateway's reason, and the (action, ARN) pairs are those it will check.

Two extras beyond one call:

- ``each_key_under_prefix``: an S3 object operation repeated for every key under a prefix (what
  ``aws s3 cp --recursive`` and ``aws s3 sync`` do). The pair's ARN becomes a prefix ARN
  (``arn:aws:s3:::bucket/prefix*``), which only a policy that allows prefix grants accepts.
- the answer includes ``grant_request``: the actions and resources to ask for, checked against
  the IAM catalog like any grant request.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ParamValidationError, UnknownServiceError

from jitgate.awsapi.mapping import required_access
from jitgate.awsapi.operations import identify, needs_body
from jitgate.awsapi.types import Access, AwsRequest, Operation, UnsupportedOperation
from jitgate.errors import InvalidRequest, JitgateError, ScopeError
from jitgate.scope import build_scope

__all__ = ["PlannedCall", "ScopeAnswer", "plan", "planned_call_from_json"]

_PLANNING_ENDPOINT = "http://jitgate-planning.invalid"
MAX_CALLS = 50


class UnsupportedCall(JitgateError):
    """The gateway would refuse this call: it cannot be mapped to IAM exactly."""

    code = "unsupported_operation"
    status = 400


@dataclass(frozen=True)
class PlannedCall:
    service: str  # boto3 service name: "s3", "dynamodb", ...
    operation: str  # "GetObject", "get_object" or "get-object"
    params: Mapping[str, Any] = field(default_factory=dict)
    region: str = "us-east-1"
    each_key_under_prefix: bool = False


@dataclass(frozen=True)
class CallScope:
    call: PlannedCall
    operation: str  # the botocore operation name as identified
    access: tuple[Access, ...]
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.call.service,
            "operation": self.operation,
            "region": self.call.region,
            "access": [_access_dict(a) for a in self.access],
        }
        if self.call.each_key_under_prefix:
            out["each_key_under_prefix"] = True
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class ScopeAnswer:
    account: str
    calls: tuple[CallScope, ...]

    @property
    def access(self) -> list[Access]:
        seen: dict[tuple[str, str], Access] = {}
        for call in self.calls:
            for access in call.access:
                seen.setdefault((access.action, access.arn), access)
        return list(seen.values())

    @property
    def actions(self) -> list[str]:
        return list(dict.fromkeys(a.action for a in self.access))

    @property
    def resources(self) -> list[str]:
        return list(dict.fromkeys(a.arn for a in self.access))

    def notes(self) -> list[str]:
        notes = [c.note for c in self.calls if c.note]
        access = self.access
        if any(a.match == "secret-name" for a in access):
            notes.append(
                "a secret named without its random suffix is covered by a grant of that same "
                "name-only ARN"
            )
        if any(a.arn.endswith("*") for a in access):
            notes.append(
                "a resource ending in '*' is a prefix grant: the policy must allow prefix grants "
                "for it"
            )
        return list(dict.fromkeys(notes))

    def as_dict(self) -> dict[str, Any]:
        actions, resources = self.actions, self.resources
        out: dict[str, Any] = {
            "account": self.account,
            "calls": [c.as_dict() for c in self.calls],
            "access": [_access_dict(a) for a in self.access],
            "actions": actions,
            "resources": resources,
            "notes": self.notes(),
        }
        notes = out["notes"]
        if actions:
            request: dict[str, Any] = {"actions": actions, "resources": resources}
            try:
                scope = build_scope(actions, resources)
            except ScopeError as exc:
                request["problem"] = exc.message
            else:
                needed = {(a.action, a.arn) for a in self.access}
                extra = [
                    f"{p.action} on {p.resource}"
                    for p in scope.pairs
                    if (p.action, p.resource) not in needed
                ]
                if extra:
                    notes.append(
                        "one grant of these actions and resources would also cover "
                        + "; ".join(extra)
                        + " (request separate grants to keep each action to its own resources)"
                    )
            out["grant_request"] = request
        else:
            out["grant_request"] = None
        return out


def _access_dict(access: Access) -> dict[str, str]:
    return {"action": access.action, "arn": access.arn, "match": access.match}


# --- serialization --------------------------------------------------------------------------
class _Captured(Exception):  # noqa: N818 - control flow, never escapes this module
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Captured(request)


_lock = threading.Lock()


@functools.cache
def _session() -> botocore.session.Session:
    # A session of its own, blind to the environment's profiles: planning never needs them.
    session = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    session.set_credentials("AKIAJITGATEPLANNING", "planning-only", "planning-only")
    return session


@functools.lru_cache(maxsize=64)
def _client(service: str, region: str) -> Any:
    with _lock:
        client = _session().create_client(
            service,
            region_name=region,
            endpoint_url=_PLANNING_ENDPOINT,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
    client.meta.events.register("before-send", _capture)
    return client


def _operation_name(client: Any, service: str, name: str) -> str:
    names = client.meta.service_model.operation_names
    if name in names:
        return str(name)
    wanted = name.replace("-", "_").lower()
    for candidate in names:
        if xform_name(candidate) == wanted:
            return str(candidate)
    raise InvalidRequest(f"{service} has no operation {name!r}")


def _serialize(call: PlannedCall) -> tuple[str, AwsRequest]:
    """The wire request botocore would send for ``call`` (to a planning endpoint)."""
    try:
        client = _client(call.service, call.region)
    except UnknownServiceError:
        raise InvalidRequest(f"unknown AWS service {call.service!r}") from None
    except BotoCoreError as exc:
        raise InvalidRequest(f"{call.service}: {exc}") from None
    name = _operation_name(client, call.service, call.operation)
    if not isinstance(call.params, Mapping):
        raise InvalidRequest("params must be an object of the call's parameters")
    try:
        getattr(client, xform_name(name))(**dict(call.params))
    except _Captured as captured:
        request = captured.request
    except ParamValidationError as exc:
        raise InvalidRequest(f"{call.service} {name}: {exc}") from None
    except (BotoCoreError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"{call.service} {name}: parameters not accepted: {exc}") from None
    else:  # pragma: no cover - the handler always raises
        raise InvalidRequest(f"{call.service} {name}: nothing was sent")
    url = urlsplit(request.url)
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    if isinstance(body, str):
        body = body.encode()
    headers = {
        k.lower(): (v.decode("utf-8") if isinstance(v, bytes) else str(v))
        for k, v in request.headers.items()
        if k.lower() not in ("authorization", "x-amz-security-token", "x-amz-date")
    }
    signing_name = client.meta.service_model.signing_name
    return name, AwsRequest(
        method=request.method,
        raw_path=url.path or "/",
        query=url.query,
        headers=headers,
        body=body or b"",
        service=signing_name,
        region=call.region,
    )


def _identify(request: AwsRequest) -> Operation:
    """As the gateway does: name the operation without the body, then with it if needed."""
    if request.service == "s3":
        operation = identify(dataclasses.replace(request, body=None))
        if not needs_body(operation.service, operation.name):
            return operation
    return identify(request)


#: Appended to the key (and copy source) of an ``each_key_under_prefix`` call, then replaced by
#: "*" in the ARNs: the call is mapped as if for one key under the prefix.
_ANY_KEY = "jitgate-any-key"


def _for_any_key(call: PlannedCall) -> PlannedCall:
    params = dict(call.params)
    if call.service != "s3" or not isinstance(params.get("Key", ""), str):
        raise InvalidRequest("each_key_under_prefix applies to S3 object operations (with Key)")
    params["Key"] = params.get("Key", "") + _ANY_KEY
    if isinstance(params.get("CopySource"), str):
        params["CopySource"] = params["CopySource"] + _ANY_KEY
    return dataclasses.replace(call, params=params)


def scope_of_call(call: PlannedCall, account: str) -> CallScope:
    name, request = _serialize(_for_any_key(call) if call.each_key_under_prefix else call)
    try:
        operation = _identify(request)
        if operation.service == "sts" and operation.name == "GetCallerIdentity":
            return CallScope(call, operation.name, (), "sts:GetCallerIdentity needs no grant scope")
        access = required_access(operation, account=account, region=call.region)
    except UnsupportedOperation as exc:
        raise UnsupportedCall(
            f"jitgate's AWS endpoint would refuse {call.service} {name}: {exc}"
        ) from None
    if call.each_key_under_prefix:
        access = [_under_prefix(a) for a in access]
    return CallScope(call, operation.name, tuple(access))


def _under_prefix(access: Access) -> Access:
    if access.arn.endswith(_ANY_KEY):
        return Access(access.action, access.arn[: -len(_ANY_KEY)] + "*", access.match)
    return access


def plan(calls: Iterable[PlannedCall], account: str) -> ScopeAnswer:
    """The scope every call in ``calls`` needs, in the account jitgate signs with."""
    planned = list(calls)
    if not planned:
        raise InvalidRequest("name at least one planned call")
    if len(planned) > MAX_CALLS:
        raise InvalidRequest(f"too many planned calls: {len(planned)} (at most {MAX_CALLS})")
    return ScopeAnswer(account, tuple(scope_of_call(c, account) for c in planned))


def planned_call_from_json(value: Any, default_region: str) -> PlannedCall:
    """Read one planned call from JSON: {service, operation, params?, region?,
    each_key_under_prefix?}."""
    if not isinstance(value, dict):
        raise InvalidRequest("a planned call is an object with service, operation and params")
    allowed = {"service", "operation", "params", "region", "each_key_under_prefix"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field(s) in a planned call: {', '.join(unknown)}")
    service, operation = value.get("service"), value.get("operation")
    if not isinstance(service, str) or not service:
        raise InvalidRequest('a planned call needs service, e.g. "s3"')
    if not isinstance(operation, str) or not operation:
        raise InvalidRequest('a planned call needs operation, e.g. "GetObject"')
    params = value.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidRequest("params must be an object of the call's parameters")
    region = value.get("region") or default_region
    if not isinstance(region, str):
        raise InvalidRequest("region must be a string")
    prefix = value.get("each_key_under_prefix", False)
    if not isinstance(prefix, bool):
        raise InvalidRequest("each_key_under_prefix must be true or false")
    return PlannedCall(service, operation, params, region, prefix)


def planned_calls_from_body(body: Mapping[str, Any], default_region: str) -> Sequence[PlannedCall]:
    """``POST /v1/scope`` accepts one call, or ``{"calls": [...]}``."""
    if "calls" in body:
        if set(body) != {"calls"}:
            raise InvalidRequest('give either one call or {"calls": [...]}, not both')
        calls = body["calls"]
        if not isinstance(calls, list):
            raise InvalidRequest("calls must be a list of planned calls")
        return [planned_call_from_json(c, default_region) for c in calls]
    return [planned_call_from_json(dict(body), default_region)]
