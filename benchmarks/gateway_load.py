"""Load for the gateway benchmark: signed requests, wrk replaying them, a raw streaming client.

Signing. Every request is signed with SigV4 by ``jitgate.awsapi.sigv4.sign_headers`` (checked
byte-for-byte against botocore in jitgate's tests; about 8 us a request with a cached signing
key) with a unique, signed ``amz-sdk-invocation-id``, so no two requests of a pool carry the
same signature. A pool is signed just before the cell that sends it; SigV4 allows 5 minutes of
clock skew and a cell lasts seconds, so nothing sent has expired. When a cell outruns its pool
(the fastest paths), wrk replays the pool round-robin: still within the window, and neither
AWS's SigV4 nor jitgate refuses a replayed signature.

Load. ``wrk`` (one thread, closed loop, keep-alive) replays the pool through a small Lua script
that returns the next pre-formatted request and prints wrk's own latency percentiles as JSON.
The 1 GiB transfers use a blocking-socket client (no HTTP library in the way of the bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jitgate.awsapi import sigv4

REGION = "us-east-1"

WRK_SCRIPT = r"""
-- Replay pre-signed requests round-robin (written by benchmarks/gateway_load.py).
local reqs = {}
local n = 0
local i = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  for line in io.lines(args[2]) do
    local len = tonumber(line)
    n = n + 1
    reqs[n] = data:sub(pos, pos + len - 1)
    pos = pos + len
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"status":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Op:
    """One benchmarked call: how to build it and what a good answer looks like."""

    name: str
    service: str
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    expect_body: int | None = None  # exact response body length, when known
    pool: int = 20_000  # distinct signed requests per cell (full run)
    keys: int = 1  # > 1: ``path`` has a {:02d} slot, request i uses key i % keys

    def path_for(self, index: int) -> str:
        return self.path.format(index % self.keys) if self.keys > 1 else self.path

    @property
    def payload_hash(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


DDB_BODY = b'{"TableName":"orders","Key":{"id":{"S":"o-1"}}}'
KIB = 1024
MIB = 1024 * 1024
PUT_KEYS = 90  # with 4 more object ARNs, within a grant's 100 resources

OPS = (
    Op("S3 GetObject 1 KiB", "s3", "GET", "/bench/obj-1k", expect_body=KIB),
    Op("S3 GetObject 1 MiB", "s3", "GET", "/bench/obj-1m", expect_body=MIB, pool=5_000),
    # moto answers 500 to concurrent PUTs of one key: each in-flight PUT gets its own key.
    Op(
        "S3 PutObject 1 MiB",
        "s3",
        "PUT",
        "/bench/put-1m-{:02d}",
        body=b"\x5a" * MIB,
        pool=PUT_KEYS,
        keys=PUT_KEYS,
    ),
    Op(
        "DynamoDB GetItem",
        "dynamodb",
        "POST",
        "/",
        body=DDB_BODY,
        headers=(
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.GetItem"),
        ),
    ),
)


@dataclass(frozen=True)
class Creds:
    access_key: str
    secret_key: str
    token: str | None = None


_KEYS = sigv4.SigningKeyCache()


# What the direct, nginx and bare-hop paths sign with on the fast upstream (nginx ignores it).
FAST_CREDS = Creds("AKIDBENCHFAST", "bench-secret-ignored-by-nginx")


def signed_head(
    method: str,
    path: str,
    host: str,
    creds: Creds,
    service: str,
    payload_hash: str,
    extra: tuple[tuple[str, str], ...] = (),
    content_length: int | None = None,
) -> bytes:
    """The request line and headers of one freshly signed request (the body follows as is)."""
    headers = {"host": host, "amz-sdk-invocation-id": str(uuid.uuid4())}
    headers.update(extra)
    if content_length is not None:
        headers["content-length"] = str(content_length)
    signed = sigv4.sign_headers(
        method=method,
        raw_path=path,
        query="",
        headers=headers,
        payload_hash=payload_hash,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        session_token=creds.token,
        region=REGION,
        service=service,
        now=datetime.now(UTC),
        key_cache=_KEYS,
    )
    headers.update(signed)
    headers["user-agent"] = "jitgate-bench"
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def build_pool(op: Op, host: str, creds: Creds, count: int) -> list[bytes]:
    """``count`` requests for ``op``, each with its own signature, signed now."""
    payload_hash = op.payload_hash if op.body or op.method != "GET" else sigv4.EMPTY_SHA256
    length = len(op.body) if op.method in ("PUT", "POST") else None
    return [
        signed_head(
            op.method, op.path_for(i), host, creds, op.service, payload_hash, op.headers, length
        )
        + op.body
        for i in range(count)
    ]


# --- wrk --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One measured cell: wrk's own latency percentiles and throughput."""

    p50_us: float
    p99_us: float
    rps: float
    requests: int
    errors: int
    signatures: int  # distinct signed requests in the pool
    cpu_us: float | None = None  # the proxy's CPU (user + system, all threads) per request

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.requests > 0


class Wrk:
    """wrk with named request pools (files kept in ``workdir``, best on tmpfs)."""

    def __init__(self, workdir: Path, wrk: str = "wrk") -> None:
        self.workdir = workdir
        self.wrk = wrk
        self.script = workdir / "replay.lua"
        self.script.write_text(WRK_SCRIPT)
        self.sizes: dict[str, int] = {}

    def write_pool(self, name: str, requests: list[bytes]) -> str:
        with (self.workdir / f"{name}.bin").open("wb") as handle:
            for request in requests:
                handle.write(request)
        (self.workdir / f"{name}.idx").write_text("".join(f"{len(r)}\n" for r in requests))
        self.sizes[name] = len(requests)
        return name

    def command(self, port: int, concurrency: int, seconds: int, pool: str) -> list[str]:
        return [
            self.wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "20s",
            "-s",
            str(self.script),
            f"http://127.0.0.1:{port}/",
            "--",
            str(self.workdir / f"{pool}.bin"),
            str(self.workdir / f"{pool}.idx"),
        ]

    def run(self, port: int, concurrency: int, seconds: int, pool: str) -> Cell:
        done = subprocess.run(
            self.command(port, concurrency, seconds, pool),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        return parse_wrk(done.stdout + done.stderr, self.sizes[pool])

    def drop(self, pool: str) -> None:
        for suffix in (".bin", ".idx"):
            (self.workdir / f"{pool}{suffix}").unlink(missing_ok=True)


def parse_wrk(output: str, signatures: int) -> Cell:
    for line in output.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON ") :])
            errors = sum(data[k] for k in ("status", "connect", "read", "write", "timeout"))
            return Cell(
                p50_us=float(data["p50_us"]),
                p99_us=float(data["p99_us"]),
                rps=(data["requests"] - errors) / (data["duration_us"] / 1e6),  # good answers
                requests=int(data["requests"]),
                errors=int(errors),
                signatures=signatures,
            )
    raise RuntimeError(f"wrk printed no result:\n{output[-2000:]}")


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body_bytes: int
    body: bytes  # kept only when small


class RawClient:
    """One keep-alive connection; sends pre-built request bytes, reads and (mostly) discards."""

    def __init__(self, port: int, buffer: int = MIB) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb", buffering=buffer)
        self.scratch = bytearray(buffer)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, head: bytes, body: bytes = b"", *, zeros: int = 0) -> None:
        """Send ``head`` + ``body``, then ``zeros`` zero bytes (streamed, never built whole)."""
        self.sock.sendall(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.sock.sendall(body)
        view = memoryview(bytes(MIB))
        while zeros > 0:
            piece = view[: min(zeros, MIB)]
            self.sock.sendall(piece)
            zeros -= len(piece)

    def receive(self, keep: int = 64 * KIB) -> Response:
        status_line = self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed before a response")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        kept = bytearray()
        total = 0

        def take(count: int) -> None:
            nonlocal total
            while count > 0:
                view = memoryview(self.scratch)[: min(count, len(self.scratch))]
                got = self.reader.readinto(view)
                if not got:
                    raise ConnectionError("connection closed mid-body")
                if len(kept) < keep:
                    kept.extend(view[: min(got, keep - len(kept))])
                total += got
                count -= got

        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.reader.readline().split(b";")[0], 16)
                if size == 0:
                    while self.reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                take(size)
                self.reader.readline()
        else:
            take(int(headers.get("content-length", "0")))
        return Response(status, headers, total, bytes(kept))


def exchange(port: int, requests: list[bytes]) -> list[Response]:
    """Send each request in turn on one connection; the answers."""
    client = RawClient(port)
    try:
        out = []
        for request in requests:
            client.send(request)
            response = client.receive()
            out.append(response)
            if response.headers.get("connection", "").lower() == "close":  # moto does
                client.close()
                client = RawClient(port)
        return out
    finally:
        client.close()


# --- 1 GiB transfers and RSS -------------------------------------------------------------------
def zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(MIB)
    for _ in range(size // MIB):
        digest.update(block)
    digest.update(bytes(size % MIB))
    return digest.hexdigest()


class RssSampler:
    """Peak resident memory of a process during a transfer, from /proc/PID/status.

    VmHWM is reset first (``echo 5 > /proc/PID/clear_refs``) so the peak is this transfer's;
    VmRSS is also sampled every few ms in case the reset is not allowed.
    """

    def __init__(self, pid: int | None, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline_kib = 0
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        assert self.pid is not None
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
        return out

    def __enter__(self) -> RssSampler:
        if self.pid is None:
            return self
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.baseline_kib = self._status()["VmRSS"]
        self.peak_kib = self.baseline_kib
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kib = max(self.peak_kib, self._status()["VmRSS"])

    def __exit__(self, *_: object) -> None:
        if self.pid is None or self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        status = self._status()
        self.peak_kib = max(self.peak_kib, status["VmHWM"], status["VmRSS"])

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.baseline_kib) / 1024


@dataclass(frozen=True)
class Transfer:
    seconds: float
    bytes: int
    status: int
    rss_base_mib: float | None
    rss_peak_mib: float | None

    @property
    def mib_s(self) -> float:
        return self.bytes / MIB / self.seconds

    @property
    def rss_growth_mib(self) -> float | None:
        if self.rss_base_mib is None or self.rss_peak_mib is None:
            return None
        return self.rss_peak_mib - self.rss_base_mib


def transfer(
    port: int,
    head: Callable[[], bytes],
    *,
    upload: int = 0,
    pid: int | None = None,
) -> Transfer:
    """One big GET (``upload`` 0) or PUT of ``upload`` zero bytes, timed, with RSS of ``pid``."""
    client = RawClient(port)
    try:
        with RssSampler(pid) as rss:
            started = time.perf_counter()
            client.send(head(), zeros=upload)
            response = client.receive()
            seconds = time.perf_counter() - started
    finally:
        client.close()
    moved = upload or response.body_bytes
    if pid is None:
        return Transfer(seconds, moved, response.status, None, None)
    return Transfer(seconds, moved, response.status, rss.baseline_kib / 1024, rss.peak_kib / 1024)
