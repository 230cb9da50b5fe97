"""Encryption at rest for the secrets identity must read back (TOTP seeds): Fernet
(AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a list of keys.

The first key encrypts; every key decrypts, so a key is rotated by putting a new one first
and keeping the old ones until nothing encrypted with them is left (a secret is re-encrypted
under the first key whenever it is used). The keys come from ``IDENTITY_SECRET_KEY``
(comma-separated) or, unset, from ``secret.keys`` in the keys folder, made on first start.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("identity.secret_box")

KEY_FILE = "secret.keys"


class SecretBoxError(RuntimeError):
    """A key that is not a Fernet key, or a ciphertext no key opens."""


class SecretBox:
    """Seal and open short secrets with the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretBoxError("no secret key")
        try:
            self._fernets = [Fernet(key.encode()) for key in keys]
        except (ValueError, TypeError):
            raise SecretBoxError(
                "a secret key is not 32 url-safe base64-encoded bytes "
                "(make one with: identity keys secret)"
            ) from None
        self._keys = list(keys)
        self._box = MultiFernet(self._fernets)

    @classmethod
    def from_sources(cls, configured: str | None, keys_dir: Path) -> SecretBox:
        """The keys of ``IDENTITY_SECRET_KEY`` when set, else of the key file (made when
        missing, readable by its owner only)."""
        if configured:
            return cls([key.strip() for key in configured.split(",") if key.strip()])
        return cls(_key_file_lines(keys_dir / KEY_FILE))

    def seal(self, plaintext: str) -> str:
        """``plaintext`` encrypted under the first key."""
        return self._box.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        """The plaintext of ``sealed``, whichever configured key sealed it."""
        try:
            return self._box.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretBoxError("no configured secret key opens this value") from None

    def sealed_with_first_key(self, sealed: str) -> bool:
        """True when ``sealed`` needs no re-encryption after a rotation."""
        try:
            self._fernets[0].decrypt(sealed.encode())
        except InvalidToken:
            return False
        return True


def new_key() -> str:
    """A fresh key, in the form ``IDENTITY_SECRET_KEY`` takes."""
    return Fernet.generate_key().decode()


def _key_file_lines(path: Path) -> list[str]:
    try:
        return _read_or_make(path)
    except OSError as error:  # a read-only keys folder (a mounted secret) without the file
        raise SecretBoxError(
            f"no secret key: {path} is missing and cannot be made ({error.strerror}); set "
            "IDENTITY_SECRET_KEY (make one with: identity keys secret) or add the file"
        ) from None


def ensure_key_file(directory: Path) -> None:
    """Make ``secret.keys`` in ``directory`` unless it is there (the key set's first start)."""
    _read_or_make(directory / KEY_FILE)


def _read_or_make(path: Path) -> list[str]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: link fails when the file exists, so of two
        # processes starting at once one key wins, and no reader ever sees a half-written file.
        descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
        try:
            with os.fdopen(descriptor, "w") as file:  # mkstemp: readable by its owner only
                file.write(new_key() + "\n")
            os.link(draft, path)
            log.info("made a secret key in %s for secrets encrypted at rest", path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]
