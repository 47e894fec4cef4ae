"""Old against new, in one run: the in-process benchmark for two git revisions, interleaved.

A change's effect on jitgate's own cost is a few percent, and this machine's speed drifts by
more than that from one run to the next: comparing numbers from two runs says little. This
checks each revision out into a worktree of its own, starts one fast nginx upstream for all,
and runs ``benchmarks.gateway_inprocess`` for each revision in turn, ``--rounds`` times, so
both see the same machine. Each cell keeps its cheapest round (the least disturbed), and the
table gives new ÷ old.

Run: .venv/bin/python -m benchmarks.ab_inprocess OLD_REV [NEW_REV] [--rounds N] [--calls N]
NEW_REV defaults to the working tree as it is (uncommitted changes included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import table
from benchmarks.gateway import Processes, fast_upstream, find_tools
from benchmarks.gateway_load import KIB

REPO = Path(__file__).resolve().parent.parent
WORKING_TREE = "working tree"
Cell = tuple[str, int, str]  # (operation, concurrency, app)


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


def run_once(tree: Path, upstream_port: int, calls: int) -> list[dict[str, object]]:
    """One run of the in-process benchmark with ``tree``'s code (its src first on the path)."""
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gateway_inprocess",
            "--upstream-port",
            str(upstream_port),
            "--calls",
            str(calls),
            "--reps",
            "1",
            "--json",
        ],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}"},
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    rows: list[dict[str, object]] = json.loads(output.stdout.strip().splitlines()[-1])
    return rows


def cheapest(runs: Sequence[list[dict[str, object]]]) -> dict[Cell, tuple[float, float]]:
    """Each cell's cheapest (CPU µs, wall µs) over the runs."""
    best: dict[Cell, tuple[float, float]] = {}
    for rows in runs:
        for row in rows:
            cell = (str(row["op"]), int(row["concurrency"]), str(row["app"]))  # type: ignore[call-overload]
            value = (float(row["cpu_us"]), float(row["wall_us"]))  # type: ignore[arg-type]
            if cell not in best or value[0] < best[cell][0]:
                best[cell] = value
    return best


def comparison_rows(
    old: dict[Cell, tuple[float, float]], new: dict[Cell, tuple[float, float]]
) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for cell in old:
        if cell not in new:
            continue
        (old_cpu, old_wall), (new_cpu, new_wall) = old[cell], new[cell]
        rows.append(
            (
                *cell,
                f"{old_cpu:,.1f}",
                f"{new_cpu:,.1f}",
                f"{new_cpu / old_cpu:.1%}",
                f"{old_wall:,.1f}",
                f"{new_wall:,.1f}",
                f"{new_wall / old_wall:.1%}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the revision to compare against (e.g. HEAD~1)")
    parser.add_argument("new", nargs="?", default=WORKING_TREE, help="default: the working tree")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each revision, alternated")
    parser.add_argument("--calls", type=int, default=2000, help="calls per cell, per run")
    args = parser.parse_args()
    nginx = find_tools()["nginx"]
    if nginx is None:
        sys.exit("nginx is needed (sh benchmarks/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="jitgate-ab-") as scratch:
        workdir = Path(scratch)
        procs = Processes(workdir)
        try:
            port = fast_upstream(procs, nginx, KIB).upstream_port
            with (
                checked_out(args.old, workdir / "old") as old_tree,
                checked_out(args.new, workdir / "new") as new_tree,
            ):
                runs: dict[str, list[list[dict[str, object]]]] = {"old": [], "new": []}
                for round_number in range(args.rounds):
                    for name, tree in (("old", old_tree), ("new", new_tree)):
                        print(f"round {round_number + 1}: {name}", file=sys.stderr, flush=True)
                        runs[name].append(run_once(tree, port, args.calls))
        finally:
            procs.stop_all()
    table(
        f"in-process A/B: {args.old} (old) against {args.new} (new); cheapest of "
        f"{args.rounds} alternated runs, µs a call",
        ["operation", "c", "app", "old CPU", "new CPU", "new ÷ old", "old wall", "new wall", "÷"],
        comparison_rows(cheapest(runs["old"]), cheapest(runs["new"])),
    )


if __name__ == "__main__":
    main()
