"""Reading access tokens as a resource server must (RFC 8725, RFC 9068)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from identity.keys import KeyRing, KeyStore
from identity.protocol.tokens import AccessTokenIssuer, InvalidToken, read_access_token

ISSUER = "https://id.example.com"


@pytest.fixture
def store(shared_keys_dir: Path) -> KeyStore:
    return KeyStore(shared_keys_dir, max_token_ttl=600, reload_seconds=0)


@pytest.fixture
def ring(store: KeyStore) -> KeyRing:
    return store.ring()


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "s",
        "aud": "https://api.example.com",
        "exp": now + 300,
        "iat": now,
        "jti": "j" * 22,
        "client_id": "c",
        "scope": "read",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(ring: KeyRing, claims: dict[str, Any], **header: Any) -> str:
    base = {"alg": "RS256", "typ": "at+jwt", "kid": ring.signing_kid}
    base.update(header)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, claims, ring.signing_key)


def test_issued_token_reads_back(store: KeyStore, ring: KeyRing) -> None:
    issued = AccessTokenIssuer(ISSUER, store, ttl=300).issue(
        client_id="c", subject="u", audience=["https://api.example.com"], scope="read"
    )
    claims = read_access_token(
        issued.value, ring, issuer=ISSUER, audience="https://api.example.com"
    )
    assert claims["sub"] == "u" and claims["jti"] == issued.jti


def test_alg_none_is_refused(ring: KeyRing) -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': ring.signing_kid})}.{_b64(_claims())}."
    with pytest.raises(InvalidToken):
        read_access_token(token, ring, issuer=ISSUER)


def test_hs256_signed_with_the_public_key_is_refused(ring: KeyRing) -> None:
    # The classic algorithm-confusion attack: HMAC keyed with the published RSA key.
    public_pem = ring.signing_key.as_pem(private=False)
    head = _b64({"alg": "HS256", "typ": "at+jwt", "kid": ring.signing_kid})
    body = _b64(_claims())
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken):
        read_access_token(f"{head}.{body}.{_b64(mac)}", ring, issuer=ISSUER)


def test_id_token_typ_cannot_pass_for_an_access_token(ring: KeyRing) -> None:
    with pytest.raises(InvalidToken, match="typ"):
        read_access_token(_sign(ring, _claims(), typ="JWT"), ring, issuer=ISSUER)


def test_missing_kid_is_refused(ring: KeyRing) -> None:
    with pytest.raises(InvalidToken):
        read_access_token(_sign(ring, _claims(), kid=None), ring, issuer=ISSUER)


def test_embedded_jwk_and_jku_are_ignored(ring: KeyRing) -> None:
    attacker = RSAKey.generate_key(2048, auto_kid=True)
    header = {
        "alg": "RS256",
        "typ": "at+jwt",
        "kid": attacker.kid,
        "jwk": attacker.as_dict(private=False),
        "jku": "https://evil.example.com/jwks.json",
    }
    token = jwt.encode(header, _claims(), attacker)
    with pytest.raises(InvalidToken):
        read_access_token(token, ring, issuer=ISSUER)


def test_foreign_issuer_is_refused(ring: KeyRing) -> None:
    with pytest.raises(InvalidToken):
        read_access_token(_sign(ring, _claims(iss="https://evil.example.com")), ring, issuer=ISSUER)


@pytest.mark.parametrize("missing", ["exp", "iss", "aud", "jti", "sub"])
def test_missing_required_claim_is_refused(ring: KeyRing, missing: str) -> None:
    with pytest.raises(InvalidToken):
        read_access_token(_sign(ring, _claims(**{missing: None})), ring, issuer=ISSUER)


def test_expiry_allows_at_most_60_seconds_of_leeway(ring: KeyRing) -> None:
    now = time.time()
    read_access_token(_sign(ring, _claims(exp=int(now) - 50)), ring, issuer=ISSUER)
    with pytest.raises(InvalidToken):
        read_access_token(_sign(ring, _claims(exp=int(now) - 70)), ring, issuer=ISSUER)


def test_wrong_audience_is_refused(ring: KeyRing) -> None:
    with pytest.raises(InvalidToken):
        read_access_token(
            _sign(ring, _claims()), ring, issuer=ISSUER, audience="https://other.example.com"
        )


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b", "a.b.c", "!!!.@@@.###", "e30.e30.", "W10.W10.AA", "x" * 10000],
)
def test_malformed_tokens_raise_invalid_token_only(ring: KeyRing, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        read_access_token(garbage, ring, issuer=ISSUER)


# -- tokens read before: the signature is remembered, nothing else ----------------------------


def test_a_token_read_before_stops_at_once_when_its_key_leaves_the_set(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, max_token_ttl=600, reload_seconds=0)
    store.ensure()
    issued = AccessTokenIssuer(ISSUER, store, ttl=300).issue(
        client_id="c", subject="u", audience=["https://api.example.com"], scope="read"
    )
    old_kid = store.ring().signing_kid
    for _ in range(2):  # the second read is answered from what the first verified
        assert read_access_token(issued.value, store.ring(), issuer=ISSUER)["jti"] == issued.jti
    store.rotate()
    assert read_access_token(issued.value, store.ring(), issuer=ISSUER)["jti"] == issued.jti
    store.retire(old_kid, force=True)
    with pytest.raises(InvalidToken):
        read_access_token(issued.value, store.ring(), issuer=ISSUER)


def test_a_token_read_before_is_still_checked_for_expiry_issuer_and_audience(
    ring: KeyRing,
) -> None:
    now = time.time()
    token = _sign(ring, _claims(exp=int(now) + 30))
    read_access_token(token, ring, issuer=ISSUER, audience="https://api.example.com")
    with pytest.raises(InvalidToken):
        read_access_token(token, ring, issuer=ISSUER, leeway=0, now=now + 31)
    with pytest.raises(InvalidToken):
        read_access_token(token, ring, issuer="https://other.example.com")
    with pytest.raises(InvalidToken):
        read_access_token(token, ring, issuer=ISSUER, audience="https://other.example.com")


def test_callers_cannot_change_what_the_next_read_sees(ring: KeyRing) -> None:
    token = _sign(ring, _claims())
    read_access_token(token, ring, issuer=ISSUER)["scope"] = "admin"
    assert read_access_token(token, ring, issuer=ISSUER)["scope"] == "read"
