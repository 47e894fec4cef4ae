"""The Scope of a grant: exact IAM actions x exact resource ARNs, validated against the catalog.

As in an IAM statement, a scope covers the (action, resource) pairs where the resource fits one
of the action's resource types. Every action must fit at least one requested resource and every
resource at least one requested action, so nothing in a request is silently meaningless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jitgate.errors import ScopeError
from jitgate.iam import catalog, risk
from jitgate.iam.arn import ArnError, covers, is_wildcard, matches_glob, parse_arn, prefix_of

MAX_ACTIONS = 50
MAX_RESOURCES = 100
MAX_ARN_LENGTH = 2048


@dataclass(frozen=True)
class ScopePair:
    action: str
    resource: str
    service: str
    access_level: str
    resource_type: str  # the catalog's resource type key, or "*" for actions without types
    sensitive: bool
    privilege_escalation: bool
    prefix: bool  # the resource is a prefix grant ("...reports/2026/*")


@dataclass(frozen=True)
class Scope:
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    pairs: tuple[ScopePair, ...]

    def allows(self, action: str, arn: str, match: str = "exact") -> bool:
        """Does this scope cover one (action, ARN) a call touches?"""
        return any(
            pair.action == action and covers(pair.resource, arn, match) for pair in self.pairs
        )


def _check_strings(kind: str, values: object, limit: int) -> list[str]:
    if not isinstance(values, list | tuple) or not values:
        raise ScopeError(f"{kind} must be a non-empty list of strings")
    if len(values) > limit:
        raise ScopeError(f"too many {kind}: {len(values)} (at most {limit})")
    out: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ScopeError(f"{kind} must be non-empty strings, got {value!r}")
        if value != value.strip():
            raise ScopeError(f"{kind[:-1]} {value!r} has leading or trailing whitespace")
        out.append(value)
    return out


def _canonical_action(name: str) -> catalog.ActionInfo:
    if is_wildcard(name):
        raise ScopeError(
            f"action {name!r} is a wildcard; jitgate grants exact actions only, name each one"
        )
    info = catalog.lookup_action(name)
    if info is None:
        service = name.partition(":")[0]
        if ":" not in name:
            raise ScopeError(f"action {name!r} is not of the form service:Action")
        if not catalog.service_exists(service):
            raise ScopeError(f"action {name!r}: unknown service prefix {service!r}")
        raise ScopeError(f"action {name!r} is not an IAM action of service {service!r}")
    return info


def _check_resource(resource: str) -> None:
    if len(resource) > MAX_ARN_LENGTH:
        raise ScopeError(
            f"resource {resource[:60]!r}... is longer than {MAX_ARN_LENGTH} characters"
        )
    if resource == "*":
        return
    try:
        parse_arn(resource)
    except ArnError as exc:
        raise ScopeError(f"resource {resource!r} {exc}") from None
    if is_wildcard(resource) and prefix_of(resource) is None:
        raise ScopeError(
            f"resource {resource!r}: wildcards are allowed only as one trailing '*' "
            "(a prefix grant, which the policy must allow)"
        )


def _fit(info: catalog.ActionInfo, resource: str) -> str | None:
    """The resource type key the resource fits for this action, '*' for type-less actions."""
    if not info.resource_types:
        return "*" if resource == "*" else None
    if resource == "*":
        return None
    prefix = prefix_of(resource)
    probe = resource if prefix is None else prefix + "x"
    for resource_type in info.resource_types:
        if resource_type.fits(probe):
            return resource_type.key
    return None


def _describe_types(info: catalog.ActionInfo) -> str:
    if not info.resource_types:
        return '"*" (it has no resource types)'
    return "; ".join(f"{t.key} {t.arn_template}" for t in info.resource_types)


def build_scope(
    actions: Sequence[str], resources: Sequence[str], sensitive_arns: Iterable[str] = ()
) -> Scope:
    """Validate a requested scope, raising ScopeError naming the first offending item."""
    action_names = _check_strings("actions", actions, MAX_ACTIONS)
    resource_names = _check_strings("resources", resources, MAX_RESOURCES)
    infos: dict[str, catalog.ActionInfo] = {}
    for name in action_names:
        info = _canonical_action(name)
        infos.setdefault(info.full_name, info)
    unique_resources = list(dict.fromkeys(resource_names))
    for resource in unique_resources:
        _check_resource(resource)
    sensitive_patterns = tuple(sensitive_arns)

    pairs: list[ScopePair] = []
    used_resources: set[str] = set()
    for full_name, info in infos.items():
        fitted = False
        for resource in unique_resources:
            type_key = _fit(info, resource)
            if type_key is None:
                continue
            fitted = True
            used_resources.add(resource)
            pairs.append(
                ScopePair(
                    action=full_name,
                    resource=resource,
                    service=info.service,
                    access_level=catalog.PERMISSIONS
                    if risk.is_privilege_escalation(full_name)
                    else info.access_level,
                    resource_type=type_key,
                    sensitive=risk.is_sensitive(full_name)
                    or any(matches_glob(p, resource) for p in sensitive_patterns),
                    privilege_escalation=risk.is_privilege_escalation(full_name),
                    prefix=prefix_of(resource) is not None,
                )
            )
        if not fitted:
            raise ScopeError(
                f"action {full_name!r} fits none of the requested resources; "
                f"it takes {_describe_types(info)}"
            )
    for resource in unique_resources:
        if resource not in used_resources:
            raise ScopeError(
                f"resource {resource!r} fits none of the requested actions ({', '.join(infos)})"
            )
    return Scope(tuple(infos), tuple(unique_resources), tuple(pairs))
