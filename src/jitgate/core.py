"""The composition of jitgate's services, built once per process from its settings.

Both listeners (control plane and AWS endpoint) and the local CLI use the same object, so
there is exactly one way each thing is done.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from jitgate.audit.log import AuditLog
from jitgate.clock import Clock, SystemClock
from jitgate.config import CONFIG_NAME, DEFAULT_CONFIG, Settings, load_settings
from jitgate.errors import Conflict
from jitgate.grants.credentials import MasterKey
from jitgate.grants.service import GrantService, GrantSettings
from jitgate.identity.service import IdentityService
from jitgate.policy.engine import DEFAULT_POLICY_PATH, PolicyEngine
from jitgate.store.db import Database

if TYPE_CHECKING:
    from jitgate.approvals.notify import Notifier
    from jitgate.audit.integrity import AuditIntegrity
    from jitgate.grants.service import Grant


@dataclass
class Jitgate:
    settings: Settings
    clock: Clock
    db: Database
    audit: AuditLog
    identity: IdentityService
    policy: PolicyEngine
    grants: GrantService
    master_key: MasterKey

    @cached_property
    def integrity(self) -> AuditIntegrity:
        """Signed checkpoints, shipping to sinks, verification (built on first use)."""
        from jitgate.audit.integrity import AuditIntegrity

        return AuditIntegrity.from_settings(self.settings, self.db, self.clock, self.audit)

    @cached_property
    def notifier(self) -> Notifier | None:
        """Pending-request notifications (webhook, Slack); None when none are configured."""
        from jitgate.approvals.notify import notifier_for

        return notifier_for(self)

    def notify_pending(self, grant: Grant) -> None:
        if self.notifier is not None:
            self.notifier.pending(grant)

    def close(self) -> None:
        if self.__dict__.get("notifier") is not None:
            self.notifier.close()  # type: ignore[union-attr]
        if "integrity" in self.__dict__:
            self.integrity.close()
        self.db.dispose()


def build(settings: Settings, clock: Clock | None = None, *, migrate: bool = True) -> Jitgate:
    clock = clock or SystemClock()
    db = Database(settings.database_url)
    if migrate:
        db.migrate()
    policy = PolicyEngine.from_file(settings.policy_path)
    identity = IdentityService(db, clock)
    master_key = MasterKey.load_or_create(settings.master_key_path)
    grants = GrantService(
        db,
        clock,
        policy,
        identity,
        master_key,
        GrantSettings(
            default_duration_seconds=settings.default_duration_seconds,
            lapse_seconds=settings.lapse_seconds,
            sensitive_arns=settings.sensitive_arns,
        ),
    )
    core = Jitgate(settings, clock, db, AuditLog(db), identity, policy, grants, master_key)
    grants.on_pending = core.notify_pending
    _ = core.notifier  # a bad [notifications] table fails here, at start-up
    return core


def init_home(home: Path, *, force: bool = False) -> list[Path]:
    """Write jitgate.toml, policy.cedar and the master key; create the database.

    Refuses to overwrite existing files unless ``force``; returns the paths written.
    """
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / CONFIG_NAME
    policy_path = home / "policy.cedar"
    existing = [p for p in (config_path, policy_path) if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise Conflict(f"{names} already exist; use --force to overwrite")
    config_path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    shutil.copyfile(DEFAULT_POLICY_PATH, policy_path)
    settings = load_settings(home)
    MasterKey.load_or_create(settings.master_key_path)
    from jitgate.audit.integrity import ensure_signing_key

    ensure_signing_key(settings)  # audit-signing.key (0600): signs audit checkpoints
    db = Database(settings.database_url)
    try:
        db.migrate()
    finally:
        db.dispose()
    return [config_path, policy_path, settings.master_key_path]
