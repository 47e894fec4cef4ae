"""AWS endpoint benchmark (issue 3): what a hop through jitgate costs, and where the time goes.

Run: .venv/bin/python -m benchmarks.gateway [--quick]
Needs Debian's nginx and wrk, and py-spy in .venv for the profile: ``sh benchmarks/setup.sh``.

S3 GetObject 1 KiB and 1 MiB, PutObject 1 MiB and DynamoDB GetItem, at concurrency 1 and 32,
through five paths to the same upstream: direct; an nginx reverse proxy (the floor of any
hop); a bare pass-through Python proxy with no checks (benchmarks/passthrough.py) on jitgate's
own stack (uvicorn + jitgate's upstream client: "python hop") and on uvicorn + aiohttp's client
(the stack jitgate used until D13, and issue 3's planning numbers: "aiohttp hop"); and
jitgate with real grants, in its own process as ``jitgate serve`` runs it
(benchmarks/gateway_launcher.py). Two upstreams: moto in its auth mode, and a fast S3-shaped
nginx that serves fixed bodies and ignores auth (benchmarks/nginx/), so jitgate's own cost is
not hidden behind moto's. Load is wrk (one thread, keep-alive) replaying freshly signed requests
(benchmarks/gateway_load.py says how they are signed); each cell is the better of ``reps`` runs,
the five paths interleaved run by run.

Then: one big object streamed GET and PUT through fresh processes with their peak RSS
(/proc/PID/status, VmHWM reset first); jitgate variants measured side by side
(``[audit] durability = "os"`` instead of the default "fsync"; asyncio's own event loop
instead of uvloop; a shorter GIL switch interval); audit commits per call at concurrency 1; each step of a call timed in-process
(benchmarks/gateway_pieces.py); whole calls in-process, jitgate's app against the bare hop's with
no server and no wrk (benchmarks/gateway_inprocess.py: the steadiest view of what jitgate adds,
though it cannot show audit batching as a real server's arrivals shape it); and a py-spy
profile (--gil) of jitgate under the fast-upstream GET 1 KiB load at concurrency 32.

Targets (issue 3): jitgate's added p50 <= 0.3 ms at concurrency 1 against the fast upstream;
>= 60% of the bare Python hop's requests/s at concurrency 32; >= 95% of direct requests/s
against moto; 1 GiB at >= 80% of direct throughput with < 64 MiB RSS growth. Everything runs
on 127.0.0.1 on this machine, load generator and upstream included, next to whatever else is
running (the load average is printed): compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchmarks import gateway_pieces
from benchmarks.gateway_load import (
    FAST_CREDS,
    KIB,
    MIB,
    OPS,
    Cell,
    Creds,
    Op,
    Transfer,
    Wrk,
    build_pool,
    exchange,
    parse_wrk,
    signed_head,
    transfer,
    zeros_sha256,
)
from jitgate.awsapi import sigv4
from jitgate.sandbox.moto import free_port, start_moto

REPO = Path(__file__).resolve().parent.parent
console = Console(width=200)  # the tables are wide; don't fold them to 80 columns in a pipe
NGINX_TEMPLATES = Path(__file__).resolve().parent / "nginx"
# "python hop": the bare hop on jitgate's own stack (uvicorn + jitgate's upstream client, D13);
# "aiohttp hop": the same hop on aiohttp's client, the stack issue 3's planning numbers used.
PATHS = ("direct", "nginx", "aiohttp hop", "python hop", "jitgate")
ADDED_P50_TARGET_US = 300.0
HOP_RATIO_TARGET = 0.60
MOTO_RATIO_TARGET = 0.95
BIG_RATIO_TARGET = 0.80
BIG_RSS_TARGET_MIB = 64.0


@dataclass(frozen=True)
class Mode:
    seconds: int  # one wrk run
    reps: int  # runs per cell, paths interleaved; the run with the most good answers/s is kept
    pool_divisor: int
    big: int  # bytes of the big transfer
    big_reps: int  # each big transfer is timed this many times (fastest kept, RSS the worst)
    profile_seconds: int
    pieces_count: int
    in_process_calls: int
    experiments: tuple[tuple[str, tuple[str, ...]], ...]
    experiment_ops: tuple[str, ...]


SHIPPED = ("jitgate as shipped (audit durability fsync)", ())
NORMAL = ('audit durability "os" (a setting)', ("--durability", "os"))
FULL = Mode(
    seconds=2,
    reps=2,
    pool_divisor=1,
    big=1024 * MIB,
    big_reps=2,
    profile_seconds=6,
    pieces_count=2000,
    in_process_calls=3000,
    experiments=(
        SHIPPED,
        NORMAL,
        ("asyncio's own event loop, not uvloop (experiment)", ("--asyncio-loop",)),
        ("GIL switch interval 0.5 ms (experiment)", ("--switch-interval", "0.0005")),
    ),
    experiment_ops=("S3 GetObject 1 KiB", "S3 GetObject 1 MiB"),
)
QUICK = Mode(
    seconds=1,
    reps=1,
    pool_divisor=8,
    big=256 * MIB,
    big_reps=1,
    profile_seconds=2,
    pieces_count=200,
    in_process_calls=500,
    experiments=(SHIPPED, NORMAL),
    experiment_ops=("S3 GetObject 1 KiB",),
)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """benchmarks.common.table, printed on the wide console."""
    out = Table(*columns, title=title)
    for row in rows:
        out.add_row(*(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row))
    console.print(out)


# --- tools and processes ------------------------------------------------------------------------
def find_tools() -> dict[str, str | None]:
    """nginx and wrk are required (with how to install them); py-spy only for the profile."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    wrk = shutil.which("wrk")
    venv_spy = Path(sys.executable).parent / "py-spy"
    py_spy = str(venv_spy) if venv_spy.exists() else shutil.which("py-spy")
    missing = [name for name, path in (("nginx", nginx), ("wrk", wrk)) if path is None]
    if missing:
        console.print(
            f"[red]missing: {', '.join(missing)}[/red]. Install Debian's packages with\n"
            "  sh benchmarks/setup.sh\n"
            f"or: apt-get update && apt-get install -y {' '.join(missing)}"
        )
        raise SystemExit(2)
    if py_spy is None:
        console.print(
            "[yellow]py-spy not found: the profile is skipped. Install it with "
            "'.venv/bin/pip install py-spy' (or sh benchmarks/setup.sh).[/yellow]"
        )
    return {"nginx": nginx, "wrk": wrk, "py-spy": py_spy}


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")


class Processes:
    """Everything this benchmark starts, stopped (by its own handle) in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._stops: list[tuple[str, object]] = []

    def popen(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self._stops.append((name, process))
        return process

    def adopt(self, name: str, stopper: object) -> None:
        self._stops.append((name, stopper))

    def stop(self, process: object) -> None:
        for i, (_, item) in enumerate(self._stops):
            if item is process:
                del self._stops[i]
                break
        _stop(process)

    def stop_all(self) -> None:
        while self._stops:
            _, item = self._stops.pop()
            with contextlib.suppress(Exception):
                _stop(item)


def _stop(item: object) -> None:
    if isinstance(item, subprocess.Popen):
        if item.poll() is None:
            item.terminate()
            try:
                item.wait(15)
            except subprocess.TimeoutExpired:
                item.kill()
                item.wait(5)
    else:
        item.stop()  # type: ignore[attr-defined]


def start_nginx(procs: Processes, nginx: str, template: str, name: str, **values: object) -> int:
    port = free_port()
    prefix = procs.workdir / name
    prefix.mkdir()
    user = "user root root;" if os.geteuid() == 0 else ""
    text = string.Template((NGINX_TEMPLATES / template).read_text()).safe_substitute(
        prefix=prefix, port=port, user=user, **values
    )
    assert "${" not in text, "unrendered placeholder in " + template
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    process = procs.popen(
        name, [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    )
    wait_port(port, process, name)
    return port


def start_passthrough(
    procs: Processes, upstream_port: int, name: str, flags: Sequence[str] = ()
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    process = procs.popen(
        name,
        [
            sys.executable,
            "-m",
            "benchmarks.passthrough",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--port",
            str(port),
            *flags,
        ],
    )
    wait_port(port, process, name)
    return port, process


@dataclass
class Jitgate:
    port: int
    process: subprocess.Popen[bytes]
    grants: dict[str, Creds]
    info: Path

    def stats(self) -> dict[str, int]:
        path = Path(str(self.info) + ".stats")
        return json.loads(path.read_text()) if path.exists() else {}


def start_jitgate(
    procs: Processes, upstream_port: int, creds: Creds, name: str, flags: Sequence[str] = ()
) -> Jitgate:
    port = free_port()
    info = procs.workdir / f"{name}.json"
    process = procs.popen(
        name,
        [
            sys.executable,
            "-m",
            "benchmarks.gateway_launcher",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--upstream-key",
            creds.access_key,
            "--upstream-secret",
            creds.secret_key,
            "--aws-port",
            str(port),
            "--info",
            str(info),
            *flags,
        ],
    )
    deadline = time.monotonic() + 90
    while not info.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            log = (procs.workdir / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"{name} did not start:\n{log}")
        time.sleep(0.05)
    grants = {
        service: Creds(g["AccessKeyId"], g["SecretAccessKey"], g["SessionToken"])
        for service, g in json.loads(info.read_text())["grants"].items()
    }
    return Jitgate(port, process, grants, info)


# --- the two upstreams and their four paths -----------------------------------------------------
@dataclass
class Stack:
    name: str
    upstream_port: int
    creds: Creds  # what the direct, nginx and python paths sign with
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    jitgate: Jitgate | None = None
    hop: subprocess.Popen[bytes] | None = None
    aiohttp_hop: subprocess.Popen[bytes] | None = None

    def creds_for(self, path: str, op: Op) -> Creds:
        if path == "jitgate":
            assert self.jitgate is not None
            return self.jitgate.grants[op.service]
        return self.creds


@dataclass(frozen=True)
class _Removed:
    path: Path

    def stop(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def fast_upstream(procs: Processes, nginx: str, big: int) -> Stack:
    data = procs.workdir / "data" / "bench"
    data.mkdir(parents=True)
    (data / "obj-1k").write_bytes(os.urandom(KIB))
    (data / "obj-1m").write_bytes(os.urandom(MIB))
    with (data / "obj-1g").open("wb") as handle:
        handle.truncate(big)  # sparse: served from the page cache, no disk in the way
    body_temp = tmpfs_dir(procs, "jitgate-bench-body-")  # big PUT bodies spool to memory
    port = start_nginx(
        procs,
        nginx,
        "upstream.conf.template",
        "fast-upstream",
        data=data.parent,
        body_temp=body_temp,
    )
    return Stack("fast upstream (nginx, fixed bodies)", port, FAST_CREDS)


def moto_upstream(procs: Processes) -> Stack:
    moto = start_moto()
    procs.adopt("moto", moto)
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="bench")  # type: ignore[attr-defined]
    s3.put_object(Bucket="bench", Key="obj-1k", Body=os.urandom(KIB))  # type: ignore[attr-defined]
    s3.put_object(Bucket="bench", Key="obj-1m", Body=os.urandom(MIB))  # type: ignore[attr-defined]
    dynamodb = moto.client("dynamodb")
    dynamodb.create_table(  # type: ignore[attr-defined]
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="orders", Item={"id": {"S": "o-1"}, "total": {"N": "42"}})  # type: ignore[attr-defined]
    creds = Creds(moto.credentials.access_key, moto.credentials.secret_key)
    return Stack("moto server (auth mode)", moto.port, creds)


def open_paths(procs: Processes, stack: Stack, nginx: str, tag: str) -> None:
    stack.ports["direct"] = stack.upstream_port
    stack.ports["nginx"] = start_nginx(
        procs,
        nginx,
        "proxy.conf.template",
        f"nginx-proxy-{tag}",
        upstream=f"127.0.0.1:{stack.upstream_port}",
    )
    start_python_paths(procs, stack, tag)


def start_python_paths(procs: Processes, stack: Stack, tag: str) -> None:
    stack.ports["python hop"], stack.hop = start_passthrough(
        procs, stack.upstream_port, f"python-hop-{tag}"
    )
    stack.pids["python hop"] = stack.hop.pid
    stack.ports["aiohttp hop"], stack.aiohttp_hop = start_passthrough(
        procs, stack.upstream_port, f"aiohttp-hop-{tag}", ("--client", "aiohttp")
    )
    stack.pids["aiohttp hop"] = stack.aiohttp_hop.pid
    stack.jitgate = start_jitgate(procs, stack.upstream_port, stack.creds, f"jitgate-{tag}")
    stack.ports["jitgate"] = stack.jitgate.port
    stack.pids["jitgate"] = stack.jitgate.process.pid


def restart_python_paths(procs: Processes, stack: Stack, tag: str) -> None:
    """New python-hop and jitgate processes (RSS measured from a process nothing else grew)."""
    assert stack.jitgate is not None and stack.hop is not None and stack.aiohttp_hop is not None
    procs.stop(stack.hop)
    procs.stop(stack.aiohttp_hop)
    procs.stop(stack.jitgate.process)
    start_python_paths(procs, stack, tag)


# --- measuring ----------------------------------------------------------------------------------
def check(
    stack: Stack, path: str, op: Op, port: int | None = None, creds: Creds | None = None
) -> None:
    """A few requests answered right (status, body) before any is timed: nothing is a fast 403."""
    port = port or stack.ports[path]
    requests = build_pool(op, f"127.0.0.1:{port}", creds or stack.creds_for(path, op), 3)
    for response in exchange(port, requests):
        good = response.status == 200
        if op.expect_body is not None:
            good = good and response.body_bytes == op.expect_body
        if op.service == "dynamodb":
            good = good and b'"Item"' in response.body
        if not good:
            raise RuntimeError(
                f"{op.name} via {path} on {stack.name}: HTTP {response.status}, "
                f"{response.body_bytes} bytes: {response.body[:600]!r}"
            )


@dataclass(frozen=True)
class Target:
    label: str
    port: int
    creds: Creds
    pid: int | None = None  # the proxy's process, whose CPU time per request is measured


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    wrk: Wrk, targets: Sequence[Target], op: Op, concurrency: int, mode: Mode
) -> dict[str, Cell]:
    """One cell per target, the targets interleaved run by run so drift hits them alike.

    Each target gets its own pool, signed now; 20 sequential requests warm it first.
    """
    count = max(min(op.pool, 24), op.pool // mode.pool_divisor)
    pools = {}
    for index, target in enumerate(targets):
        pool = build_pool(op, f"127.0.0.1:{target.port}", target.creds, count)
        exchange(target.port, pool[:20])
        pools[target.label] = wrk.write_pool(f"pool{index}", pool)
    best: dict[str, Cell] = {}
    for _ in range(mode.reps):
        for target in targets:
            before = cpu_seconds(target.pid) if target.pid else 0.0
            cell = wrk.run(target.port, concurrency, mode.seconds, pools[target.label])
            if target.pid and cell.requests:
                used = cpu_seconds(target.pid) - before
                cell = replace(cell, cpu_us=used * 1e6 / cell.requests)
            if target.label not in best or cell.rps > best[target.label].rps:
                best[target.label] = cell
    for name in pools.values():
        wrk.drop(name)
    for label, cell in best.items():
        if not cell.ok:
            console.print(
                f"[red]{op.name} via {label} c={concurrency}: {cell.errors} errors "
                f"in {cell.requests} requests (req/s counts good answers only)[/red]"
            )
    return best


Results = dict[tuple[str, str, int], Cell]


def run_matrix(wrk: Wrk, stack: Stack, mode: Mode) -> Results:
    results: Results = {}
    for op in OPS:
        for path in PATHS:
            check(stack, path, op)
        targets = [
            Target(path, stack.ports[path], stack.creds_for(path, op), stack.pids.get(path))
            for path in PATHS
        ]
        for concurrency in (1, 32):
            for path, cell in measure(wrk, targets, op, concurrency, mode).items():
                results[op.name, path, concurrency] = cell
        console.print(f"  measured {op.name} on {stack.name}")
    return results


def us(value: float) -> str:
    return f"{value:,.0f}"


def pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def matrix_table(stack: Stack, results: Results) -> None:
    rows = []
    for op in OPS:
        for concurrency in (1, 32):
            direct = results[op.name, "direct", concurrency]
            hop = results[op.name, "python hop", concurrency]
            aiohttp_hop = results[op.name, "aiohttp hop", concurrency]
            for path in PATHS:
                cell = results[op.name, path, concurrency]
                rows.append(
                    (
                        op.name,
                        concurrency,
                        path,
                        us(cell.p50_us),
                        us(cell.p99_us),
                        f"{cell.rps:,.0f}",
                        "" if path == "direct" else f"{cell.p50_us - direct.p50_us:+,.0f}",
                        pct(cell.rps / direct.rps),
                        pct(cell.rps / hop.rps) if path == "jitgate" else "",
                        pct(cell.rps / aiohttp_hop.rps) if path == "jitgate" else "",
                        us(cell.cpu_us) if cell.cpu_us is not None else "",
                        f"{cell.requests:,}" + (f" ({cell.errors} err)" if cell.errors else ""),
                    )
                )
    table(
        f"{stack.name}: wrk, 1 thread, keep-alive",
        [
            "operation",
            "c",
            "path",
            "p50 µs",
            "p99 µs",
            "req/s",
            "p50 vs direct µs",
            "req/s ÷ direct",
            "÷ python hop",
            "÷ aiohttp hop",
            "CPU µs/req",
            "requests",
        ],
        rows,
    )
    cost_rows = []
    for op in OPS:
        hop = results[op.name, "python hop", 32].cpu_us
        gate = results[op.name, "jitgate", 32].cpu_us
        if hop and gate:
            cost_rows.append((op.name, us(hop), us(gate), us(gate - hop), pct((gate - hop) / hop)))
    if cost_rows:
        table(
            f"{stack.name}: CPU per request at c=32, jitgate beyond the bare hop (its checks, "
            "audit and re-signing; 60% of the hop's req/s allows at most 67% of the hop's CPU)",
            ["operation", "hop µs", "jitgate µs", "jitgate extra µs", "extra ÷ hop"],
            cost_rows,
        )


# --- 1 GiB streamed -----------------------------------------------------------------------------
def big_transfers(stack: Stack, size: int, reps: int) -> list[tuple[str, str, Transfer]]:
    out: list[tuple[str, str, Transfer]] = []
    zeros_hash = zeros_sha256(size)
    # Warm each path's connection pool with a small GET, and the upstream's page cache and
    # spool with one untimed big GET and PUT.
    for path in PATHS:
        check(stack, path, OPS[0])
    for upload in (0, size):
        transfer(
            stack.ports["direct"],
            lambda upload=upload: signed_head(
                "PUT" if upload else "GET",
                "/bench/put-1g" if upload else "/bench/obj-1g",
                f"127.0.0.1:{stack.ports['direct']}",
                stack.creds,
                "s3",
                sigv4.UNSIGNED_PAYLOAD,
                content_length=upload or None,
            ),
            upload=upload,
        )
    label = f"{size // MIB} MiB"
    variants: list[tuple[str, str, str]] = [
        (f"GET {label}", "GET", ""),
        (f"PUT {label} UNSIGNED-PAYLOAD", "PUT", sigv4.UNSIGNED_PAYLOAD),
        (f"PUT {label} signed SHA-256", "PUT", zeros_hash),
    ]
    runs: dict[tuple[str, str], list[Transfer]] = {}
    for _ in range(reps):
        for name, method, payload_hash in variants:
            for path in PATHS:
                runs.setdefault((name, path), []).append(
                    _big_one(stack, path, size, method, payload_hash)
                )
    for (name, path), tries in runs.items():
        fastest = min(tries, key=lambda t: t.seconds)
        hungriest = max(tries, key=lambda t: t.rss_growth_mib or 0.0)
        out.append(
            (
                name,
                path,
                replace(
                    fastest,
                    rss_base_mib=hungriest.rss_base_mib,
                    rss_peak_mib=hungriest.rss_peak_mib,
                ),
            )
        )
    return out


def _big_one(stack: Stack, path: str, size: int, method: str, payload_hash: str) -> Transfer:
    port = stack.ports[path]
    creds = stack.creds_for(path, OPS[0])
    key = "/bench/obj-1g" if method == "GET" else "/bench/put-1g"
    upload = size if method == "PUT" else 0

    def head() -> bytes:  # signed when the transfer starts
        return signed_head(
            method,
            key,
            f"127.0.0.1:{port}",
            creds,
            "s3",
            payload_hash or sigv4.EMPTY_SHA256,
            content_length=upload or None,
        )

    result = transfer(port, head, upload=upload, pid=stack.pids.get(path))
    if result.status != 200 or result.bytes != size:
        raise RuntimeError(f"{method} {size} B via {path}: HTTP {result.status}, {result.bytes} B")
    return result


def big_table(results: list[tuple[str, str, Transfer]]) -> None:
    direct = {name: t for name, path, t in results if path == "direct"}
    rows = []
    for name, path, t in results:
        growth = t.rss_growth_mib
        rows.append(
            (
                name,
                path,
                f"{t.seconds:.2f}",
                f"{t.mib_s:,.0f}",
                pct(t.mib_s / direct[name].mib_s),
                "" if t.rss_base_mib is None else f"{t.rss_base_mib:.1f}",
                "" if t.rss_peak_mib is None else f"{t.rss_peak_mib:.1f}",
                "" if growth is None else f"{growth:+.1f}",
            )
        )
    table(
        "one big object streamed (fast upstream; PUT bodies discarded by nginx)",
        [
            "transfer",
            "path",
            "s",
            "MiB/s",
            "÷ direct",
            "RSS before MiB",
            "RSS peak MiB",
            "growth MiB",
        ],
        rows,
    )


# --- experiments: audit fsync, event loop --------------------------------------------------------
def experiments(
    procs: Processes, wrk: Wrk, stack: Stack, mode: Mode
) -> list[tuple[str, str, int, Cell, dict[str, int]]]:
    """Fresh jitgate processes, one per variant, all up at once and measured interleaved."""
    gates = [
        (label, start_jitgate(procs, stack.upstream_port, stack.creds, f"jitgate-exp{i}", flags))
        for i, (label, flags) in enumerate(mode.experiments)
    ]
    cells: list[tuple[str, str, int, Cell]] = []
    try:
        for op in (op for op in OPS if op.name in mode.experiment_ops):
            for _, gate in gates:
                check(stack, "jitgate", op, gate.port, gate.grants[op.service])
            targets = [Target(label, gate.port, gate.grants[op.service]) for label, gate in gates]
            for concurrency in (1, 32):
                for label, cell in measure(wrk, targets, op, concurrency, mode).items():
                    cells.append((label, op.name, concurrency, cell))
    finally:
        for _, gate in gates:
            procs.stop(gate.process)
    stats = {label: gate.stats() for label, gate in gates}
    order = {label: i for i, (label, _) in enumerate(gates)}
    cells.sort(key=lambda row: (row[1], row[2], order[row[0]]))
    return [(label, name, c, cell, stats[label]) for label, name, c, cell in cells]


def commits_per_call(procs: Processes, wrk: Wrk, stack: Stack, mode: Mode) -> list[str]:
    """At c=1, how many audit commits each call costs (a fresh process per setting)."""
    lines = []
    op = OPS[0]
    once = replace(mode, reps=1)
    for index, (label, flags) in enumerate((SHIPPED, NORMAL)):
        gate = start_jitgate(procs, stack.upstream_port, stack.creds, f"jitgate-c1-{index}", flags)
        try:
            cell = measure(wrk, [Target(label, gate.port, gate.grants["s3"])], op, 1, once)[label]
        finally:
            procs.stop(gate.process)
        stats = gate.stats()
        calls = stats.get("written", 0) / 2  # call.allowed + call.completed per call
        if calls:
            lines.append(
                f"{label}, GET 1 KiB at c=1: {stats['batches'] / calls:.2f} audit commits per "
                f"call ({stats['written']:,} events in {stats['batches']:,} commits), "
                f"p50 {cell.p50_us:,.0f} µs"
            )
    return lines


def experiments_table(rows: list[tuple[str, str, int, Cell, dict[str, int]]]) -> None:
    table(
        "jitgate variants on the fast upstream (fresh processes, measured interleaved; only the first is what ships)",
        ["variant", "operation", "c", "p50 µs", "p99 µs", "req/s", "audit events/commit"],
        [
            (
                label,
                name,
                concurrency,
                us(cell.p50_us),
                us(cell.p99_us),
                f"{cell.rps:,.0f}",
                f"{stats['written'] / stats['batches']:.1f}" if stats.get("batches") else "",
            )
            for label, name, concurrency, cell, stats in rows
        ],
    )


# --- profile ------------------------------------------------------------------------------------
PROFILE_RATE = 250


def profile(py_spy: str, wrk: Wrk, stack: Stack, mode: Mode, out: Path) -> tuple[dict, Cell]:
    """py-spy of jitgate under the fast-upstream GET 1 KiB load at c=32 (speedscope format).

    ``--gil`` keeps only samples of the thread holding the GIL: a CPython process serving on
    one event loop is bound by the GIL, so this is where its throughput goes.
    """
    op = OPS[0]
    port = stack.ports["jitgate"]
    count = op.pool // mode.pool_divisor
    pool = wrk.write_pool(
        "profile", build_pool(op, f"127.0.0.1:{port}", stack.creds_for("jitgate", op), count)
    )
    load = subprocess.Popen(
        wrk.command(port, 32, mode.profile_seconds + 2, pool),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.7)
        subprocess.run(
            [
                py_spy,
                "record",
                "--pid",
                str(stack.pids["jitgate"]),
                "--duration",
                str(mode.profile_seconds),
                "--rate",
                str(PROFILE_RATE),
                "--gil",
                "--function",
                "--format",
                "speedscope",
                "--output",
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=mode.profile_seconds + 60,
        )
    finally:
        output, _ = load.communicate(timeout=mode.profile_seconds + 30)
    return json.loads(out.read_text()), parse_wrk(output, count)


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _package(file: str) -> str:
    short = _short(file)
    parts = short.split("/")
    if parts[0] == "jitgate" and len(parts) > 2:
        return "jitgate." + parts[1]
    if parts[0] == "jitgate":
        return short
    return parts[0].removesuffix(".py")


def profile_tables(data: dict, seconds: int, top: int) -> None:
    frames = data["shared"]["frames"]
    self_counts: Counter[int] = Counter()
    total_counts: Counter[int] = Counter()
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for prof in data["profiles"]:
        name = prof["name"].split('"')[1] if '"' in prof["name"] else prof["name"]
        for stack in prof["samples"]:
            samples += 1
            threads[name] += 1
            if stack:
                self_counts[stack[-1]] += 1
                packages[_package(frames[stack[-1]].get("file", "?"))] += 1
                for index in set(stack):
                    total_counts[index] += 1
    if not samples:
        console.print("[yellow]py-spy recorded no samples[/yellow]")
        return

    def label(index: int) -> str:
        frame = frames[index]
        return escape(f"{frame['name']}  {_short(frame.get('file', '?'))}:{frame.get('line', '?')}")

    held = samples / (PROFILE_RATE * seconds)
    console.print(
        f"py-spy --gil: {samples:,} samples at {PROFILE_RATE} Hz over {seconds}s, so some "
        f"thread held the GIL {held:.0%} of the time; shares below are of these samples"
    )
    table(
        "profile: which thread holds the GIL",
        ["thread", "share"],
        [(name, pct(count / samples)) for name, count in threads.most_common()],
    )
    table(
        "profile: self time by package",
        ["package", "self"],
        [(name, pct(count / samples)) for name, count in packages.most_common(top)],
    )
    table(
        "profile: top functions by self time",
        ["function", "self", "total"],
        [
            (label(i), pct(count / samples), pct(total_counts[i] / samples))
            for i, count in self_counts.most_common(top)
        ],
    )
    boring = ("threading.py", "runpy", "asyncio/runners.py", "asyncio/base_events.py")
    interesting = [
        (i, count)
        for i, count in total_counts.most_common()
        if not any(b in frames[i].get("file", "") for b in boring)
        and "gateway_launcher" not in frames[i].get("file", "")
    ]
    table(
        "profile: top functions by total time (thread and event-loop plumbing left out)",
        ["function", "total", "self"],
        [
            (label(i), pct(count / samples), pct(self_counts[i] / samples))
            for i, count in interesting[:top]
        ],
    )


def pieces_table(rows: list[tuple[str, str, float]]) -> None:
    table(
        "one jitgate call step by step, in-process (median µs; benchmarks/gateway_pieces.py)",
        ["call", "step", "µs"],
        [(call, step, f"{value:,.1f}") for call, step, value in rows],
    )


def in_process(stack: Stack, mode: Mode) -> list[dict[str, object]]:
    """benchmarks/gateway_inprocess.py against this stack's upstream, in a process of its own."""
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gateway_inprocess",
            "--upstream-port",
            str(stack.upstream_port),
            "--calls",
            str(mode.in_process_calls),
            "--reps",
            str(mode.reps + 1),
            "--json",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    rows: list[dict[str, object]] = json.loads(output.stdout.strip().splitlines()[-1])
    return rows


def in_process_table(rows: list[dict[str, object]]) -> None:
    hop = {
        (row["op"], row["concurrency"]): float(row["cpu_us"])  # type: ignore[arg-type]
        for row in rows
        if row["app"] == "python hop"
    }
    out = []
    for row in rows:
        cpu = float(row["cpu_us"])  # type: ignore[arg-type]
        base = hop[row["op"], row["concurrency"]]
        out.append(
            (
                row["op"],
                row["concurrency"],
                row["app"],
                f"{cpu:,.1f}",
                f"{cpu - base:+,.1f}" if row["app"] != "python hop" else "",
                f"{base / cpu:.0%}",
            )
        )
    table(
        "whole calls in-process: the app alone, no server, no wrk (CPU of the process per call; "
        "benchmarks/gateway_inprocess.py)",
        ["operation", "c", "app", "CPU µs a call", "beyond the hop", "hop's CPU ÷ this"],
        out,
    )


# --- targets ------------------------------------------------------------------------------------
def targets_table(fast: Results, moto: Results, big: list[tuple[str, str, Transfer]]) -> None:
    rows = []

    def verdict(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]missed[/red]"

    for op in OPS:
        added = fast[op.name, "jitgate", 1].p50_us - fast[op.name, "direct", 1].p50_us
        rows.append(
            (
                "added p50, c=1, fast upstream",
                op.name,
                f"{added:+,.0f} µs",
                "≤ 300 µs",
                verdict(added <= ADDED_P50_TARGET_US),
            )
        )
    for hop in ("python hop", "aiohttp hop"):
        for op in OPS:
            ratio = fast[op.name, "jitgate", 32].rps / fast[op.name, hop, 32].rps
            rows.append(
                (
                    f"req/s ÷ {hop}, c=32, fast",
                    op.name,
                    pct(ratio),
                    "≥ 60%",
                    verdict(ratio >= HOP_RATIO_TARGET),
                )
            )
    for concurrency in (32, 1):
        for op in OPS:
            ratio = (
                moto[op.name, "jitgate", concurrency].rps / moto[op.name, "direct", concurrency].rps
            )
            rows.append(
                (
                    f"req/s ÷ direct, c={concurrency}, moto",
                    op.name,
                    pct(ratio),
                    "≥ 95%",
                    verdict(ratio >= MOTO_RATIO_TARGET),
                )
            )
    direct = {name: t for name, path, t in big if path == "direct"}
    for name, path, t in big:
        if path != "jitgate":
            continue
        ratio = t.mib_s / direct[name].mib_s
        rows.append(
            (
                "big object throughput ÷ direct",
                name,
                pct(ratio),
                "≥ 80%",
                verdict(ratio >= BIG_RATIO_TARGET),
            )
        )
        growth = t.rss_growth_mib or 0.0
        rows.append(
            (
                "big object jitgate peak RSS growth",
                name,
                f"{growth:+.1f} MiB",
                "< 64 MiB",
                verdict(growth < BIG_RSS_TARGET_MIB),
            )
        )
    table("issue 3 targets", ["target", "case", "measured", "target", ""], rows)


# --- main ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def workspace() -> Iterator[tuple[Path, Processes]]:
    workdir = Path(tempfile.mkdtemp(prefix="jitgate-bench-gateway-"))
    procs = Processes(workdir)
    try:
        yield workdir, procs
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def tmpfs_dir(procs: Processes, prefix: str) -> Path:
    """A directory in /dev/shm when there is one (no disk I/O next to the audit log's fsyncs)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
        procs.adopt(prefix, _Removed(path))
        return path
    path = procs.workdir / prefix
    path.mkdir()
    return path


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter cells, a smaller big object")
    parser.add_argument("--profile-out", default="/tmp/jitgate-gateway-profile.speedscope.json")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    tools = find_tools()
    nginx = tools["nginx"] or "nginx"
    started = time.perf_counter()
    before = load_note()
    console.print(
        f"gateway benchmark ({'quick' if args.quick else 'full'}): best of {mode.reps} x "
        f"{mode.seconds}s wrk runs per cell, all on 127.0.0.1; {before}"
    )
    with workspace() as (_, procs):
        wrk = Wrk(tmpfs_dir(procs, "jitgate-bench-wrk-"), tools["wrk"] or "wrk")

        fast = fast_upstream(procs, nginx, mode.big)
        open_paths(procs, fast, nginx, "fast")
        fast_results = run_matrix(wrk, fast, mode)
        assert fast.jitgate is not None
        fast_stats = _stop_jitgate(procs, fast.jitgate)
        restart_python_paths(procs, fast, "fast-fresh")
        big = big_transfers(fast, mode.big, mode.big_reps)
        profiled = None
        if tools["py-spy"]:
            profiled = profile(tools["py-spy"], wrk, fast, mode, Path(args.profile_out))
        console.print("  measured the big object and the profile")
        variants = experiments(procs, wrk, fast, mode)
        commit_notes = commits_per_call(procs, wrk, fast, mode)
        console.print("  measured the jitgate variants")
        pieces = gateway_pieces.measure(mode.pieces_count)
        whole_calls = in_process(fast, mode)
        console.print("  measured whole calls in-process")

        moto = moto_upstream(procs)
        open_paths(procs, moto, nginx, "moto")
        moto_results = run_matrix(wrk, moto, mode)
        assert moto.jitgate is not None
        moto_stats = _stop_jitgate(procs, moto.jitgate)

    console.print()
    matrix_table(fast, fast_results)
    matrix_table(moto, moto_results)
    for name, stats in (("fast upstream", fast_stats), ("moto", moto_stats)):
        if stats.get("batches"):
            console.print(
                f"audit group commit, jitgate on the {name}: {stats['written']:,} events in "
                f"{stats['batches']:,} commits ({stats['written'] / stats['batches']:.1f} per commit)"
            )
    big_table(big)
    experiments_table(variants)
    for line in commit_notes:
        console.print(line)
    pieces_table(pieces)
    in_process_table(whole_calls)
    if profiled is not None:
        data, cell = profiled
        console.print(
            f"profile load: GET 1 KiB, fast upstream, c=32, py-spy attached: {cell.rps:,.0f} req/s, "
            f"p50 {cell.p50_us:,.0f} µs"
        )
        profile_tables(data, mode.profile_seconds, 15)
        console.print(f"speedscope profile: {args.profile_out}")
    targets_table(fast_results, moto_results, big)
    console.print(
        "signatures: every pooled request is signed (jitgate.awsapi.sigv4.sign_headers, about "
        "8 µs each) just before its cell, with its own amz-sdk-invocation-id; pools are replayed "
        "round-robin within SigV4's 5-minute window"
    )
    console.print(
        f"before: {before}; after: {load_note()}. Everything shares these CPUs (wrk, upstream, "
        "proxy, and whatever else runs on the machine): compare within one run."
    )
    console.print(f"total time {time.perf_counter() - started:.0f}s")


def _stop_jitgate(procs: Processes, gate: Jitgate) -> dict[str, int]:
    procs.stop(gate.process)
    return gate.stats()


if __name__ == "__main__":
    main()
