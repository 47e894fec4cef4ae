"""The record you can defend: signing, shipping, status, verification, rotation, retention.

``AuditIntegrity`` composes the pieces for one process (``core.integrity``). The server runs
``run()`` beside its listeners: a checkpoint at start, one every interval (even when nothing
happened, so a gap is provable), one on shutdown, and shipping to every sink as checkpoints
appear. Everything here is replica-safe: checkpoints are numbered by primary key and sinks are
shipped under a lease, so several servers may share one database.

Time comes from the injected clock: tests call ``tick()`` after moving a FakeClock.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from jitgate.audit.checkpoint import Checkpoint, Checkpointer
from jitgate.audit.log import AuditLog, NewEvent
from jitgate.audit.retention import PruneResult, prune
from jitgate.audit.settings import AuditSettings, SinkConfig, load_audit_settings
from jitgate.audit.shipper import Shipper
from jitgate.audit.signing import (
    ROTATION_GRACE,
    FileSigner,
    KeyEntry,
    Keyring,
    KeyringFile,
    KmsSigner,
    Signer,
    SigningError,
    create_key_file,
)
from jitgate.audit.sinks import FileSink, S3Sink, Sink, SinkError
from jitgate.audit.verify import CopySource, IntegrityReport, verify_record
from jitgate.clock import Clock, isoformat
from jitgate.config import Settings
from jitgate.errors import InvalidRequest
from jitgate.store.db import Database

log = logging.getLogger(__name__)

KEY_ROTATED_EVENT = "audit.key_rotated"
_BACKOFF_MAX = 60.0
_PRUNE_EVERY = timedelta(hours=1)


def s3_client(region: str | None, endpoint_url: str | None = None) -> Any:
    """An S3 client with jitgate's own AWS identity (the default credential chain)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name=region or "us-east-1",
        endpoint_url=endpoint_url,
        config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 2}),
    )


def sink_from_config(config: SinkConfig, region: str) -> Sink:
    if config.type == "file":
        assert config.path is not None
        return FileSink(config.path, name=config.name)
    assert config.bucket is not None
    return S3Sink(
        s3_client(config.region or region, config.endpoint_url),
        config.bucket,
        config.prefix,
        retain_days=config.retain_days,
        object_lock=config.object_lock,
        name=config.name,
    )


def ensure_signing_key(settings: Settings) -> list[Any]:
    """Create the file signing key (0600) when the config uses one; ``jitgate init`` calls
    this. Returns the paths it created."""
    audit = load_audit_settings(settings)
    if audit.signing != "file" or audit.signing_key_path.exists():
        return []
    create_key_file(audit.signing_key_path)
    return [audit.signing_key_path]


class AuditIntegrity:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: AuditSettings,
        *,
        audit: AuditLog | None = None,
        signer: Signer | None = None,
        sinks: list[Sink] | None = None,
        kms_client: Any = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.audit = audit or AuditLog(db)
        self.keyring_file = KeyringFile(settings.keyring_path)
        self._signer = signer
        self._kms_client = kms_client
        self._checkpointer: Checkpointer | None = None
        self.sinks: list[Sink] = (
            list(sinks)
            if sinks is not None
            else [sink_from_config(c, settings.aws_region) for c in settings.sinks]
        )
        self.shipper = Shipper(db, clock, self.keyring_file, self.sinks)
        self.last_error: str | None = None
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, datetime] = {}
        self._next_prune: datetime | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, db: Database, clock: Clock, audit: AuditLog | None = None
    ) -> AuditIntegrity:
        return cls(db, clock, load_audit_settings(settings), audit=audit)

    # --- composition ---------------------------------------------------------------------------
    @property
    def signer(self) -> Signer:
        if self._signer is None:
            if self.settings.signing == "kms":
                client = self._kms_client
                if client is None:
                    import boto3

                    client = boto3.client("kms", region_name=self.settings.aws_region)
                assert self.settings.kms_key_id is not None
                self._signer = KmsSigner(client, self.settings.kms_key_id)
            else:
                self._signer = FileSigner(self.settings.signing_key_path)
        return self._signer

    @property
    def checkpointer(self) -> Checkpointer:
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(
                self.db,
                self.clock,
                self.signer,
                self.keyring_file,
                interval_seconds=self.settings.checkpoint_interval_seconds,
                max_batch_events=self.settings.max_batch_events,
            )
        return self._checkpointer

    def set_sinks(self, sinks: list[Sink]) -> None:
        """Replace the configured sinks (the demo and tests wire their own)."""
        for sink in self.sinks:
            sink.close()
        self.sinks = list(sinks)
        self.shipper.sinks = self.sinks

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    # --- the background work -------------------------------------------------------------------
    def checkpoint(self, reason: str = "manual", *, only_if_due: bool = False) -> Checkpoint | None:
        try:
            made = self.checkpointer.make(reason, only_if_due=only_if_due)
        except Exception as exc:
            self.last_error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = None
        return made

    def ship(self, *, force: bool = True) -> dict[str, str | None]:
        """Ship pending checkpoints to every sink; the error (or None) per sink. Without
        ``force`` a sink that failed recently is skipped until its back-off passes."""
        now = self.clock.now()
        results: dict[str, str | None] = {}
        for sink in self.sinks:
            if not force and now < self._retry_at.get(sink.name, now):
                continue
            try:
                self.shipper.ship(sink)
            except SinkError as exc:
                failures = self._failures.get(sink.name, 0) + 1
                self._failures[sink.name] = failures
                delay = min(_BACKOFF_MAX, 2.0 ** min(failures, 6))
                self._retry_at[sink.name] = now + timedelta(seconds=delay)
                results[sink.name] = exc.message
                continue
            self._failures.pop(sink.name, None)
            self._retry_at.pop(sink.name, None)
            results[sink.name] = None
        return results

    def tick(self) -> None:
        """One pass of the background loop: checkpoint when due, ship, prune when due."""
        try:
            self.checkpoint("interval", only_if_due=True)
        except Exception:  # noqa: BLE001 - recorded in last_error and the health alarm
            log.exception("audit checkpoint failed")
        self.ship(force=False)
        self._maybe_prune()

    def _maybe_prune(self) -> None:
        if self.settings.retention_seconds is None:
            return
        now = self.clock.now()
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY
        try:
            result = prune(self, now)
            if result.pruned:
                log.info("audit retention: %s", result.message)
        except Exception:  # noqa: BLE001
            log.exception("audit retention pass failed")

    def startup(self) -> None:
        try:
            self.checkpoint("startup")
        except Exception:  # noqa: BLE001
            log.exception("audit startup checkpoint failed")
        self.ship()

    def shutdown(self) -> None:
        try:
            self.checkpoint("shutdown")
        except Exception:  # noqa: BLE001
            log.exception("audit shutdown checkpoint failed")
        self.ship(force=False)  # a sink that is down is not waited for; the cursor remembers

    async def run(self, poll: float = 1.0) -> None:
        """Checkpoint and ship until cancelled (the server's background job). Shipping runs
        in its own loop so that a slow sink never delays a checkpoint."""
        await asyncio.to_thread(self.startup)

        async def checkpoints() -> None:
            while True:
                await asyncio.sleep(poll)
                try:
                    await asyncio.to_thread(self.checkpoint, "interval", only_if_due=True)
                    await asyncio.to_thread(self._maybe_prune)
                except Exception:  # noqa: BLE001
                    log.exception("audit checkpoint failed")

        async def shipping() -> None:
            while True:
                await asyncio.sleep(poll)
                try:
                    await asyncio.to_thread(self.ship, force=False)
                except Exception:  # noqa: BLE001
                    log.exception("audit shipping failed")

        tasks = [asyncio.create_task(checkpoints()), asyncio.create_task(shipping())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        alarms: list[str] = []
        latest = self.checkpointer_latest()
        head_seq, _ = self.audit.head()
        interval = self.settings.checkpoint_interval_seconds
        checkpoint: dict[str, Any] = {
            "interval_seconds": interval,
            "number": None,
            "ts": None,
            "age_seconds": None,
            "last_seq": 0,
            "unsealed_events": head_seq,
            "error": self.last_error,
        }
        if latest is not None:
            age = (now - latest.when).total_seconds()
            checkpoint.update(
                number=latest.number,
                ts=latest.ts,
                age_seconds=round(age, 1),
                last_seq=latest.last_seq,
                unsealed_events=max(0, head_seq - latest.last_seq),
                key_fingerprint=latest.key_fingerprint,
            )
            if latest.reason != "shutdown" and age > 2 * interval + 5:
                alarms.append(
                    f"no checkpoint for {int(age)}s (interval {interval}s): checkpoints have stalled"
                )
        elif head_seq:
            alarms.append(f"{head_seq} events and no signed checkpoint yet")
        if self.last_error:
            alarms.append(f"checkpoint failed: {self.last_error}")
        alarm_after = timedelta(seconds=self.settings.sink_alarm_after_seconds)
        sinks = self.shipper.status(alarm_after)
        for sink in sinks:
            if sink["alarm"]:
                reason = f": {sink['last_error']}" if sink["last_error"] else ""
                alarms.append(
                    f"sink {sink['name']} is {sink['lag_seconds']:.0f}s behind "
                    f"({sink['pending_checkpoints']} checkpoints, {sink['lag_events']} events)"
                    f"{reason}"
                )
        return {
            "alarm": bool(alarms),
            "alarms": alarms,
            "head_seq": head_seq,
            "checkpoint": checkpoint,
            "sinks": sinks,
            "sink_alarm_after_seconds": self.settings.sink_alarm_after_seconds,
        }

    def health(self) -> dict[str, Any]:
        """``status()`` for /healthz; never raises (a failure is itself an alarm)."""
        try:
            return self.status()
        except Exception as exc:  # noqa: BLE001
            return {"alarm": True, "alarms": [f"audit integrity status failed: {exc}"]}

    def checkpointer_latest(self) -> Checkpoint | None:
        from jitgate.audit.checkpoint import latest_checkpoint

        with self.db.read() as connection:
            return latest_checkpoint(connection)

    def metrics(self) -> str:
        """The status as Prometheus text exposition."""
        status = self.health()
        lines = [
            "# HELP jitgate_audit_alarm 1 when the record is at risk (details: /v1/audit/status)",
            "# TYPE jitgate_audit_alarm gauge",
            f"jitgate_audit_alarm {int(bool(status.get('alarm')))}",
        ]
        checkpoint = status.get("checkpoint") or {}
        if "head_seq" in status:
            lines += [
                "# TYPE jitgate_audit_head_seq gauge",
                f"jitgate_audit_head_seq {status['head_seq']}",
                "# TYPE jitgate_audit_unsealed_events gauge",
                f"jitgate_audit_unsealed_events {checkpoint.get('unsealed_events', 0)}",
            ]
        if checkpoint.get("age_seconds") is not None:
            lines += [
                "# TYPE jitgate_audit_checkpoint_age_seconds gauge",
                f"jitgate_audit_checkpoint_age_seconds {checkpoint['age_seconds']}",
            ]
        sinks = status.get("sinks") or []
        if sinks:
            lines += [
                "# TYPE jitgate_audit_sink_lag_seconds gauge",
                "# TYPE jitgate_audit_sink_lag_events gauge",
                "# TYPE jitgate_audit_sink_alarm gauge",
            ]
            for sink in sinks:
                label = sink["name"].replace("\\", "\\\\").replace('"', '\\"')
                lines += [
                    f'jitgate_audit_sink_lag_seconds{{sink="{label}"}} {sink["lag_seconds"]}',
                    f'jitgate_audit_sink_lag_events{{sink="{label}"}} {sink["lag_events"]}',
                    f'jitgate_audit_sink_alarm{{sink="{label}"}} {int(sink["alarm"])}',
                ]
        return "\n".join(lines) + "\n"

    # --- keys ----------------------------------------------------------------------------------
    def keyring(self) -> Keyring:
        return self.keyring_file.load()

    def public_keys(self) -> dict[str, Any]:
        """What GET /v1/audit/keys serves: every public key with its validity window."""
        keyring = self.keyring_file.load()
        current = keyring.current()
        return {
            "keys": [entry.as_dict() for entry in keyring.entries.values()],
            "current": current.fingerprint if current else None,
        }

    def rotate_key(self, actor: str = "local:cli") -> tuple[str | None, str]:
        """Replace the file signing key. The old key signs a last checkpoint and stays in the
        keyring with a closed window, so every old checkpoint still verifies; the rotation is
        recorded as an event and sealed by the new key's first checkpoint."""
        if self.settings.signing != "file":
            raise InvalidRequest(
                "the signing key is a KMS key: point [audit] kms_key_id at the new key; its "
                "first checkpoint adds it to the keyring and retires the old one"
            )
        signer = self.signer
        assert isinstance(signer, FileSigner)
        signer.refresh()
        old = signer.fingerprint
        self.checkpoint("key-rotation")
        now = self.clock.now()
        path = self.settings.signing_key_path
        staged = path.with_name(path.name + ".rotating")
        create_key_file(staged)
        new_signer = FileSigner(staged, create=False)
        self.keyring_file.retire(old, now + ROTATION_GRACE)
        self.keyring_file.add(
            KeyEntry(
                new_signer.fingerprint,
                new_signer.algorithm,
                new_signer.public_key_pem,
                isoformat(now),
                None,
                "file",
            )
        )
        staged.replace(path)
        signer.refresh()
        if signer.fingerprint != new_signer.fingerprint:
            raise SigningError("the rotated key did not take effect")
        self.audit.record(
            now,
            NewEvent(
                KEY_ROTATED_EVENT,
                actor,
                data={"old_fingerprint": old, "new_fingerprint": new_signer.fingerprint},
            ),
        )
        self.checkpoint("key-rotation")
        return old, new_signer.fingerprint

    # --- verification and retention -------------------------------------------------------------
    def verify(
        self,
        copy: CopySource | None = None,
        *,
        keyring: Keyring | None = None,
        database: bool = True,
    ) -> IntegrityReport:
        return verify_record(
            db=self.db if database else None,
            copy=copy,
            keyring=keyring if keyring is not None else self.keyring_file.load(),
            now=self.clock.now(),
        )

    def prune(self, *, dry_run: bool = False) -> PruneResult:
        return prune(self, self.clock.now(), dry_run=dry_run)
