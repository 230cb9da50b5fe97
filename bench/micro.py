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


def calls_and_cpu(work: Callable[[], object], seconds: float) -> tuple[float, float]:
    """Calls per second of ``work`` run back to back for about ``seconds``, and the CPU
    seconds (of every thread of this process) each call took."""
    work()  # warm up
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - started) < seconds:
        work()
        calls += 1
    return calls / elapsed, (time.process_time() - cpu) / calls


def rate(work: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``work`` run back to back for about ``seconds``."""
    return calls_and_cpu(work, seconds)[0]


def rs256_signs_per_second(seconds: float) -> float:
    return rate(rs256_signer(), seconds)


def argon2_verifies(settings: Settings, seconds: float) -> tuple[float, float]:
    """Verifies per second, and CPU seconds per verify: above 1/rate when the lanes
    (``parallelism``) run on threads of their own."""
    hasher = argon2.PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=argon2.Type.ID,
    )
    password = "correct horse battery staple"  # noqa: S105
    digest = hasher.hash(password)
    return calls_and_cpu(lambda: hasher.verify(digest, password), seconds)
