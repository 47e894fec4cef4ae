"""Shared helpers for benchmarks: percentiles, tables, throwaway databases."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from jitgate.clock import Clock
from jitgate.config import load_settings
from jitgate.core import Jitgate, build, init_home

console = Console(width=int(os.environ.get("COLUMNS", "160")))
PG_ADMIN_URL = os.environ.get(
    "JITGATE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(samples: Sequence[float]) -> tuple[float, float, float]:
    """p50, p99, mean (same unit as the samples)."""
    return percentile(samples, 50), percentile(samples, 99), statistics.fmean(samples)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    out = Table(*columns, title=title)
    for row in rows:
        out.add_row(*(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row))
    console.print(out)


def postgres_available() -> bool:
    try:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", "select 1"],
            check=True,
            capture_output=True,
            timeout=5,
        )
        return True
    except (OSError, subprocess.SubprocessError):
        return False


@contextmanager
def jitgate_core(backend: str, clock: Clock | None = None) -> Iterator[Jitgate]:
    """A fresh jitgate (home, database) on 'sqlite' or 'postgresql', removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="jitgate-bench-"))
    init_home(home)
    settings = load_settings(home)
    database = None
    if backend == "postgresql":
        database = "jg_bench_" + uuid.uuid4().hex[:10]
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-qc",
                f"create database {database}",
            ],
            check=True,
        )
        settings = replace(
            settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        )
    core = build(settings, clock)
    try:
        yield core
    finally:
        core.close()
        if database:
            subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-qc",
                    f"drop database {database} with (force)",
                ],
                check=False,
            )
