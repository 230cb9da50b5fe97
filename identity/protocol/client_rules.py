"""The rules a client must meet: one check (``check_settings``) for registering a client and
for every update of one, so no update can make a client that registration would refuse."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from identity.accounts.roles import ROLE_PATTERN
from identity.protocol.scopes import ACCOUNT_SCOPE

GRANT_TYPES = (
    "authorization_code",
    "client_credentials",
    "refresh_token",
    "password",
    "urn:ietf:params:oauth:grant-type:device_code",
)
_CONFIDENTIAL_ONLY = {"client_credentials"}
_NEEDS_REDIRECT = {"authorization_code"}
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_FORBIDDEN_SCHEMES = {"javascript", "data", "vbscript", "file", "blob", "about"}


class ClientRegistrationError(ValueError):
    """A client definition that identity refuses; the message says which rule it broke."""


def validate_redirect_uri(uri: str) -> str:
    """Exact URIs only: no fragment, no script schemes, plain http only on loopback (RFC 8252)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if not scheme or scheme in _FORBIDDEN_SCHEMES:
        raise ClientRegistrationError(f"redirect URI {uri!r} has a forbidden or missing scheme")
    if parts.fragment or "#" in uri:
        raise ClientRegistrationError(f"redirect URI {uri!r} must not have a fragment")
    if scheme in {"http", "https"}:
        if not parts.hostname:
            raise ClientRegistrationError(f"redirect URI {uri!r} has no host")
        if scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ClientRegistrationError(
                f"redirect URI {uri!r} is plain http; only loopback may use http"
            )
        if parts.username or parts.password:
            raise ClientRegistrationError(f"redirect URI {uri!r} must not carry credentials")
    elif "." not in scheme:
        # RFC 8252 §7.1: private-use schemes are reverse domain names, e.g. com.example.app
        raise ClientRegistrationError(
            f"redirect URI {uri!r}: a private-use scheme must be a reverse domain name"
        )
    return uri


def _validate_audience(value: str) -> str:
    parts = urlsplit(value)
    if not parts.scheme or parts.fragment:
        raise ClientRegistrationError(
            f"audience {value!r} must be an absolute URI without a fragment (RFC 8707)"
        )
    return value


def normalise_scope(scope: str | Iterable[str]) -> str:
    tokens = scope.split() if isinstance(scope, str) else [t for s in scope for t in s.split()]
    for token in tokens:
        if not _SCOPE_TOKEN.match(token):
            raise ClientRegistrationError(f"scope {token!r} has characters RFC 6749 forbids")
    return " ".join(dict.fromkeys(tokens))


@dataclass(frozen=True)
class ClientSettings:
    """What an operator decides about a client: checked as a whole by ``check_settings``,
    at registration and after every update, so no update can make a client that
    registration would refuse."""

    name: str
    redirect_uris: Sequence[str]
    grant_types: Sequence[str]
    scope: str
    audience: Sequence[str]
    public: bool
    first_party: bool
    post_logout_redirect_uris: Sequence[str]
    require_mfa: bool
    role_prefixes: Sequence[str]


# The settings an update may change (``public`` is fixed: it decides whether there is a secret).
UPDATABLE = (
    "name",
    "redirect_uris",
    "grant_types",
    "scope",
    "audience",
    "first_party",
    "require_mfa",
    "role_prefixes",
    "post_logout_redirect_uris",
)


def check_settings(settings: ClientSettings) -> ClientSettings:
    """The settings, normalised (trimmed, duplicates dropped), when they meet every rule;
    else ClientRegistrationError naming the rule."""
    name = settings.name.strip()
    if not name or len(name) > 200:
        raise ClientRegistrationError("a client needs a name of 1 to 200 characters")
    grants = list(dict.fromkeys(settings.grant_types))
    if not grants:
        raise ClientRegistrationError("a client needs at least one grant type")
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown:
        raise ClientRegistrationError(
            f"unknown grant type {unknown[0]!r}; known: {', '.join(GRANT_TYPES)}"
        )
    if settings.public and _CONFIDENTIAL_ONLY.intersection(grants):
        raise ClientRegistrationError("a public client cannot use client_credentials")
    scope = normalise_scope(settings.scope)
    if ACCOUNT_SCOPE in scope.split() and not settings.first_party:
        raise ClientRegistrationError("only a --first-party client may have the account scope")
    if "password" in grants and not settings.first_party:
        raise ClientRegistrationError("only a --first-party client may use the password grant")
    uris = [validate_redirect_uri(u) for u in dict.fromkeys(settings.redirect_uris)]
    if _NEEDS_REDIRECT.intersection(grants) and not uris:
        raise ClientRegistrationError("authorization_code needs at least one --redirect-uri")
    return dataclasses.replace(
        settings,
        name=name,
        grant_types=grants,
        scope=scope,
        redirect_uris=uris,
        audience=[_validate_audience(a) for a in dict.fromkeys(settings.audience)],
        post_logout_redirect_uris=[
            validate_redirect_uri(u) for u in dict.fromkeys(settings.post_logout_redirect_uris)
        ],
        role_prefixes=[_validate_role_prefix(p) for p in dict.fromkeys(settings.role_prefixes)],
    )


def _validate_role_prefix(prefix: str) -> str:
    if not ROLE_PATTERN.fullmatch(prefix):
        raise ClientRegistrationError(
            f"role prefix {prefix!r}: 1 to 100 letters, digits and : . _ -, starting with "
            "a letter or a digit (e.g. app1:)"
        )
    return prefix
