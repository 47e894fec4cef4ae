"""``jitgate audit verify|status|keys|rotate-key|checkpoint|ship|export|prune``.

Registered on the ``audit`` sub-app by ``jitgate.cli``. ``verify`` with ``--from-s3`` or
``--from-file`` checks an external copy; with ``--copy-only`` (or where there is no jitgate
home) it needs no database at all.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from jitgate.cli import (
    AsJson,
    Server,
    Token,
    backend,
    console,
    emit,
    err,
    fail,
    run,
)
from jitgate.cli.backend import LocalBackend, RemoteBackend
from jitgate.config import home_from_env, load_settings
from jitgate.errors import JitgateError


def _local(server: str | None, token: str | None, what: str) -> LocalBackend:
    if server:
        fail(f"`jitgate audit {what}` runs on the jitgate host itself; omit --server")
    b = backend(None, None)
    assert isinstance(b, LocalBackend)
    return b


def _remote_get(b: RemoteBackend, path: str) -> Any:
    return run(lambda: b._send("GET", path))


def _print_report(result: dict[str, Any]) -> None:
    if result["ok"]:
        if result["database"]:
            console.print(
                f"audit chain intact: {result['checked']} events, head {result['head_hash'][:16]}…",
                highlight=False,
            )
            if result["last_checkpoint"] is not None:
                console.print(
                    f"signed checkpoints: {result['checkpoints_checked']} verified (last "
                    f"#{result['last_checkpoint']}, sealing events through "
                    f"{result['sealed_seq']})",
                    highlight=False,
                )
        if result["copy"]:
            console.print(
                f"copy {escape(result['copy'])} intact: {result['copy_events']} events, "
                f"{result['copy_checkpoints']} signed checkpoints (through event "
                f"{result['copy_sealed_seq']})",
                highlight=False,
            )
        for note in result["notes"]:
            console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    else:
        for problem in result["problems"]:
            where = (
                f"audit chain BROKEN at event {problem['seq']}"
                if problem["seq"] is not None
                else "audit record BROKEN"
            )
            err.print(
                f"{where}: {problem['message']}", highlight=False, markup=False, soft_wrap=True
            )
    for warning in result["warnings"]:
        console.print(f"warning: {escape(warning)}", highlight=False, soft_wrap=True)
    if result.get("seconds") and result.get("events_per_second"):
        console.print(
            f"verified in {result['seconds']:.3f}s ({result['events_per_second']:,} events/s); "
            f"keys: {escape(result['keys'])}",
            highlight=False,
            soft_wrap=True,
        )


def register(audit_app: typer.Typer) -> None:
    @audit_app.command("verify")
    def audit_verify(
        from_s3: Annotated[
            str | None,
            typer.Option("--from-s3", help="Verify the copy in s3://bucket/prefix."),
        ] = None,
        from_file: Annotated[
            Path | None, typer.Option("--from-file", help="Verify the copy in a JSON Lines file.")
        ] = None,
        public_key: Annotated[
            Path | None,
            typer.Option(
                "--public-key",
                help="Trusted keyring (GET /v1/audit/keys, saved) or one PEM public key.",
            ),
        ] = None,
        copy_only: Annotated[
            bool, typer.Option("--copy-only", help="Check the copy alone, without the database.")
        ] = False,
        endpoint_url: Annotated[
            str | None, typer.Option("--endpoint-url", help="S3 endpoint (sandboxes).")
        ] = None,
        region: Annotated[str | None, typer.Option("--region", help="S3 region.")] = None,
        as_json: AsJson = False,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """Check the chain, every signed checkpoint and (with a copy) that the copy matches the
        database; exit 0 when intact, 1 naming what is wrong."""
        from jitgate.audit.copies import FileCopy, S3Copy
        from jitgate.audit.settings import load_audit_settings, split_s3_url
        from jitgate.audit.signing import Keyring
        from jitgate.audit.verify import CopySource, verify_record

        if server:
            if from_s3 or from_file or copy_only or public_key:
                fail("copies and keys are verified locally; omit --server")
            result = run(lambda: backend(server, token).audit_verify())
            _finish(result, as_json)
            return
        if from_s3 and from_file:
            fail("give --from-s3 or --from-file, not both")
        if copy_only and not (from_s3 or from_file):
            fail("--copy-only needs --from-s3 or --from-file")
        home = home_from_env()
        has_home = (home / "jitgate.toml").exists()
        use_db = has_home and not copy_only
        settings = None
        audit_settings = None
        try:
            if has_home:
                settings = load_settings(home)
                audit_settings = load_audit_settings(settings)
            copy: CopySource | None = None
            if from_file:
                copy = FileCopy(from_file)
            elif from_s3:
                bucket, prefix = split_s3_url(from_s3)
                if audit_settings is not None:
                    for sink in audit_settings.sinks:
                        if sink.type == "s3" and sink.bucket == bucket:
                            endpoint_url = endpoint_url or sink.endpoint_url
                            region = region or sink.region
                from jitgate.audit.integrity import s3_client

                region = region or (settings.aws_region if settings else None)
                copy = S3Copy(s3_client(region, endpoint_url), bucket, prefix)
            keyring = None
            if public_key is not None:
                keyring = Keyring.from_file(public_key)
            elif audit_settings is not None and audit_settings.keyring_path.exists():
                keyring = Keyring.from_file(audit_settings.keyring_path)
        except ValueError as exc:
            fail(str(exc))
        except JitgateError as exc:
            fail(exc.message)
        if not use_db and copy is None:
            fail(
                f"no jitgate.toml in {home}; run `jitgate init` first (or verify a copy with "
                f"--from-s3/--from-file)"
            )
        if use_db:
            local = backend(None, None)
            assert isinstance(local, LocalBackend)
            core = local.core
            report = run(
                lambda: verify_record(db=core.db, copy=copy, keyring=keyring, now=core.clock.now())
            )
        else:
            report = run(lambda: verify_record(copy=copy, keyring=keyring))
        _finish(report.as_dict(), as_json)

    @audit_app.command("status")
    def audit_status(as_json: AsJson = False, server: Server = None, token: Token = None) -> None:
        """Checkpoints and how far each sink lags; exit 2 while an alarm is raised."""
        b = backend(server, token)
        if isinstance(b, RemoteBackend):
            status = _remote_get(b, "/v1/audit/status")
        else:
            assert isinstance(b, LocalBackend)
            status = run(b.core.integrity.status)
        if as_json:
            emit(status, True)
        else:
            cp = status["checkpoint"]
            if cp["number"] is None:
                console.print("no signed checkpoint yet", highlight=False)
            else:
                console.print(
                    f"checkpoint #{cp['number']} at {cp['ts']} ({cp['age_seconds']:.0f}s ago, "
                    f"every {cp['interval_seconds']}s), sealing events through {cp['last_seq']}; "
                    f"{cp['unsealed_events']} event(s) since",
                    highlight=False,
                )
            table = Table(
                "sink", "state", "checkpoint", "shipped seq", "lag events", "lag s", "error"
            )
            for sink in status["sinks"]:
                table.add_row(
                    escape(sink["name"]),
                    sink["state"],
                    str(sink["checkpoint"]),
                    str(sink["shipped_seq"]),
                    str(sink["lag_events"]),
                    f"{sink['lag_seconds']:.0f}",
                    escape(sink["last_error"] or ""),
                )
            if status["sinks"]:
                console.print(table)
            else:
                console.print("no sinks configured: the database holds the only copy")
            for alarm in status["alarms"]:
                err.print(f"ALARM: {alarm}", highlight=False, markup=False, soft_wrap=True)
        if status["alarm"]:
            raise typer.Exit(2)

    @audit_app.command("keys")
    def audit_keys(as_json: AsJson = False, server: Server = None, token: Token = None) -> None:
        """The public keys that sign checkpoints, with validity windows (save with --json and
        pass to `audit verify --public-key`)."""
        b = backend(server, token)
        if isinstance(b, RemoteBackend):
            keys = _remote_get(b, "/v1/audit/keys")
        else:
            assert isinstance(b, LocalBackend)
            keys = run(b.core.integrity.public_keys)
        if as_json:
            emit(keys, True)
            return
        table = Table("fingerprint", "algorithm", "valid from", "valid until", "source")
        for key in keys["keys"]:
            current = " (current)" if key["fingerprint"] == keys.get("current") else ""
            table.add_row(
                key["fingerprint"][:32] + "…" + current,
                key["algorithm"],
                key["not_before"] or "-",
                key["not_after"] or "-",
                escape(key["source"]),
            )
        console.print(table)

    @audit_app.command("rotate-key")
    def audit_rotate_key(server: Server = None, token: Token = None) -> None:
        """Replace the checkpoint signing key; old checkpoints stay verifiable."""
        local = _local(server, token, "rotate-key")
        old, new = run(local.core.integrity.rotate_key)
        console.print(
            f"signing key rotated: {(old or '-')[:16]}… retired, {new[:16]}… in force; "
            f"publish the new keyring (jitgate audit keys --json)",
            highlight=False,
        )

    @audit_app.command("checkpoint")
    def audit_checkpoint(
        as_json: AsJson = False, server: Server = None, token: Token = None
    ) -> None:
        """Sign a checkpoint now (the server makes one every interval on its own)."""
        local = _local(server, token, "checkpoint")
        made = run(lambda: local.core.integrity.checkpoint("manual"))
        if made is None:
            fail("another process made the checkpoint at the same moment; run it again")
        summary = made.summary()
        if as_json:
            emit(summary, True)
        else:
            console.print(
                f"checkpoint #{summary['number']} signed: events {summary['first_seq']}.."
                f"{summary['last_seq']}, head {summary['head_hash'][:16]}…",
                highlight=False,
            )

    @audit_app.command("ship")
    def audit_ship(server: Server = None, token: Token = None) -> None:
        """Ship pending checkpoints and events to every sink now; exit 1 if a sink fails."""
        local = _local(server, token, "ship")
        integrity = local.core.integrity
        if not integrity.sinks:
            fail("no sinks configured ([[audit.sinks]] in jitgate.toml)")
        results = run(integrity.ship)
        failed = False
        for name, error in results.items():
            if error is None:
                console.print(f"{escape(name)}: up to date", highlight=False)
            else:
                failed = True
                err.print(f"{name}: {error}", highlight=False, markup=False, soft_wrap=True)
        if failed:
            raise typer.Exit(1)

    @audit_app.command("export")
    def audit_export(
        since: Annotated[
            str | None, typer.Option("--since", help="ISO date/time or span ago (7d), inclusive.")
        ] = None,
        until: Annotated[
            str | None, typer.Option("--until", help="ISO date/time or span ago, exclusive.")
        ] = None,
        fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
        ] = None,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """Export events for a SIEM (jsonl) or a spreadsheet (csv)."""
        from jitgate.audit.export import FORMATS, iter_events, parse_when, write_events

        if fmt not in FORMATS:
            fail(f"--format must be one of {', '.join(FORMATS)}")
        local = _local(server, token, "export")
        now = local.core.clock.now()
        try:
            start = parse_when(since, now) if since else None
            end = parse_when(until, now) if until else None
        except ValueError as exc:
            fail(str(exc))
        events = iter_events(local.core.db, start, end)
        if output is None:
            count = write_events(events, sys.stdout, fmt)
        else:
            with output.open("w", encoding="utf-8", newline="") as handle:
                count = write_events(events, handle, fmt)
            err.print(f"exported {count} events to {output}", highlight=False, markup=False)

    @audit_app.command("prune")
    def audit_prune(
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go.")] = False,
        as_json: AsJson = False,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """Apply [audit] retention: delete old events that every sink holds and that verify."""
        local = _local(server, token, "prune")
        result = run(lambda: local.core.integrity.prune(dry_run=dry_run))
        if as_json:
            emit(result.as_dict(), True)
        else:
            console.print(escape(result.message), highlight=False, soft_wrap=True)


def _finish(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(result, True)
    elif "problems" in result:
        _print_report(result)
    elif result["ok"]:
        console.print(
            f"audit chain intact: {result['checked']} events, head {result['head_hash'][:16]}…"
        )
    else:
        err.print(
            f"audit chain BROKEN at event {result['first_bad_seq']}: {result['problem']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if not result["ok"]:
        raise typer.Exit(1)
