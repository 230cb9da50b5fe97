"""Building blocks on one core: RS256 signatures and argon2id verifications per second."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import argon2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from identity.config import Settings


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jwt_signing_input() -> bytes:
    """A header.payload pair the size of an access token's."""
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "bench-key-0001"}
    claims = {
        "iss": "http://127.0.0.1:8000",
        "sub": "bench-client-id-0123456789",
        "aud": "http://127.0.0.1:8000",
        "client_id": "bench-client-id-0123456789",
        "scope": "read",
        "iat": 1_700_000_000,
        "exp": 1_700_000_600,
        "jti": "0123456789abcdef0123456789abcdef",
    }
    parts = [_b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)]
    return b".".join(parts)


def rs256_signer() -> Callable[[], bytes]:
    """Sign the same JWT-sized input with one 2048-bit key, loaded once."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = jwt_signing_input()

    def sign() -> bytes:
        return message + b"." + _b64(key.sign(message, padding.PKCS1v15(), hashes.SHA256()))

    return sign


def rate(work: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``work`` run back to back for about ``seconds``."""
    work()  # warm up
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        work()
        calls += 1
    return calls / elapsed


def rs256_signs_per_second(seconds: float) -> float:
    return rate(rs256_signer(), seconds)


def argon2_verifies_per_second(settings: Settings, seconds: float) -> float:
    hasher = argon2.PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=argon2.Type.ID,
    )
    password = "correct horse battery staple"  # noqa: S105
    digest = hasher.hash(password)
    return rate(lambda: hasher.verify(digest, password), seconds)
