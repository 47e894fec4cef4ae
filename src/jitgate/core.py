"""The composition of jitgate's services, built once per process from its settings.

Both listeners (control plane and AWS endpoint) and the local CLI use the same object, so
there is exactly one way each thing is done.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from jitgate.audit.log import AuditLog
from jitgate.clock import Clock, SystemClock
from jitgate.config import CONFIG_NAME, DEFAULT_CONFIG, Settings, load_settings
from jitgate.errors import Conflict
from jitgate.grants.credentials import MasterKey
from jitgate.grants.service import GrantService, GrantSettings
from jitgate.identity.service import IdentityService
from jitgate.policy.engine import DEFAULT_POLICY_PATH, PolicyEngine
from jitgate.store.db import Database


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

    def close(self) -> None:
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
    return Jitgate(settings, clock, db, AuditLog(db), identity, policy, grants, master_key)


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
    db = Database(settings.database_url)
    try:
        db.migrate()
    finally:
        db.dispose()
    return [config_path, policy_path, settings.master_key_path]
