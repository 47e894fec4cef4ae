"""ARN parsing and the one rule for "does this granted ARN cover that ARN"."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

PARTITIONS = ("aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b")
_SECRET_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}")


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str

    def __str__(self) -> str:
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{self.resource}"


class ArnError(ValueError):
    pass


def parse_arn(text: str) -> Arn:
    """Parse an ARN, raising ArnError naming what is wrong."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ArnError("contains control characters")
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ArnError("is not an ARN (expected arn:partition:service:region:account:resource)")
    _, partition, service, region, account, resource = parts
    if partition not in PARTITIONS:
        raise ArnError(f"has unknown partition {partition!r}")
    for field_name, value in (("service", service), ("region", region), ("account", account)):
        if "*" in value or "?" in value:
            raise ArnError(f"has a wildcard in its {field_name}")
    if not re.fullmatch(r"[a-z0-9-]+", service):
        raise ArnError(f"has invalid service {service!r}")
    if region and not re.fullmatch(r"[a-z]{2}(?:-[a-z]+)+-\d", region):
        raise ArnError(f"has invalid region {region!r}")
    if account and not re.fullmatch(r"\d{12}", account):
        raise ArnError(f"has invalid account {account!r} (expected 12 digits)")
    if not resource:
        raise ArnError("has an empty resource part")
    return Arn(partition, service, region, account, resource)


def is_wildcard(arn: str) -> bool:
    return "*" in arn or "?" in arn


def prefix_of(arn: str) -> str | None:
    """For a prefix ARN (one trailing '*', no other wildcard) the prefix; otherwise None."""
    if len(arn) > 1 and arn.endswith("*") and not is_wildcard(arn[:-1]):
        return arn[:-1]
    return None


def _is_secret(arn: str) -> bool:
    return arn.startswith("arn:") and ":secretsmanager:" in arn and ":secret:" in arn


def covers(granted: str, requested: str, match: str = "exact") -> bool:
    """Does a granted resource ARN cover the ARN a call touches?

    - equal strings cover;
    - a prefix grant ("...reports/2026/*") covers every ARN that starts with its prefix;
    - "*" granted covers only "*" requested (actions without resource types);
    - Secrets Manager: a grant naming a secret without its random suffix ("secret:prod/db") or
      with IAM's "-??????" form covers that secret's full ARN ("secret:prod/db-AbC123") and a
      call by that name; a call by name never matches a grant that names a different suffix,
      because the name alone does not say which suffix it resolves to.
    """
    if granted == requested:
        return True
    prefix = prefix_of(granted)
    if prefix is not None and prefix and requested.startswith(prefix):
        return True
    if _is_secret(granted) and _is_secret(requested):
        base = granted[:-7] if granted.endswith("-??????") else granted
        if match == "secret-name":
            return requested == base
        if requested == base:
            return True
        tail = requested[len(base) :]
        return requested.startswith(base) and _SECRET_SUFFIX.fullmatch(tail) is not None
    return False


def matches_glob(pattern: str, arn: str) -> bool:
    """Shell-style glob ('*' and '?') over a whole ARN, used for configured ARN lists."""
    return fnmatch.fnmatchcase(arn, pattern)
