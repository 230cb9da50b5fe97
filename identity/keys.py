"""Signing keys in IDENTITY_KEYS_DIR: generate, load, rotate, retire; the JWKS.

Each key moves through three states. ``next`` is published in JWKS but does not sign, so
resource servers have it cached before the first token it signs; ``active`` signs;
``retired`` stays published until every token it signed has expired. The manifest is the
only shared state: every worker and instance reloads it when it changes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from joserfc.jwk import KeySet, RSAKey

from identity.secret_box import ensure_key_file

log = logging.getLogger("identity.keys")

MANIFEST = "manifest.json"
KEY_BITS = 2048
_LEEWAY_SECONDS = 60
_PARAMETERS: Any = {"use": "sig", "alg": "RS256"}


class KeyStoreError(RuntimeError):
    """A key operation that cannot be done (unknown kid, refusal to drop a live key)."""


@dataclass(frozen=True)
class KeyRecord:
    """One line of the manifest. Times are Unix seconds."""

    kid: str
    state: str
    created_at: float
    retired_at: float | None = None
    publish_until: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "state": self.state,
            "created_at": _iso(self.created_at),
            "retired_at": _iso(self.retired_at),
            "publish_until": _iso(self.publish_until),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        return cls(
            kid=str(data["kid"]),
            state=str(data["state"]),
            created_at=_epoch(data["created_at"]) or 0.0,
            retired_at=_epoch(data.get("retired_at")),
            publish_until=_epoch(data.get("publish_until")),
        )


def _iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def _epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True)
class KeyRing:
    """An immutable snapshot: the key that signs now and every key that verifies."""

    signing_key: RSAKey
    verification_keys: KeySet
    jwks: dict[str, Any]
    jwks_body: bytes
    records: tuple[KeyRecord, ...]
    # When the earliest published retired key must leave JWKS; the ring is rebuilt then.
    valid_until: float

    @property
    def signing_kid(self) -> str:
        return str(self.signing_key.kid)


class KeyStore:
    """The key folder of one server or CLI call. ``ring()`` is cheap enough for every request."""

    def __init__(
        self,
        directory: Path,
        *,
        max_token_ttl: int,
        reload_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.reload_seconds = reload_seconds
        self._clock = clock
        # A retired key outlives its last token, plus the time a slow instance may still sign
        # with it before it notices the rotation, plus the validators' clock leeway.
        self.retired_grace = max_token_ttl + reload_seconds + _LEEWAY_SECONDS
        self._ring: KeyRing | None = None
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._reload_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------

    def ring(self) -> KeyRing:
        """The current key ring, reloaded when the manifest changed (checked every few seconds)."""
        ring = self._ring
        if (
            ring is not None
            and time.monotonic() < self._next_check
            and self._clock() < ring.valid_until
        ):
            return ring
        with self._reload_lock:
            return self._reload_if_changed()

    def _reload_if_changed(self) -> KeyRing:
        self._next_check = time.monotonic() + self.reload_seconds
        signature = self._manifest_signature()
        ring = self._ring
        if ring is not None and signature == self._signature and self._clock() < ring.valid_until:
            return ring
        try:
            ring = self._build_ring(self.records())
        except (OSError, ValueError, KeyError) as error:
            if self._ring is None:
                raise KeyStoreError(
                    f"the keys in {self.directory.absolute()} cannot be loaded: {error}"
                ) from None
            # A half-copied key folder must not take a running server down: keep signing
            # with what worked and say so.
            log.error(
                "keys in %s could not be reloaded, keeping the old set: %s", self.directory, error
            )
            return self._ring
        if self._ring is not None and ring.signing_kid != self._ring.signing_kid:
            log.info("signing key is now %s", ring.signing_kid)
        self._ring, self._signature = ring, signature
        return ring

    def _manifest_signature(self) -> tuple[int, int, int] | None:
        try:
            stat = (self.directory / MANIFEST).stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_ino, stat.st_size)

    def records(self) -> list[KeyRecord]:
        """The manifest as it is on disk."""
        data = json.loads((self.directory / MANIFEST).read_text())
        return [KeyRecord.from_dict(item) for item in data["keys"]]

    def _load_key(self, kid: str) -> RSAKey:
        pem = (self.directory / f"{kid}.pem").read_bytes()
        key = RSAKey.import_key(pem, {**_PARAMETERS, "kid": kid})  # type: ignore[arg-type]
        if key.thumbprint() != kid:
            raise ValueError(f"key file {kid}.pem does not hold the key its name says")
        return key

    def _build_ring(self, records: list[KeyRecord]) -> KeyRing:
        now = self._clock()
        published = [r for r in records if r.state != "retired" or (r.publish_until or 0) > now]
        active = [r for r in records if r.state == "active"]
        if len(active) != 1:
            raise ValueError(f"the manifest must have exactly one active key, it has {len(active)}")
        keys = {r.kid: self._load_key(r.kid) for r in published}
        jwks = {"keys": [keys[r.kid].as_dict(private=False) for r in published]}
        expiries = [r.publish_until for r in published if r.publish_until is not None]
        return KeyRing(
            signing_key=keys[active[0].kid],
            verification_keys=KeySet(list(keys.values())),
            jwks=jwks,
            jwks_body=json.dumps(jwks, separators=(",", ":")).encode(),
            records=tuple(records),
            valid_until=min(expiries, default=float("inf")),
        )

    # -- writing (under the folder lock) ---------------------------------------------------

    def _check_folder(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise KeyStoreError(
                f"the keys folder {self.directory.absolute()} (IDENTITY_KEYS_DIR) is a file, "
                "not a folder"
            )

    def _lock_file(self, doing: str) -> IO[str]:
        """The open lock file; KeyStoreError naming ``doing`` when the folder cannot be
        written (a read-only secret mount). Only writers take the lock."""
        self._check_folder()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return open(self.directory / ".lock", "a+")  # closed by _locked
        except OSError as error:
            raise KeyStoreError(
                f"{doing} needs a writable keys folder, and {self.directory.absolute()} is not "
                f"({error.strerror}): run it where the folder can be written, such as the "
                "source of the mounted secret"
            ) from None

    @contextmanager
    def _locked(self, lock_file: IO[str]) -> Iterator[None]:
        with lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _new_key(self, state: str) -> KeyRecord:
        key = RSAKey.generate_key(KEY_BITS, _PARAMETERS, auto_kid=True)
        path = self.directory / f"{key.kid}.pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key.as_pem(private=True))
        return KeyRecord(kid=str(key.kid), state=state, created_at=self._clock())

    def _write(self, records: list[KeyRecord]) -> None:
        body = json.dumps({"keys": [r.as_dict() for r in records]}, indent=2) + "\n"
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".manifest-")
        with os.fdopen(handle, "w") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.directory / MANIFEST)  # atomic: readers see old or new

    def ensure(self) -> bool:
        """Create the first key set (one active, one next) unless there is one. True if created.

        Safe when many workers start at once: the folder lock lets exactly one create it. A
        folder that has its keys is only read, so it may be a read-only mount."""
        self._check_folder()
        if (self.directory / MANIFEST).exists():
            return False  # the manifest is written last and atomically: the set is there
        try:
            lock_file = self._lock_file("creating the first keys")
        except KeyStoreError:
            raise KeyStoreError(
                f"no signing keys in {self.directory.absolute()}, and it cannot be written: "
                "create them once where the folder is writable (`identity keys list` does) and "
                "mount that folder, or let identity write to this one for its first start"
            ) from None
        with self._locked(lock_file):
            if (self.directory / MANIFEST).exists():
                return False
            # Before the manifest, which says the set is complete: a folder mounted read-only
            # later must hold the key of the secrets at rest too (identity.secret_box).
            ensure_key_file(self.directory)
            self._write([self._new_key("active"), self._new_key("next")])
            log.info("generated the first signing keys in %s", self.directory)
            return True

    def rotate(self) -> KeyRecord:
        """The published ``next`` key signs from now on, the active one retires, a new ``next``
        is published."""
        with self._locked(self._lock_file("keys rotate")):
            records = self.records()
            now = self._clock()
            if not any(r.state == "next" for r in records):
                raise KeyStoreError("there is no published next key to promote")
            rotated: list[KeyRecord] = []
            promoted: KeyRecord | None = None
            for record in records:
                if record.state == "active":
                    record = replace(
                        record,
                        state="retired",
                        retired_at=now,
                        publish_until=now + self.retired_grace,
                    )
                elif record.state == "next" and promoted is None:
                    record = promoted = replace(record, state="active")
                rotated.append(record)
            rotated.append(self._new_key("next"))
            self._write(rotated)
        assert promoted is not None
        return promoted

    def retire(self, kid: str | None = None, *, force: bool = False) -> list[str]:
        """Delete retired keys whose tokens have all expired, or one named retired key.

        A named key still within its grace is kept unless ``force`` (a compromised key)."""
        with self._locked(self._lock_file("keys retire")):
            records = self.records()
            now = self._clock()
            if kid is not None:
                match = [r for r in records if r.kid == kid]
                if not match:
                    raise KeyStoreError(f"no key with kid {kid}")
                if match[0].state != "retired":
                    raise KeyStoreError(f"key {kid} is {match[0].state}; rotate it out first")
                if not force and (match[0].publish_until or 0) > now:
                    raise KeyStoreError(
                        f"key {kid} may still verify live tokens until "
                        f"{_iso(match[0].publish_until)}; pass --force to drop it now"
                    )
                doomed = [kid]
            else:
                doomed = [
                    r.kid for r in records if r.state == "retired" and (r.publish_until or 0) <= now
                ]
            self._write([r for r in records if r.kid not in doomed])
            for name in doomed:
                (self.directory / f"{name}.pem").unlink(missing_ok=True)
            return doomed
