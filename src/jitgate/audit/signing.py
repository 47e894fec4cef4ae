"""Checkpoint signing keys: an Ed25519 key file, or an asymmetric KMS key; and the keyring.

The private key never enters the database. The file key lives in ``$JITGATE_HOME`` with mode
0600 (``jitgate init`` creates it, or the first checkpoint does). A KMS key is used through
jitgate's own AWS identity; its private half never leaves KMS.

The *keyring* (``audit-keys.json``, public, also served at ``GET /v1/audit/keys``) lists every
public key that ever signed a checkpoint, with the window in which it was in force. Rotation
closes the old key's window and opens the new one's; old checkpoints stay verifiable because
old public keys are never removed. A verifier trusts a keyring it obtained out of band
(``--public-key``), never one read from the database.

A key is named by its *fingerprint*: the SHA-256 (hex) of its DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from jitgate.clock import isoformat, parse_iso
from jitgate.errors import JitgateError

ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
ECDSA_P384 = "ecdsa-p384-sha384"
ALGORITHMS = (ED25519, ECDSA_P256, ECDSA_P384)

# A running server picks up a rotated key file before its next checkpoint; the old key's window
# stays open this long after rotation so a checkpoint signed in that instant still verifies.
ROTATION_GRACE = timedelta(seconds=10)


class SigningError(JitgateError):
    code = "audit_signing_error"
    status = 500


def public_key_der(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _pem(der: bytes) -> str:
    return (
        serialization.load_der_public_key(der)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def algorithm_of(public_key: Any) -> str:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return ECDSA_P256
        if isinstance(public_key.curve, ec.SECP384R1):
            return ECDSA_P384
    raise SigningError(f"unsupported public key type {type(public_key).__name__}")


# --- the keyring -------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyEntry:
    fingerprint: str
    algorithm: str
    public_key: str  # PEM SubjectPublicKeyInfo
    not_before: str | None = None  # ISO 8601; None: no lower bound
    not_after: str | None = None  # None: still in force
    source: str = "file"

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "algorithm": self.algorithm,
            "public_key": self.public_key,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> KeyEntry:
        try:
            pem = str(value["public_key"])
            public = serialization.load_pem_public_key(pem.encode())
        except (KeyError, ValueError, TypeError) as exc:
            raise SigningError(f"key entry has no readable public_key: {exc}") from None
        fingerprint = fingerprint_of(public_key_der(public))
        if value.get("fingerprint") not in (None, fingerprint):
            raise SigningError(
                f"key entry claims fingerprint {value.get('fingerprint')} but its public key "
                f"has fingerprint {fingerprint}"
            )
        return cls(
            fingerprint=fingerprint,
            algorithm=algorithm_of(public),
            public_key=pem,
            not_before=value.get("not_before"),
            not_after=value.get("not_after"),
            source=str(value.get("source", "file")),
        )

    def valid_at(self, when: datetime) -> bool:
        if self.not_before is not None and when < parse_iso(self.not_before):
            return False
        return not (self.not_after is not None and when > parse_iso(self.not_after))

    def window(self) -> str:
        return f"{self.not_before or '-∞'} .. {self.not_after or 'now'}"


class Keyring:
    """Trusted public keys by fingerprint."""

    def __init__(self, entries: Iterable[KeyEntry] = (), *, origin: str = "") -> None:
        self.entries: dict[str, KeyEntry] = {}
        for entry in entries:
            self.entries[entry.fingerprint] = entry
        self.origin = origin
        self._loaded: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, fingerprint: str) -> KeyEntry | None:
        return self.entries.get(fingerprint)

    def current(self) -> KeyEntry | None:
        open_entries = [e for e in self.entries.values() if e.not_after is None]
        return open_entries[-1] if open_entries else None

    def as_dict(self) -> dict[str, Any]:
        return {"keys": [e.as_dict() for e in self.entries.values()]}

    @classmethod
    def from_json(cls, text: str, origin: str = "") -> Keyring:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise SigningError(f"{origin or 'keyring'}: not JSON: {exc}") from None
        items = value.get("keys") if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise SigningError(f'{origin or "keyring"}: expected {{"keys": [...]}}')
        return cls((KeyEntry.from_dict(item) for item in items), origin=origin)

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """A keyring JSON file (as written by jitgate or served at /v1/audit/keys), or a single
        PEM public key (trusted at all times)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SigningError(f"{path}: {exc.strerror}") from None
        if text.lstrip().startswith("-----BEGIN"):
            entry = KeyEntry.from_dict({"public_key": text, "source": str(path)})
            return cls([entry], origin=str(path))
        return cls.from_json(text, origin=str(path))

    def verify(self, entry: KeyEntry, message: bytes, signature: bytes) -> bool:
        key = self._loaded.get(entry.fingerprint)
        if key is None:
            key = serialization.load_pem_public_key(entry.public_key.encode())
            self._loaded[entry.fingerprint] = key
        try:
            if entry.algorithm == ED25519:
                key.verify(signature, message)
            elif entry.algorithm == ECDSA_P256:
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif entry.algorithm == ECDSA_P384:
                key.verify(signature, message, ec.ECDSA(hashes.SHA384()))
            else:
                return False
        except (InvalidSignature, ValueError):
            return False
        return True


class KeyringFile:
    """The keyring kept in ``$JITGATE_HOME`` (public; written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> Keyring:
        if not self.path.exists():
            return Keyring(origin=str(self.path))
        return Keyring.from_file(self.path)

    def _save(self, keyring: Keyring) -> None:
        temporary = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_text(json.dumps(keyring.as_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of the keyring across threads and processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure(self, signer: Signer, now: datetime) -> KeyEntry:
        """The entry for ``signer``'s key, adding it (and closing the window of the key it
        replaces) the first time that key signs."""
        with self._locked():
            keyring = self.load()
            entry = keyring.get(signer.fingerprint)
            if entry is not None:
                if not entry.valid_at(now):
                    raise SigningError(
                        f"signing key {signer.fingerprint[:16]}… is valid only "
                        f"{entry.window()}; rotate to a new key (jitgate audit rotate-key)"
                    )
                return entry
            stamp = isoformat(now)
            for old in list(keyring.entries.values()):
                if old.not_after is None:
                    keyring.entries[old.fingerprint] = replace(old, not_after=stamp)
            entry = KeyEntry(
                signer.fingerprint,
                signer.algorithm,
                signer.public_key_pem,
                stamp,
                None,
                signer.source,
            )
            keyring.entries[entry.fingerprint] = entry
            self._save(keyring)
            return entry

    def retire(self, fingerprint: str, until: datetime) -> None:
        with self._locked():
            keyring = self.load()
            entry = keyring.get(fingerprint)
            if entry is not None and entry.not_after is None:
                keyring.entries[fingerprint] = replace(entry, not_after=isoformat(until))
                self._save(keyring)

    def add(self, entry: KeyEntry) -> None:
        with self._locked():
            keyring = self.load()
            keyring.entries[entry.fingerprint] = entry
            self._save(keyring)


# --- signers -----------------------------------------------------------------------------------
class Signer(Protocol):
    fingerprint: str
    algorithm: str
    public_key_pem: str
    source: str

    def refresh(self) -> None:
        """Pick up a rotated key (called before a checkpoint names the key's fingerprint)."""

    def sign(self, message: bytes) -> bytes: ...


def create_key_file(path: Path) -> ed25519.Ed25519PrivateKey:
    """Write a new Ed25519 private key (PKCS#8 PEM) to ``path`` with mode 0600, atomically."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return key


def _read_key_file(path: Path) -> ed25519.Ed25519PrivateKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SigningError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise SigningError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path}: expected an Ed25519 private key")
    return key


class FileSigner:
    """Ed25519 with the private key in a 0600 file; re-read when the file is replaced (rotation
    by another process)."""

    algorithm = ED25519

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.source = "file"
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if not path.exists():
            if not create:
                raise SigningError(f"no signing key at {path}")
            create_key_file(path)
        self._load()

    def _load(self) -> None:
        stat = self.path.stat()
        self._key = _read_key_file(self.path)
        self._stamp = (stat.st_ino, stat.st_mtime_ns)
        der = public_key_der(self._key.public_key())
        self.fingerprint = fingerprint_of(der)
        self.public_key_pem = _pem(der)

    def refresh(self) -> None:
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                raise SigningError(f"the signing key {self.path} has disappeared") from None
            if (stat.st_ino, stat.st_mtime_ns) != self._stamp:
                self._load()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


_KMS_SPECS = {
    "ECC_NIST_P256": (ECDSA_P256, "ECDSA_SHA_256", hashes.SHA256),
    "ECC_NIST_P384": (ECDSA_P384, "ECDSA_SHA_384", hashes.SHA384),
}


class KmsSigner:
    """An asymmetric KMS key (ECC_NIST_P256 or ECC_NIST_P384, usage SIGN_VERIFY), reached
    through jitgate's own AWS identity. KMS signs a digest; the signature verifies locally with
    the public key, so a verifier never needs AWS access."""

    def __init__(self, client: Any, key_id: str) -> None:
        self.client = client
        self.key_id = key_id
        try:
            response = client.get_public_key(KeyId=key_id)
        except Exception as exc:  # noqa: BLE001 - botocore errors vary; say which key
            raise SigningError(f"cannot read KMS key {key_id}: {exc}") from None
        spec = response.get("KeySpec") or response.get("CustomerMasterKeySpec")
        if spec not in _KMS_SPECS:
            raise SigningError(
                f"KMS key {key_id} has spec {spec}; use ECC_NIST_P256 or ECC_NIST_P384 (SIGN_VERIFY)"
            )
        self.algorithm, self._kms_algorithm, self._hash = _KMS_SPECS[spec]
        der = bytes(response["PublicKey"])
        self.fingerprint = fingerprint_of(der)
        self.public_key_pem = _pem(der)
        self.source = f"kms:{response.get('KeyId', key_id)}"

    def refresh(self) -> None:
        pass

    def sign(self, message: bytes) -> bytes:
        # KMS takes up to 4096 bytes as RAW (it hashes them); longer bodies go as their digest
        kind = "RAW"
        if len(message) > 4096:
            digest = hashes.Hash(self._hash())
            digest.update(message)
            message, kind = digest.finalize(), "DIGEST"
        try:
            response = self.client.sign(
                KeyId=self.key_id,
                Message=message,
                MessageType=kind,
                SigningAlgorithm=self._kms_algorithm,
            )
        except Exception as exc:  # noqa: BLE001
            raise SigningError(f"KMS Sign with {self.key_id} failed: {exc}") from None
        return bytes(response["Signature"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
