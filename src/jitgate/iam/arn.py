"""ARN parsing and the one rule for "does this granted ARN cover that ARN"."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

PARTITIONS = ("aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b")


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
    - Secrets Manager: no suffix guessing. A SecretId in ARN form is resolved by AWS as a full
      ARN *or* as a partial ARN (a name), so "secret:prod/db-backup" may be the secret named
      "prod/db-backup" rather than "prod/db" with a random suffix; it is covered only by a grant
      naming that exact ARN. A call by name ("secret-name" match) is covered by a grant of the
      same name-only ARN, or of IAM's "NAME-??????" form.
    """
    if granted == requested:
        return True
    prefix = prefix_of(granted)
    if prefix is not None and prefix and requested.startswith(prefix):
        return True
    if match == "secret-name" and _is_secret(granted) and granted.endswith("-??????"):
        return requested == granted[:-7]
    return False


def matches_glob(pattern: str, arn: str) -> bool:
    """Shell-style glob ('*' and '?') over a whole ARN, used for configured ARN lists."""
    return fnmatch.fnmatchcase(arn, pattern)
