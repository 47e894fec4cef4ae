"""Reading a copy back for verification: a JSON Lines file, or an S3 prefix.

Both yield the copy checkpoint by checkpoint, each with the batches it lists, for
``verify.verify_record``. They tolerate what at-least-once shipping legitimately produces (a
record sent twice, identical) and report what it never produces: a record sent twice with
different content, an S3 object overwritten by a later version, a line that is not a record.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jitgate.audit.checkpoint import Checkpoint
from jitgate.audit.records import (
    CHECKPOINT_PREFIX,
    EVENT_PREFIX,
    KEY_PREFIX,
    RecordError,
    Row,
    batch_object_name,
    parse_checkpoint_line,
    parse_event_line,
    parse_key_line,
    sha256_hex,
)
from jitgate.audit.signing import KeyEntry, SigningError
from jitgate.audit.verify import BatchData, CopySegment, Problem


def _checkpoint_number(body: str) -> int | None:
    try:
        return Checkpoint.parse(body, "").number
    except ValueError:
        return None


# --- a file -------------------------------------------------------------------------------------
class FileCopy:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"file:{self.path}"
        self._keys: list[KeyEntry] | None = None
        self._problems: list[Problem] = []
        self._warnings: list[str] = []

    def keys(self) -> list[KeyEntry]:
        if self._keys is None:
            self._keys = []
            try:
                with open(self.path, "rb") as handle:
                    for raw in handle:
                        if raw.startswith(KEY_PREFIX.encode()):
                            try:
                                self._keys.append(
                                    KeyEntry.from_dict(parse_key_line(raw.decode().rstrip("\n")))
                                )
                            except (RecordError, SigningError):
                                continue
            except OSError:
                pass
        return self._keys

    def segments(self) -> Iterator[CopySegment]:
        """Checkpoint by checkpoint. Fast path: the bytes between two checkpoint records are
        exactly the next checkpoint's batches (checked against its signed hashes without
        looking at a single line). Otherwise the lines are parsed one by one: identical
        redeliveries are dropped, anything else is named."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed in finally below
        except OSError as exc:
            self._problems.append(
                Problem("copy_missing", f"copy: cannot read {self.path}: {exc.strerror}", "copy")
            )
            return
        try:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield from self._scan(data)
        finally:
            handle.close()

    def _line_number(self, data: Any, offset: int) -> int:
        return data[:offset].count(b"\n") + 1

    def _scan(self, data: Any) -> Iterator[CopySegment]:
        marker = CHECKPOINT_PREFIX.encode()
        position = 0
        carry: list[tuple[int, bytes]] = []  # lines for a later checkpoint (slow path)
        previous = b""  # the last sealed segment's event lines (redelivery allowed)
        sealed_to = 0
        last_number = 0
        last_record: bytes | None = None
        while True:
            if data[position : position + len(marker)] == marker:
                start = position
            else:
                start = data.find(b"\n" + marker, position)
                start = start + 1 if start >= 0 else -1
            if start < 0:
                break
            end = data.find(b"\n", start)
            if end < 0:
                break  # a torn checkpoint line: reported with the tail below
            record = data[start : end + 1]
            region_start, region = position, data[position:start]
            position = end + 1
            body, signature = "", ""
            try:
                body, signature = parse_checkpoint_line(record[:-1].decode("utf-8"))
                cp: Checkpoint | None = Checkpoint.parse(body, signature)
            except (RecordError, UnicodeDecodeError, ValueError):
                cp = None
            number = cp.number if cp is not None else _checkpoint_number(body)
            if number is not None and number <= last_number:
                if record != last_record:
                    self._problems.append(
                        Problem(
                            "copy_differs",
                            f"copy: checkpoint {number} appears again at line "
                            f"{self._line_number(data, start)} with different content",
                            "copy",
                            None,
                            number,
                        )
                    )
                self._redelivered(data, region_start, region, previous, sealed_to, last_number)
                continue
            if cp is None:
                if not body:
                    self._line_problem(self._line_number(data, start), "not a checkpoint record")
                    continue
                segment = CopySegment(number or last_number + 1, body, signature, [])
            else:
                events = _skip_keys(region)
                fast = None if carry else self._fast(cp, events)
                if fast is not None:
                    segment, previous = fast, events
                else:
                    lines = carry + _lines(region, region_start)
                    segment, sealed_lines, carry = self._slow(
                        data, cp, lines, previous, sealed_to, last_number
                    )
                    previous = b"".join(raw for _, raw in sealed_lines)
                sealed_to = max(sealed_to, cp.last_seq)
            last_number = segment.number
            last_record = record
            yield segment
        self._tail(data, position, carry, previous, sealed_to, last_number)

    def _tail(
        self,
        data: Any,
        position: int,
        carry: list[tuple[int, bytes]],
        previous: bytes,
        sealed_to: int,
        last_number: int,
    ) -> None:
        """After the last checkpoint: events still awaiting theirs, or lines that should not
        be there."""
        known = set(previous.splitlines(keepends=True))
        pending = list(carry)
        for offset, raw in _lines(data[position:], position):
            if not raw.endswith(b"\n"):
                self._problems.append(
                    Problem(
                        "copy_differs",
                        f"copy: line {self._line_number(data, offset)} of {self.path} is "
                        f"incomplete (torn write)",
                        "copy",
                    )
                )
            elif raw.startswith(EVENT_PREFIX.encode()):
                pending.append((offset, raw))
            elif not raw.startswith(KEY_PREFIX.encode()) and raw.strip():
                self._line_problem(self._line_number(data, offset), "not a jitgate record")
        if pending:
            seqs = []
            for offset, raw in pending:
                try:
                    seq = parse_event_line(raw[:-1].decode("utf-8"))[0]
                except (RecordError, UnicodeDecodeError):
                    self._line_problem(self._line_number(data, offset), "not an event line")
                    continue
                if seq > sealed_to:
                    seqs.append(seq)
                elif raw not in known:
                    self._problems.append(
                        Problem(
                            "copy_differs",
                            f"copy: event {seq} appears again at line "
                            f"{self._line_number(data, offset)}, after checkpoint {last_number} "
                            f"sealed it",
                            "copy",
                            seq,
                        )
                    )
            if seqs:
                self._warnings.append(
                    f"copy: {len(seqs)} event(s) ({min(seqs)}..{max(seqs)}) at the end of "
                    f"{self.path} await their checkpoint (shipping was interrupted or is in "
                    f"progress)"
                )

    def _redelivered(
        self,
        data: Any,
        region_start: int,
        region: bytes,
        previous: bytes,
        sealed_to: int,
        last_number: int,
    ) -> None:
        """Lines before a repeated checkpoint record must repeat that checkpoint's events."""
        known = set(previous.splitlines(keepends=True))
        for offset, raw in _lines(region, region_start):
            if raw.startswith(KEY_PREFIX.encode()) or raw in known:
                continue
            self._problems.append(
                Problem(
                    "copy_differs",
                    f"copy: line {self._line_number(data, offset)} of {self.path} repeats "
                    f"checkpoint {last_number}'s events with different content",
                    "copy",
                )
            )

    @staticmethod
    def _fast(cp: Checkpoint, events: bytes) -> CopySegment | None:
        if events.count(b"\n") != cp.events:
            return None
        if len(cp.batches) == 1:
            (batch,) = cp.batches
            if sha256_hex(events) != batch.sha256:
                return None
            return CopySegment(cp.number, cp.body, cp.signature, [BatchData(batch, events)])
        lines = events.splitlines(keepends=True)
        batches: list[BatchData] = []
        index = 0
        for batch in cp.batches:
            size = batch.last_seq - batch.first_seq + 1
            part = b"".join(lines[index : index + size])
            if sha256_hex(part) != batch.sha256:
                return None
            batches.append(BatchData(batch, part))
            index += size
        return CopySegment(cp.number, cp.body, cp.signature, batches)

    def _slow(
        self,
        data: Any,
        cp: Checkpoint,
        pending: list[tuple[int, bytes]],
        previous: bytes,
        sealed_to: int,
        last_number: int,
    ) -> tuple[CopySegment, list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        sealed: dict[int, bytes] = {}
        for raw in previous.splitlines(keepends=True):
            try:
                sealed[parse_event_line(raw[:-1].decode("utf-8"))[0]] = raw
            except (RecordError, UnicodeDecodeError):
                continue
        lines: dict[int, tuple[str, Row, int, bytes]] = {}
        later: list[tuple[int, bytes]] = []
        for offset, raw in pending:
            if raw.startswith(KEY_PREFIX.encode()) or not raw.strip():
                continue
            number = self._line_number(data, offset)
            if not raw.startswith(EVENT_PREFIX.encode()):
                self._line_problem(number, "not a jitgate record")
                continue
            line = raw[:-1].decode("utf-8", errors="replace")
            try:
                row = parse_event_line(line)
            except RecordError as exc:
                self._line_problem(number, str(exc))
                continue
            seq = row[0]
            if seq <= sealed_to:
                if sealed.get(seq) != raw:
                    self._problems.append(
                        Problem(
                            "copy_differs",
                            f"copy: event {seq} appears again at line {number}, after "
                            f"checkpoint {last_number} sealed it",
                            "copy",
                            seq,
                        )
                    )
                continue
            if seq > cp.last_seq:
                later.append((number, raw))
                continue
            known = lines.get(seq)
            if known is not None:
                if known[0] != line:
                    self._problems.append(
                        Problem(
                            "copy_differs",
                            f"copy: event {seq} appears twice with different content "
                            f"(line {number})",
                            "copy",
                            seq,
                        )
                    )
                continue
            lines[seq] = (line, row, offset, raw)
        batches: list[BatchData] = []
        used: set[int] = set()
        for batch in cp.batches:
            found = [lines.get(seq) for seq in range(batch.first_seq, batch.last_seq + 1)]
            missing = [batch.first_seq + i for i, item in enumerate(found) if item is None]
            used.update(seq for seq in range(batch.first_seq, batch.last_seq + 1) if seq in lines)
            if missing:
                batches.append(
                    BatchData(batch, None, problem=f"events {_ranges(missing)} are not in the file")
                )
                continue
            items = [item for item in found if item is not None]
            data = ("\n".join(item[0] for item in items) + "\n").encode("utf-8")
            batches.append(BatchData(batch, data, [item[1] for item in items]))
        segment = CopySegment(cp.number, cp.body, cp.signature, batches)
        for seq in sorted(set(lines) - used):
            segment.problems.append(
                Problem(
                    "copy_differs",
                    f"copy: event {seq} is not part of checkpoint {cp.number} that covers it "
                    f"(inserted)",
                    "copy",
                    seq,
                    cp.number,
                )
            )
        sealed_now = [(lines[seq][2], lines[seq][3]) for seq in sorted(used)]
        return segment, sealed_now, later

    def _line_problem(self, number: int, what: str) -> None:
        self._problems.append(
            Problem("copy_differs", f"copy: line {number} of {self.path}: {what}", "copy")
        )

    def finish(self) -> tuple[list[Problem], list[str]]:
        return self._problems, self._warnings


def _lines(region: bytes, base: int) -> list[tuple[int, bytes]]:
    """(offset, raw line) for each line of ``region`` found at offset ``base``."""
    out = []
    offset = base
    for raw in region.splitlines(keepends=True):
        out.append((offset, raw))
        offset += len(raw)
    return out


def _skip_keys(region: bytes) -> bytes:
    """The region without the key records the shipper puts before a new key's first batch."""
    prefix = KEY_PREFIX.encode()
    while region.startswith(prefix):
        newline = region.find(b"\n")
        if newline < 0:
            return region
        region = region[newline + 1 :]
    return region


def _ranges(seqs: list[int]) -> str:
    parts = []
    start = previous = seqs[0]
    for seq in seqs[1:] + [None]:  # type: ignore[list-item]
        if seq is not None and seq == previous + 1:
            previous = seq
            continue
        parts.append(f"{start}..{previous}" if previous != start else f"{start}")
        if seq is not None:
            start = previous = seq
    return ", ".join(parts)


# --- an S3 prefix ------------------------------------------------------------------------------
_CHECKPOINT_NAME = re.compile(r"checkpoints/(\d{20})\.json")
_BATCH_NAME = re.compile(r"events/(\d{20})-(\d{20})\.jsonl")
_KEY_NAME = re.compile(r"keys/([0-9a-f]{64})\.json")


class S3Copy:
    """An S3 copy, read with list-object-versions so that an object overwritten by a later
    version (possible in a versioned bucket even under Object Lock) is noticed; the oldest
    version, the one jitgate wrote, is the one verified."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, workers: int = 8) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.description = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.workers = workers
        self._objects: dict[str, list[dict[str, Any]]] | None = None
        self._problems: list[Problem] = []
        self._warnings: list[str] = []
        self._referenced: set[str] = set()

    def _name(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _list(self) -> dict[str, list[dict[str, Any]]]:
        if self._objects is not None:
            return self._objects
        objects: dict[str, list[dict[str, Any]]] = {}
        markers: set[str] = set()
        paginator = self.client.get_paginator("list_object_versions")
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                objects.setdefault(self._name(version["Key"]), []).append(version)
            for marker in page.get("DeleteMarkers", []):
                markers.add(self._name(marker["Key"]))
        for name, versions in objects.items():
            # S3 lists a key's versions newest first (LastModified has only second precision)
            versions.reverse()
            if len({v.get("ETag") for v in versions}) > 1:
                self._problems.append(
                    Problem(
                        "copy_overwritten",
                        f"copy: {self.description}/{name} was overwritten after jitgate wrote it "
                        f"({len(versions)} versions that differ; the original is verified)",
                        "copy",
                    )
                )
        for name in sorted(markers):
            self._warnings.append(
                f"copy: {self.description}/{name} carries a delete marker (it is hidden from "
                f"plain listings; its locked versions were used)"
            )
        self._objects = objects
        return objects

    def _get(self, name: str) -> bytes | None:
        versions = self._list().get(name)
        if not versions:
            return None
        original = versions[0]
        response = self.client.get_object(
            Bucket=self.bucket,
            Key=original["Key"],
            VersionId=original["VersionId"],
        )
        return bytes(response["Body"].read())

    def keys(self) -> list[KeyEntry]:
        found = []
        for name in sorted(self._list()):
            if _KEY_NAME.fullmatch(name):
                data = self._get(name)
                try:
                    entry = KeyEntry.from_dict(parse_key_line((data or b"").decode().rstrip("\n")))
                except (RecordError, SigningError, UnicodeDecodeError):
                    continue
                found.append(entry)
        return found

    def _fetch_segment(self, number: int, name: str) -> CopySegment:
        data = self._get(name)
        problems: list[Problem] = []
        try:
            body, signature = parse_checkpoint_line((data or b"").decode("utf-8").rstrip("\n"))
        except (RecordError, UnicodeDecodeError):
            problems.append(
                Problem(
                    "copy_differs",
                    f"copy: {name} is not a checkpoint record",
                    "copy",
                    None,
                    number,
                )
            )
            return CopySegment(number, "{}", "", [], problems)
        try:
            cp = Checkpoint.parse(body, signature)
        except ValueError:
            return CopySegment(number, body, signature, [], problems)
        if cp.number != number:
            problems.append(
                Problem(
                    "copy_differs",
                    f"copy: {name} holds checkpoint {cp.number}",
                    "copy",
                    None,
                    number,
                )
            )
        batches = []
        for batch in cp.batches:
            object_name = batch_object_name(batch.first_seq, batch.last_seq)
            self._referenced.add(object_name)
            payload = self._get(object_name)
            batches.append(
                BatchData(
                    batch,
                    payload,
                    problem=None if payload is not None else f"no object {object_name}",
                )
            )
        return CopySegment(cp.number, body, signature, batches, problems)

    def segments(self) -> Iterator[CopySegment]:
        names = sorted(
            (int(match.group(1)), name)
            for name in self._list()
            if (match := _CHECKPOINT_NAME.fullmatch(name))
        )
        for name in self._list():
            if not (
                _CHECKPOINT_NAME.fullmatch(name)
                or _BATCH_NAME.fullmatch(name)
                or _KEY_NAME.fullmatch(name)
            ):
                self._warnings.append(
                    f"copy: unexpected object {self.description}/{name} (ignored)"
                )
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            queue: list[Future[CopySegment]] = []
            position = 0
            while position < len(names) or queue:
                while position < len(names) and len(queue) < self.workers * 2:
                    number, name = names[position]
                    queue.append(pool.submit(self._fetch_segment, number, name))
                    position += 1
                yield queue.pop(0).result()
        self._last_number = names[-1][0] if names else 0

    def finish(self) -> tuple[list[Problem], list[str]]:
        for name in sorted(self._list()):
            if _BATCH_NAME.fullmatch(name) and name not in self._referenced:
                self._warnings.append(
                    f"copy: {self.description}/{name} is not listed by any checkpoint (ignored; "
                    f"shipping interrupted before its checkpoint, or added by someone else)"
                )
        return self._problems, self._warnings
