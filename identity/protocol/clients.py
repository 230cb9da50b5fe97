"""Client registration: the rules a client must meet, its id and its one-time secret."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.models import Client, secret_digest
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


@dataclass(frozen=True)
class RegisteredClient:
    client: Client
    secret: str | None  # shown once; only its digest is stored


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


def new_client_id() -> str:
    """144 random bits, URL-safe, never starting with "-": the id is typed on command lines,
    where a leading dash reads as an option (a 1-in-64 chance with plain token_urlsafe)."""
    while True:
        client_id = secrets.token_urlsafe(18)
        if not client_id.startswith("-"):
            return client_id


def register_client(
    session: Session,
    *,
    name: str,
    redirect_uris: Sequence[str] = (),
    grant_types: Sequence[str] = (),
    scope: str = "",
    audience: Sequence[str] = (),
    public: bool = False,
    first_party: bool = False,
    post_logout_redirect_uris: Sequence[str] = (),
    refresh_without_offline_access: bool = False,
    require_mfa: bool = False,
    context: audit.RequestContext | None = None,
) -> RegisteredClient:
    """Validate and store a client; return it with its secret (None for a public client)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ClientRegistrationError("a client needs a name of 1 to 200 characters")
    grants = list(dict.fromkeys(grant_types)) or (
        ["authorization_code", "refresh_token"] if redirect_uris else ["client_credentials"]
    )
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown:
        raise ClientRegistrationError(
            f"unknown grant type {unknown[0]!r}; known: {', '.join(GRANT_TYPES)}"
        )
    if public and _CONFIDENTIAL_ONLY.intersection(grants):
        raise ClientRegistrationError("a public client cannot use client_credentials")
    if ACCOUNT_SCOPE in scope.split() and not first_party:
        raise ClientRegistrationError("only a --first-party client may have the account scope")
    if "password" in grants and not first_party:
        raise ClientRegistrationError("only a --first-party client may use the password grant")
    uris = [validate_redirect_uri(u) for u in dict.fromkeys(redirect_uris)]
    if _NEEDS_REDIRECT.intersection(grants) and not uris:
        raise ClientRegistrationError("authorization_code needs at least one --redirect-uri")
    secret = None if public else secrets.token_urlsafe(32)  # 256 bits
    client = Client(
        client_id=new_client_id(),
        name=name,
        secret_digest=None if secret is None else secret_digest(secret),
        redirect_uris=uris,
        grant_types=grants,
        scope=normalise_scope(scope),
        audience=[_validate_audience(a) for a in dict.fromkeys(audience)],
        is_public=public,
        is_first_party=first_party,
        post_logout_redirect_uris=[
            validate_redirect_uri(u) for u in dict.fromkeys(post_logout_redirect_uris)
        ],
        refresh_without_offline_access=refresh_without_offline_access and not public,
        require_mfa=require_mfa,
    )
    repositories.add_client(session, client)
    audit.record(
        session,
        "client.created",
        context=context,
        actor="admin",
        client_id=client.client_id,
        detail={
            "name": name,
            "grant_types": grants,
            "public": public,
            "first_party": first_party,
            "require_mfa": require_mfa,
        },
    )
    return RegisteredClient(client, secret)


def update_client(
    session: Session,
    client_id: str,
    *,
    require_mfa: bool | None = None,
    context: audit.RequestContext | None = None,
) -> Client:
    """Change the settings given (None: unchanged) and return the client; LookupError when
    there is none. Every instance's client cache drops its copy within
    IDENTITY_CACHE_CHECK_SECONDS."""
    client = repositories.get_client(session, client_id)
    if client is None:
        raise LookupError(f"no client {client_id!r}")
    changes: dict[str, object] = {}
    if require_mfa is not None and require_mfa != client.require_mfa:
        client.require_mfa = require_mfa
        changes["require_mfa"] = require_mfa
    if changes:
        session.flush()
        repositories.bump_cache_generation(session, "clients")
        audit.record(
            session,
            "client.updated",
            context=context,
            actor="admin",
            client_id=client_id,
            detail=changes,
        )
    return client


def delete_client(
    session: Session, client_id: str, context: audit.RequestContext | None = None
) -> None:
    """Remove a client; raise LookupError when there is none."""
    if not repositories.delete_client(session, client_id):
        raise LookupError(f"no client {client_id!r}")
    audit.record(session, "client.deleted", context=context, actor="admin", client_id=client_id)


def describe(client: Client) -> dict[str, object]:
    """The JSON shape of a client, without any secret material."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "public": client.is_public,
        "first_party": client.is_first_party,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "scope": client.scope,
        "audience": client.audience,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "refresh_without_offline_access": client.refresh_without_offline_access,
        "require_mfa": client.require_mfa,
        "created_at": client.created_at.isoformat(),
    }
