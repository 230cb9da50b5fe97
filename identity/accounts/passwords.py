"""Passwords: the policy a new one must meet, and argon2id hashing of the ones that do.

The policy follows NIST SP 800-63B: a length floor and ceiling, a refusal of guessable
passwords and of ones built from the email address, and no composition rules.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import unicodedata

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn  # type: ignore[import-untyped]

MIN_LENGTH = 8
MAX_LENGTH = 1024

# zxcvbn's score 2 means "more than 10^6 guesses": out of reach of a rate-limited online attack.
_MIN_SCORE = 2
# zxcvbn's matching is superlinear in the length; it never needs to see more than this.
_SCORED_PREFIX = 64
# A shorter local part ("bob", "jo") turns up inside good passwords by chance.
_MIN_EMAIL_LOCAL_PART = 4


class PasswordPolicyError(ValueError):
    """A password the policy refuses; str(error) is a friendly sentence for the user."""

    code: str  # one of "too_short", "too_long", "common", "contains_email"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def normalise(password: str) -> str:
    """NFKC, never truncated."""
    return unicodedata.normalize("NFKC", password)


def check_policy(password: str, *, email: str | None = None, name: str | None = None) -> str:
    """Return the normalised password or raise PasswordPolicyError."""
    # Before any other work, so that a huge body costs nothing but len().
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(
            "too_long", f"Your password can be at most {MAX_LENGTH} characters long."
        )
    password = normalise(password)
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(
            "too_short", f"Your password needs at least {MIN_LENGTH} characters."
        )
    if email and _contains_email(password, email):
        raise PasswordPolicyError("contains_email", "Your password must not contain your email.")
    # Every password is scored: long but repetitive ones ("aaaa…") are weak too.
    result = zxcvbn(password[:_SCORED_PREFIX], user_inputs=_user_inputs(email, name))
    if result["score"] < _MIN_SCORE:
        raise PasswordPolicyError(
            "common",
            "This password is too common or too easy to guess; "
            "a few unrelated words make a strong one.",
        )
    return password


def _user_inputs(email: str | None, name: str | None) -> list[str]:
    inputs = [value for value in (email, name) if value] + ["identity"]
    # zxcvbn matches each input as one whole word: "Ada Lovelace" alone would not catch "lovelace1".
    words = [word for value in inputs for word in re.split(r"[\W_]+", value) if word]
    return inputs + words


def _contains_email(password: str, email: str) -> bool:
    folded_password = password.casefold()
    folded_email = normalise(email).strip().casefold()
    local_part = folded_email.rpartition("@")[0]
    if len(local_part) >= _MIN_EMAIL_LOCAL_PART and local_part in folded_password:
        return True
    return folded_email in folded_password


def fingerprint(password_hash: str) -> str:
    """A digest naming one stored password hash (one signup attempt's, or an account's).

    A browser keeps it to show later that it typed that very password; as the hash is
    salted, no other attempt's password, even an equal one, has the same fingerprint."""
    return hashlib.sha256(password_hash.encode()).hexdigest()


class PasswordHasher:
    """argon2id with the configured parameters."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def hash(self, password: str) -> str:
        """The argon2id hash of ``password``, which check_policy has already normalised."""
        # NFKC is idempotent: normalising again keeps hash and verify in step for any caller.
        return self._hasher.hash(normalise(password))

    def verify(self, password_hash: str, password: str) -> bool:
        """True when ``password``, in any Unicode form, matches; False on a malformed hash."""
        try:
            return self._hasher.verify(password_hash, normalise(password))
        # UnicodeEncodeError: a non-ASCII hash, or a lone surrogate in the password.
        except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters (or is not one we could make)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def dummy_verify(self, password: str) -> None:
        """Spend the same time as a real verify, for unknown users.

        Timing must not reveal which accounts exist.
        """
        self.verify(self._get_dummy_hash(), password)

    def _get_dummy_hash(self) -> str:
        if self._dummy_hash is None:
            with self._dummy_lock:
                if self._dummy_hash is None:
                    # A random secret nobody knows: the dummy can never match a real password.
                    self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        return self._dummy_hash
