"""RFC 9068 JWT access tokens: issuing them and reading them back as a resource server would.

Signed and checked here with joserfc, not through Authlib's ``rfc9068`` generator and
validator:

- Reading is on the hot paths that run in the event loop (introspection, UserInfo):
  ``read_access_token`` is a plain function of a string and the cached key ring, with no
  per-request Authlib objects. The validator is part of Authlib's resource protector and
  raises its RFC 6750 errors, where the JSON API and UserInfo each answer in their own shape.
- Keys are loaded once and kept (``KeyStore.ring`` reloads only when the manifest changes);
  the generator's ``get_jwks`` is imported again for every token it signs. The header names
  the active key (``kid``) itself, where a key set of several keys would make joserfc pick
  one at random.
- Validation pins what RFC 8725 asks: ``alg`` is RS256 only (the validator accepts any of
  joserfc's recommended HS256, RS256, ES256), the key comes only from our key set by
  ``kid``, and ``typ`` must say ``at+jwt`` (the validator lets a token without ``typ``
  through).
- Issuing returns the claims with the token, which audit, the denylist and refresh families
  need, and ``aud`` follows RFC 8707 ``resource``, which the generator does not implement.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from identity import unique_ids
from identity.accounts.factors import acr_of
from identity.keys import KeyRing, KeyStore

ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}
LEEWAY_SECONDS = 60
_MAX_TOKEN_LENGTH = 8192


class InvalidToken(Exception):
    """The token is malformed, forged, expired or otherwise unacceptable."""


@dataclass(frozen=True)
class Authentication:
    """How and when the user behind a grant logged in: carried from the login through codes
    and refresh tokens into every token (auth_time, amr) and tied to the browser session.
    ``idp`` names the upstream provider of a federated sign-in; None for our own."""

    auth_time: datetime
    amr: tuple[str, ...] = ("pwd",)
    session_id: str | None = None
    idp: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A signed access token and the claims it carries (for audit and storage)."""

    value: str
    claims: dict[str, Any]

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])


class _Signer:
    """Signs JWTs with the active key; ``kid`` names it so verifiers can find it."""

    typ = "JWT"

    def __init__(
        self, issuer: str, keys: KeyStore, ttl: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.issuer = issuer
        self.keys = keys
        self.ttl = ttl
        self._clock = clock

    def _sign(self, claims: dict[str, Any]) -> str:
        ring = self.keys.ring()
        header = {"alg": "RS256", "typ": self.typ, "kid": ring.signing_kid}
        return str(jwt.encode(header, claims, ring.signing_key))

    def _times(self) -> dict[str, int]:
        now = int(self._clock())
        return {"exp": now + self.ttl, "iat": now}


class AccessTokenIssuer(_Signer):
    """RFC 9068 access tokens (``typ: at+jwt``)."""

    typ = "at+jwt"

    def issue(
        self,
        *,
        client_id: str,
        subject: str,
        audience: Sequence[str],
        scope: str,
        extra: dict[str, Any] | None = None,
    ) -> IssuedToken:
        """Sign a token for ``subject`` (a user id, or the client itself)."""
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience[0] if len(audience) == 1 else list(audience),
            **self._times(),
            "jti": unique_ids.token_urlsafe(16),  # buffered: no system call per token
            "client_id": client_id,
            "scope": scope,
            **(extra or {}),
        }
        return IssuedToken(self._sign(claims), claims)


def at_hash(access_token: str) -> str:
    """OIDC Core 3.1.3.6: base64url of the left half of SHA-256 of the access token."""
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


class IdTokenIssuer(_Signer):
    """OpenID Connect ID tokens, signed with the same keys as access tokens."""

    def issue(
        self,
        *,
        client_id: str,
        subject: str,
        authentication: Authentication,
        nonce: str | None,
        access_token: str | None,
        claims: dict[str, Any],
    ) -> str:
        """An ID token for ``subject``, issued to ``client_id``."""
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": client_id,
            "azp": client_id,
            **self._times(),
            "auth_time": int(authentication.auth_time.timestamp()),
            "amr": list(authentication.amr),
            "acr": acr_of(authentication.amr),
            **claims,
        }
        if nonce:
            payload["nonce"] = nonce
        if access_token:
            payload["at_hash"] = at_hash(access_token)
        if authentication.session_id:
            payload["sid"] = session_sid(authentication.session_id)
        if authentication.idp:
            payload["idp"] = authentication.idp
        return self._sign(payload)


def session_sid(session_id: str) -> str:
    """The ``sid`` claim of a browser session: derived from its row id, so a logout hint can
    be matched to the session without storing it, and the row id never leaves the server."""
    digest = hashlib.sha256(b"identity sid:" + session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def read_id_token_hint(token: str, ring: KeyRing, *, issuer: str) -> dict[str, Any]:
    """An ID token we issued, as an end-session hint: signature and issuer are checked,
    expiry is not (OIDC RP-Initiated Logout accepts expired hints)."""
    if not token or len(token) > _MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise InvalidToken("the hint is not a compact JWS")
    header = _header(token)
    kid = header.get("kid")
    # Our ID tokens say typ JWT; an access token (at+jwt) is no hint, whoever holds it.
    if header.get("alg") != "RS256" or not isinstance(kid, str) or header.get("typ") != "JWT":
        raise InvalidToken("the hint is not one of our ID tokens")
    try:
        claims = jwt.decode(
            token, ring.verification_keys.get_by_kid(kid), algorithms=["RS256"]
        ).claims
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidToken(str(error) or type(error).__name__) from error
    if claims.get("iss") != issuer or not isinstance(claims.get("sub"), str):
        raise InvalidToken("the hint was not issued here")
    audience = claims.get("aud")
    if not isinstance(audience, str) or claims.get("azp", audience) != audience:
        raise InvalidToken("the hint is not an ID token of one client")
    if "scope" in claims or "client_id" in claims:
        raise InvalidToken("the hint is an access token")
    return claims


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError) as error:
        raise InvalidToken("the token header is not base64url JSON") from error
    if not isinstance(header, dict):
        raise InvalidToken("the token header is not a JSON object")
    return header


def token_user_id(claims: dict[str, Any]) -> uuid.UUID | None:
    """The user an access token acts for; None for a client's own token (client_credentials:
    ``sub`` is the client). InvalidToken for a ``sub`` that is neither: we never sign one."""
    if claims["sub"] == claims["client_id"]:
        return None
    try:
        return uuid.UUID(str(claims["sub"]))
    except ValueError as error:
        raise InvalidToken("the subject is neither the client nor a user") from error


# Signatures already checked, by token: resource servers introspect and call UserInfo with
# the same token many times over its life, and the RSA check with joserfc's decoding is
# most of a read (~0.1 ms). Only the signature, header and decoding are remembered; the
# claims are validated on every read (expiry moves). An entry holds the key ring it was
# checked against and counts only while that ring is current, so a key removed from the
# set stops its tokens at once. Only tokens that verified are kept, so a flood of forged
# ones cannot fill it with anything; a bound keeps memory flat whatever comes.
_VERIFIED: dict[str, tuple[KeyRing, dict[str, Any]]] = {}
_MAX_VERIFIED = 10_000
_CLAIM_CHECKS: dict[tuple[str, str | None, int], jwt.JWTClaimsRegistry] = {}


def read_access_token(
    token: str,
    ring: KeyRing,
    *,
    issuer: str,
    audience: str | None = None,
    leeway: int = LEEWAY_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify ``token`` as RFC 8725 and RFC 9068 ask and return its claims.

    The algorithm is pinned to RS256, the key is looked up by ``kid`` in our own key set
    only (``jwk``/``jku``/``x5u``/``x5c`` headers are never used), and ``typ`` must say
    ``at+jwt`` so an ID token cannot pass for an access token."""
    verified = _VERIFIED.get(token)
    claims = verified[1] if verified is not None and verified[0] is ring else None
    if claims is None:
        claims = _verify_signature(token, ring)
        if len(_VERIFIED) >= _MAX_VERIFIED:
            _VERIFIED.clear()
        _VERIFIED[token] = (ring, claims)
    try:
        _claim_checks(issuer, audience, leeway, now).validate(claims)
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidToken(str(error) or type(error).__name__) from error
    if not isinstance(claims.get("client_id"), str) or not isinstance(claims["jti"], str):
        raise InvalidToken("the token lacks client_id or a string jti")
    return dict(claims)  # a copy: callers may not change what the next read sees


def _verify_signature(token: str, ring: KeyRing) -> dict[str, Any]:
    if not token or len(token) > _MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise InvalidToken("the token is not a compact JWS")
    header = _header(token)
    if header.get("alg") != "RS256":
        raise InvalidToken("the token is not signed with RS256")
    if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("the token is not an access token (typ)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("the token names no key")
    try:
        key = ring.verification_keys.get_by_kid(kid)
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=["RS256"]).claims
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidToken(str(error) or type(error).__name__) from error
    return claims


def _claim_checks(
    issuer: str, audience: str | None, leeway: int, now: float | None
) -> jwt.JWTClaimsRegistry:
    """The claims registry for these checks; kept (they are few) unless ``now`` is fixed."""
    checks: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "exp": {"essential": True},
        "iat": {"essential": True},
        "jti": {"essential": True},
        "sub": {"essential": True},
        "aud": {"essential": True},
    }
    if audience is not None:
        checks["aud"] = {"essential": True, "value": audience}
    if now is not None:
        return jwt.JWTClaimsRegistry(now=int(now), leeway=leeway, **checks)
    key = (issuer, audience, leeway)
    registry = _CLAIM_CHECKS.get(key)
    if registry is None:
        # Without ``now`` the registry reads the clock at every validation.
        registry = _CLAIM_CHECKS[key] = jwt.JWTClaimsRegistry(leeway=leeway, **checks)
    return registry
