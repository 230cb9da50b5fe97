"""Signing in with an upstream identity provider: our side of OpenID Connect and of GitHub's
OAuth, written to close the known federation holes.

- Mix-up (RFC 9700 4.4): ``iss`` in the authorization response (RFC 9207) must name the
  provider the sign-in started with, and must be there when the provider advertises it;
  the discovered ``issuer`` must equal the configured one, and so must the ID token's.
- Forged or stale callbacks: ``state`` (256 bits, compared in constant time) is kept on
  our side with the provider's name and its age; ``nonce`` binds the ID token to it.
- Stolen codes: PKCE S256 on every request, GitHub's included.
- Forged tokens: the ID token is checked against the provider's JWKS with asymmetric
  algorithms only (never ``none`` or HS*, whose key would be our client secret).
- A hostile or broken upstream: 5 s timeouts, bodies capped at 1 MB, nothing it says is
  echoed to the person (``UpstreamError`` carries our own sentence).

This module holds the client (start, the state check, dispatch) and the OpenID Connect flow;
GitHub's flow is in ``identity.upstream_github``, and what both share (the transport, reading
answers, ``UpstreamError``, ``UpstreamIdentity``) in ``identity.upstream_http``.

Blocking on purpose (httpx sync): the web calls it in the threadpool, once per sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeGuard
from urllib.parse import quote

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import extract_compact

from identity.config import Settings
from identity.upstream_github import finish_github, github_authorization_endpoint
from identity.upstream_http import (
    Callback,
    UpstreamError,
    UpstreamHttp,
    UpstreamIdentity,
    code_of,
    identity_from,
    json_object,
    ok_body,
)
from identity.upstream_providers import ProviderConfig

log = logging.getLogger("identity.upstream")

_METADATA_TTL_SECONDS = 600.0
_STATE_TTL_SECONDS = 600
_LEEWAY_SECONDS = 60
_ALGORITHMS = ("RS256", "ES256", "PS256")

# Discovery documents and key sets, per process, by URL: one sign-in must not cost two
# extra round trips, and a provider rotating keys is caught by the re-fetch on an unknown kid.
_CACHE: dict[str, tuple[float, Any]] = {}
_CACHE_LOCK = threading.Lock()


def _cached(url: str) -> Any | None:
    with _CACHE_LOCK:
        entry = _CACHE.get(url)
    if entry is None or time.monotonic() - entry[0] > _METADATA_TTL_SECONDS:
        return None
    return entry[1]


def _remember(url: str, value: Any) -> None:
    with _CACHE_LOCK:
        _CACHE[url] = (time.monotonic(), value)


def _pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _same(a: object, b: object) -> bool:
    """Constant-time equality of two strings; anything else is unequal."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return hmac.compare_digest(a.encode(), b.encode())


@contextmanager
def _logged(provider: ProviderConfig) -> Iterator[None]:
    try:
        yield
    except UpstreamError as error:
        log.info("upstream sign-in at %s: %s (%s)", provider.name, error.reason, error.detail)
        raise


class UpstreamClient:
    """Starts and finishes sign-ins at operator-configured providers (OIDC and GitHub)."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self._http = UpstreamHttp(settings.insecure_http, transport)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def start(self, provider: ProviderConfig, redirect_uri: str) -> tuple[str, dict[str, Any]]:
        """The provider's authorization URL, and what to keep server-side until ``finish``."""
        with _logged(provider):
            self._http.check_url(provider.issuer, "issuer")
            endpoint = (
                github_authorization_endpoint(provider)
                if provider.kind == "github"
                else self._metadata(provider)["authorization_endpoint"]
            )
        kept: dict[str, Any] = {
            "provider": provider.name,
            "state": secrets.token_urlsafe(32),
            "nonce": secrets.token_urlsafe(32),
            "verifier": secrets.token_urlsafe(48),
            "at": int(time.time()),
        }
        params = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": provider.scope,
            "state": kept["state"],
            "code_challenge": _pkce_challenge(kept["verifier"]),
            "code_challenge_method": "S256",
        }
        if provider.kind != "github":
            params["nonce"] = kept["nonce"]
        return str(httpx.URL(endpoint).copy_merge_params(params)), kept

    def finish(
        self,
        provider: ProviderConfig,
        redirect_uri: str,
        query: Mapping[str, str],
        kept: dict[str, Any],
    ) -> UpstreamIdentity:
        """Check the provider's callback (``query``) against ``kept`` and return who signed in;
        UpstreamError when anything is off."""
        callback = Callback(provider, redirect_uri, query, kept)
        with _logged(provider):
            self._http.check_url(provider.issuer, "issuer")
            _check_state(callback)
            if "error" in query:
                raise UpstreamError("denied", "the provider answered an error")
            if provider.kind == "github":
                return finish_github(self._http, callback)
            return self._finish_oidc(callback)

    # -- OpenID Connect --------------------------------------------------------------------

    def _finish_oidc(self, callback: Callback) -> UpstreamIdentity:
        metadata = self._metadata(callback.provider)
        _check_response_issuer(callback, metadata)
        tokens = self._exchange_code(callback, metadata)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise UpstreamError("token", "the token response has no id_token")
        claims = self._verify_id_token(id_token, metadata)
        _check_id_token_claims(callback, claims)
        if "email" not in claims and isinstance(metadata.get("userinfo_endpoint"), str):
            claims = {**self._userinfo(tokens, metadata, claims["sub"]), **claims}
        return identity_from(claims["sub"], claims)

    def _metadata(self, provider: ProviderConfig) -> dict[str, Any]:
        url = f"{provider.issuer.rstrip('/')}/.well-known/openid-configuration"
        metadata = _cached(url)
        if metadata is not None:
            return dict(metadata)
        status, body = self._http.request("GET", url)
        metadata = json_object(ok_body(status, body, "unreachable"))
        if metadata.get("issuer") != provider.issuer:
            raise UpstreamError("issuer", "the discovered issuer is not the configured one")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            self._http.check_url(metadata.get(name), "invalid_response")
        if "userinfo_endpoint" in metadata:
            self._http.check_url(metadata["userinfo_endpoint"], "invalid_response")
        _remember(url, metadata)
        return dict(metadata)

    def _exchange_code(self, callback: Callback, metadata: dict[str, Any]) -> dict[str, Any]:
        provider = callback.provider
        form = {
            "grant_type": "authorization_code",
            "code": code_of(callback.query),
            "redirect_uri": callback.redirect_uri,
            "code_verifier": callback.kept["verifier"],
        }
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth: httpx.BasicAuth | None = None
        if "client_secret_basic" in methods:
            # RFC 6749 2.3.1: both halves are form-encoded before they are joined.
            auth = httpx.BasicAuth(
                quote(provider.client_id, safe=""), quote(provider.client_secret, safe="")
            )
        elif "client_secret_post" in methods:
            form |= {"client_id": provider.client_id, "client_secret": provider.client_secret}
        else:
            raise UpstreamError("token", "the provider supports no client secret method")
        status, body = self._http.request("POST", metadata["token_endpoint"], data=form, auth=auth)
        if status != 200:
            raise UpstreamError("token", f"the token endpoint answered {status}")
        return json_object(body)

    def _verify_id_token(self, id_token: str, metadata: dict[str, Any]) -> dict[str, Any]:
        header = _jws_header(id_token)
        algorithm = header.get("alg")
        if algorithm not in _ALGORITHMS:
            raise UpstreamError("token", "the ID token's algorithm is not allowed")
        key = self._signing_key(metadata["jwks_uri"], header.get("kid"))
        if key is None:
            raise UpstreamError("token", "no key of the provider's set signs this ID token")
        try:
            return dict(jwt.decode(id_token, key, algorithms=[algorithm]).claims)
        except (JoseError, ValueError, TypeError) as error:
            raise UpstreamError("token", "the ID token's signature does not verify") from error

    def _signing_key(self, jwks_uri: str, kid: object) -> RSAKey | ECKey | None:
        """The key named ``kid``; an unknown kid fetches the set again once (a rotation)."""
        keys = _cached(jwks_uri)
        key = _key_named(keys, kid) if isinstance(keys, list) else None
        if key is None:
            status, body = self._http.request("GET", jwks_uri)
            keys = _signing_keys(json_object(ok_body(status, body, "unreachable")))
            _remember(jwks_uri, keys)
            key = _key_named(keys, kid)
        return key

    def _userinfo(
        self, tokens: dict[str, Any], metadata: dict[str, Any], subject: str
    ) -> dict[str, Any]:
        access_token = tokens.get("access_token")
        if not isinstance(access_token, str):
            return {}
        headers = {"Authorization": f"Bearer {access_token}"}
        status, body = self._http.request("GET", metadata["userinfo_endpoint"], headers=headers)
        claims = json_object(ok_body(status, body, "token"))
        # OIDC Core 5.3.2: a userinfo answer about someone else is a substitution attack.
        if claims.get("sub") != subject:
            raise UpstreamError("token", "userinfo names another subject")
        return {k: v for k, v in claims.items() if k in ("email", "email_verified", "name")}


def _check_state(callback: Callback) -> None:
    """The callback answers the sign-in we started, for this provider, less than 10 min ago."""
    kept, started, now = callback.kept, callback.kept.get("at"), time.time()
    if (
        not _same(callback.query.get("state"), kept.get("state"))
        or kept.get("provider") != callback.provider.name
        or not _is_number(started)
        or not now - _STATE_TTL_SECONDS < started <= now + _LEEWAY_SECONDS
        or not isinstance(kept.get("verifier"), str)
    ):
        raise UpstreamError("state", "the state is unknown, stale or for another provider")


def _check_response_issuer(callback: Callback, metadata: dict[str, Any]) -> None:
    """RFC 9207: the callback's ``iss`` names our provider, and is there when advertised."""
    if "iss" in callback.query:
        if callback.query["iss"] != callback.provider.issuer:
            raise UpstreamError("issuer", "the iss parameter names another issuer")
    elif metadata.get("authorization_response_iss_parameter_supported") is True:
        raise UpstreamError("issuer", "the advertised iss parameter is missing")


def _check_id_token_claims(callback: Callback, claims: dict[str, Any]) -> None:
    """OIDC Core 3.1.3.7: issuer, audience, lifetime, subject and nonce."""
    client_id = callback.provider.client_id
    if claims.get("iss") != callback.provider.issuer:
        raise UpstreamError("issuer", "the ID token's iss is another issuer")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise UpstreamError("token", "the ID token is for another audience")
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != client_id:
        raise UpstreamError("token", "the ID token's azp is another client")
    now = time.time()
    expires, issued = claims.get("exp"), claims.get("iat")
    if not _is_number(expires) or expires <= now:
        raise UpstreamError("token", "the ID token has expired")
    if not _is_number(issued) or issued > now + _LEEWAY_SECONDS:
        raise UpstreamError("token", "the ID token is issued in the future")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise UpstreamError("token", "the ID token has no subject")
    if not _same(claims.get("nonce"), callback.kept.get("nonce")):
        raise UpstreamError("nonce", "the ID token's nonce is not this sign-in's")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _jws_header(token: str) -> dict[str, Any]:
    try:
        return dict(extract_compact(token.encode()).headers())
    except (JoseError, ValueError, TypeError) as error:
        raise UpstreamError("token", "the ID token is not a compact JWS") from error


def _signing_keys(document: dict[str, Any]) -> list[RSAKey | ECKey]:
    """The provider's public signing keys; symmetric or unusable entries are left out."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise UpstreamError("invalid_response", "the JWKS has no keys list")
    keys: list[RSAKey | ECKey] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            if entry.get("kty") == "RSA":
                keys.append(RSAKey.import_key(entry))
            elif entry.get("kty") == "EC":
                keys.append(ECKey.import_key(entry))
        except (JoseError, ValueError, TypeError):
            continue  # one broken key must not take the provider's others down
    return keys


def _key_named(keys: list[RSAKey | ECKey], kid: object) -> RSAKey | ECKey | None:
    """The key ``kid`` names; without a kid, the set's only key (never a guess among many)."""
    if not isinstance(kid, str):
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.kid == kid), None)
