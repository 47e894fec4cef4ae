"""Durations written the way people write them in policies: "90s", "15m", "1h", "1h30m"."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+)([hms])")
_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> int:
    """Seconds in a duration string; ValueError naming the text when it is not one."""
    compact = text.strip()
    if not compact or _PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration like '90s', '15m' or '1h30m'")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


def format_duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return text or "0s"
