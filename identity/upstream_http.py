"""Talking to an upstream identity provider over HTTP, as both sign-in flows do (OpenID
Connect in ``identity.upstream``, GitHub in ``identity.upstream_github``): the bounded
transport (5 s timeouts, bodies capped at 1 MB, https only unless IDENTITY_INSECURE_HTTP),
reading the provider's answers, the callback being checked, and what a flow returns: an
``UpstreamIdentity``, or an ``UpstreamError`` that carries our own sentence, never the
provider's words.

Its own module so that the GitHub flow can use it without importing the client that
dispatches to it (an import cycle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from identity.upstream_providers import ProviderConfig

_TIMEOUT = httpx.Timeout(5.0)
_MAX_BODY_BYTES = 1_000_000

_SENTENCES = {
    "denied": "The sign-in was cancelled at the provider.",
    "state": "This sign-in has expired or was not started here. Please start again.",
    "issuer": "The provider's answer did not come from the provider you chose. Please start again.",
    "nonce": "The provider's answer does not belong to this sign-in. Please start again.",
    "token": "The provider did not confirm the sign-in. Please start again.",
    "unreachable": "The provider could not be reached. Please try again in a moment.",
    "invalid_response": "The provider's answer could not be read. Please try again later.",
}


class UpstreamError(Exception):
    """A sign-in at an upstream provider failed: ``reason`` is one of the keys above and
    ``str()`` a sentence for the person; ``detail`` (our words, no secrets) is for logs."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(_SENTENCES[reason])
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class UpstreamIdentity:
    """Who the provider says signed in; ``subject`` is unique only within that provider."""

    subject: str
    email: str | None
    email_verified: bool
    name: str
    amr: list[str]


@dataclass(frozen=True)
class Callback:
    """The provider's answer (``query``) to one sign-in we started (``kept``)."""

    provider: ProviderConfig
    redirect_uri: str
    query: Mapping[str, str]
    kept: dict[str, Any]


class UpstreamHttp:
    """The pooled HTTP client every request to a provider goes through."""

    def __init__(self, insecure_http: bool, transport: httpx.BaseTransport | None = None) -> None:
        self._insecure_http = insecure_http
        self._http = httpx.Client(
            transport=transport,
            timeout=_TIMEOUT,
            follow_redirects=False,
            headers={"User-Agent": "identity", "Accept": "application/json"},
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def check_url(self, url: object, reason: str) -> None:
        """https only, or http when the operator allowed it (IDENTITY_INSECURE_HTTP)."""
        if not isinstance(url, str):
            raise UpstreamError(reason, "a provider URL is missing")
        scheme = url.partition("://")[0].lower()
        if scheme != "https" and not (scheme == "http" and self._insecure_http):
            raise UpstreamError(reason, "a provider URL is not https")

    def request(self, method: str, url: str, **options: Any) -> tuple[int, bytes]:
        """The status and body (at most 1 MB) of one request; UpstreamError("unreachable")
        when the network fails or times out."""
        try:
            with self._http.stream(method, url, **options) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_BODY_BYTES:
                        raise UpstreamError("invalid_response", "the answer is over 1 MB")
                return response.status_code, bytes(body)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise UpstreamError("unreachable", f"{type(error).__name__} at {method}") from error


def identity_from(subject: str, claims: Mapping[str, Any]) -> UpstreamIdentity:
    """Only well-typed claims count; ``email_verified`` only when it is really true."""
    email, name, amr = claims.get("email"), claims.get("name"), claims.get("amr")
    # JSON true only: 1 == True in Python, and "false" or "yes" are not a verification.
    verified = claims.get("email_verified")
    return UpstreamIdentity(
        subject=subject,
        email=email if isinstance(email, str) and email else None,
        email_verified=verified is True or verified == "true",
        name=name if isinstance(name, str) else "",
        amr=[m for m in amr if isinstance(m, str)] if isinstance(amr, list) else [],
    )


def code_of(query: Mapping[str, str]) -> str:
    """The authorization code the callback carries."""
    code = query.get("code")
    if not code:
        raise UpstreamError("invalid_response", "the callback carries no code")
    return code


def ok_body(status: int, body: bytes, reason: str) -> bytes:
    """The body of a 200; a 5xx is an upstream that is down, anything else is ``reason``."""
    if status == 200:
        return body
    raise UpstreamError("unreachable" if status >= 500 else reason, f"the answer was {status}")


def json_value(body: bytes) -> Any:
    """The body read as JSON, any value."""
    try:
        return json.loads(body)
    except ValueError as error:
        raise UpstreamError("invalid_response", "the answer is not JSON") from error


def json_object(body: bytes) -> dict[str, Any]:
    """The body read as a JSON object."""
    value = json_value(body)
    if not isinstance(value, dict):
        raise UpstreamError("invalid_response", "the answer is not a JSON object")
    return value
