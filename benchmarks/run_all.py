"""`make bench`: every benchmark in one go, each printing its own tables.

Pass --quick for a smoke run. Each benchmark runs in its own process so one's servers and
memory never colour another's numbers.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("benchmarks.control_plane", "benchmarks.audit_verify", "benchmarks.gateway")


def main() -> int:
    extra = sys.argv[1:]
    failed = []
    for module in BENCHMARKS:
        print(f"\n=== {module} ===", flush=True)
        if subprocess.run([sys.executable, "-m", module, *extra], check=False).returncode != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
