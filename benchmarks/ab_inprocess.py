"""Old against new, in one run: jitgate's in-process cost for two git revisions, interleaved.

A change's effect on jitgate's own cost is a few percent, and this machine's speed drifts by
more than that from one run to the next, even from one minute to the next (session 11: the
bare hop's own figure moved by 25% between adjacent runs). So each revision is checked out
into a worktree of its own, one fast nginx upstream serves both, and for each cell (an
operation at a concurrency) one long-lived worker per revision (benchmarks/ab_worker.py,
with that revision's code) runs short bursts of calls in turn: old, new, new, old, ... Each
burst's figure is compared with its neighbour's, so both see the same minute of the
machine; the table gives the medians and the median of the per-pair ratios.

Run: .venv/bin/python -m benchmarks.ab_inprocess OLD_REV [NEW_REV] [--bursts N]
     [--durability fsync|os]
NEW_REV defaults to the working tree as it is (uncommitted changes included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import table
from benchmarks.gateway import Processes, fast_upstream, find_tools
from benchmarks.gateway_load import KIB

REPO = Path(__file__).resolve().parent.parent
WORKING_TREE = "working tree"


@contextmanager
def checked_out(revision: str, where: Path) -> Iterator[Path]:
    """``revision`` in a worktree of its own (the working tree itself for WORKING_TREE)."""
    if revision == WORKING_TREE:
        yield REPO
        return
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(where), revision],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(where)], cwd=REPO, capture_output=True
        )


CELLS = (
    ("S3 GetObject 1 KiB", 1, 300),
    ("S3 GetObject 1 KiB", 32, 1000),
    ("DynamoDB GetItem", 1, 300),
    ("DynamoDB GetItem", 32, 1000),
)  # (operation, concurrency, calls a burst)
WARM_UP = 2  # bursts of each side left out


class Worker:
    """A worker process running one revision's app for one cell."""

    def __init__(
        self, tree: Path, port: int, op: str, concurrency: int, calls: int, durability: str
    ) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "benchmarks" / "ab_worker.py"),
                "--upstream-port",
                str(port),
                "--op",
                op,
                "--concurrency",
                str(concurrency),
                "--calls",
                str(calls),
                "--durability",
                durability,
            ],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._line() != "ready":
            raise RuntimeError(f"the worker for {tree} did not start")

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            raise RuntimeError("a worker stopped (its error is above)")
        return line

    def burst(self) -> dict[str, float]:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        result: dict[str, float] = json.loads(self._line())
        return result

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def compare_cell(
    trees: tuple[Path, Path], port: int, cell: tuple[str, int, int], bursts: int, durability: str
) -> tuple[object, ...]:
    """One row: medians of each side's bursts, and of the new ÷ old ratios of adjacent pairs."""
    op, concurrency, calls = cell
    old, new = (Worker(tree, port, op, concurrency, calls, durability) for tree in trees)
    try:
        pairs: list[tuple[dict[str, float], dict[str, float]]] = []
        for index in range(bursts + WARM_UP):
            if index % 2 == 0:
                first = old.burst()
                pair = (first, new.burst())
            else:
                second = new.burst()
                pair = (old.burst(), second)
            if index >= WARM_UP:
                pairs.append(pair)
    finally:
        old.stop()
        new.stop()
    key = "p50_us" if concurrency == 1 else "cpu_us"
    label = "p50 of a call" if concurrency == 1 else "CPU a call"
    old_median = statistics.median(a[key] for a, _ in pairs)
    new_median = statistics.median(b[key] for _, b in pairs)
    ratio = statistics.median(b[key] / a[key] for a, b in pairs)
    return (op, concurrency, label, f"{old_median:,.1f}", f"{new_median:,.1f}", f"{ratio:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the revision to compare against (e.g. HEAD~1)")
    parser.add_argument("new", nargs="?", default=WORKING_TREE, help="default: the working tree")
    parser.add_argument("--bursts", type=int, default=16, help="bursts of each side, per cell")
    parser.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    args = parser.parse_args()
    nginx = find_tools()["nginx"]
    if nginx is None:
        sys.exit("nginx is needed (sh benchmarks/setup.sh installs it)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="jitgate-ab-") as scratch:
        workdir = Path(scratch)
        procs = Processes(workdir)
        try:
            port = fast_upstream(procs, nginx, KIB).upstream_port
            with (
                checked_out(args.old, workdir / "old") as old_tree,
                checked_out(args.new, workdir / "new") as new_tree,
            ):
                for cell in CELLS:
                    print(f"measuring {cell[0]} at c={cell[1]}", file=sys.stderr, flush=True)
                    rows.append(
                        compare_cell((old_tree, new_tree), port, cell, args.bursts, args.durability)
                    )
        finally:
            procs.stop_all()
    table(
        f"in-process A/B, audit {args.durability}: {args.old} (old) against {args.new} (new); "
        f"medians of {args.bursts} alternated bursts, µs",
        ["operation", "c", "measure", "old", "new", "new ÷ old (median of pairs)"],
        rows,
    )


if __name__ == "__main__":
    main()
