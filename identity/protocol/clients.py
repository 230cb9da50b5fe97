"""Client administration: the rules a client must meet (one check for registering and for
every update), its id, its one-time secret and the rotation of that secret."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.roles import ROLE_PATTERN
from identity.models import Client, secret_digest, utcnow
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
# How long an old secret may live on after a rotation: long enough to roll a deployment
# out, short enough that a leaked secret cannot be kept alive by rotating it.
MAX_SECRET_GRACE = timedelta(days=30)


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


# The Client column behind each setting (the others have the setting's name).
_COLUMNS = {"public": "is_public", "first_party": "is_first_party"}
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
    role_prefixes: Sequence[str] = (),
    actor: str = "admin",
    context: audit.RequestContext | None = None,
) -> RegisteredClient:
    """Validate and store a client; return it with its secret (None for a public client)."""
    default_grants = ["authorization_code", "refresh_token"] if redirect_uris else []
    settings = check_settings(
        ClientSettings(
            name=name,
            redirect_uris=redirect_uris,
            grant_types=list(grant_types) or default_grants or ["client_credentials"],
            scope=scope,
            audience=audience,
            public=public,
            first_party=first_party,
            post_logout_redirect_uris=post_logout_redirect_uris,
            require_mfa=require_mfa,
            role_prefixes=role_prefixes,
        )
    )
    secret = None if public else secrets.token_urlsafe(32)  # 256 bits
    client = Client(
        client_id=new_client_id(),
        secret_digest=None if secret is None else secret_digest(secret),
        refresh_without_offline_access=refresh_without_offline_access and not public,
    )
    for field in dataclasses.fields(settings):
        setattr(client, _COLUMNS.get(field.name, field.name), _stored(settings, field.name))
    repositories.add_client(session, client)
    audit.record(
        session,
        "client.created",
        context=context,
        actor=actor,
        client_id=client.client_id,
        detail={
            "name": settings.name,
            "grant_types": client.grant_types,
            "public": public,
            "first_party": first_party,
            "require_mfa": require_mfa,
            "role_prefixes": client.role_prefixes,
        },
    )
    return RegisteredClient(client, secret)


def _stored(settings: ClientSettings, field: str) -> object:
    value = getattr(settings, field)
    return list(value) if isinstance(value, list | tuple) else value


def _settings_of(client: Client) -> ClientSettings:
    return ClientSettings(
        name=client.name,
        redirect_uris=list(client.redirect_uris),
        grant_types=list(client.grant_types),
        scope=client.scope,
        audience=list(client.audience),
        public=client.is_public,
        first_party=client.is_first_party,
        post_logout_redirect_uris=list(client.post_logout_redirect_uris),
        require_mfa=client.require_mfa,
        role_prefixes=list(client.role_prefixes),
    )


def _existing(session: Session, client_id: str) -> Client:
    client = repositories.get_client(session, client_id)
    if client is None:
        raise LookupError(f"no client {client_id!r}")
    return client


def update_client(
    session: Session,
    client_id: str,
    *,
    name: str | None = None,
    redirect_uris: Sequence[str] | None = None,
    scope: str | None = None,
    audience: Sequence[str] | None = None,
    grant_types: Sequence[str] | None = None,
    first_party: bool | None = None,
    require_mfa: bool | None = None,
    role_prefixes: Sequence[str] | None = None,
    post_logout_redirect_uris: Sequence[str] | None = None,
    actor: str = "admin",
    context: audit.RequestContext | None = None,
) -> Client:
    """Change the settings given (None: unchanged; a list replaces the registered one) and
    return the client. The client as it would be must meet every rule of registration
    (ClientRegistrationError else, nothing changed); LookupError when there is none. Every
    instance's client cache drops its copy within IDENTITY_CACHE_CHECK_SECONDS."""
    client = _existing(session, client_id)
    given: dict[str, Any] = {
        "name": name,
        "redirect_uris": redirect_uris,
        "scope": scope,
        "audience": audience,
        "grant_types": grant_types,
        "first_party": first_party,
        "require_mfa": require_mfa,
        "role_prefixes": role_prefixes,
        "post_logout_redirect_uris": post_logout_redirect_uris,
    }
    current = _settings_of(client)
    wanted = check_settings(
        dataclasses.replace(current, **{k: v for k, v in given.items() if v is not None})
    )
    changes: dict[str, object] = {}
    for field in UPDATABLE:
        value = _stored(wanted, field)
        if value != _stored(current, field):
            setattr(client, _COLUMNS.get(field, field), value)
            changes[field] = value
    if changes:
        session.flush()
        repositories.bump_cache_generation(session, "clients")
        audit.record(
            session,
            "client.updated",
            context=context,
            actor=actor,
            client_id=client_id,
            detail=changes,
        )
    return client


def parse_grace(text: str) -> timedelta:
    """A grace period as typed: ``0`` (none), or a number and s, m, h, d or w (30m, 24h, 7d)."""
    if text.strip() == "0":
        return timedelta(0)
    try:
        return audit.parse_duration(text)
    except audit.AuditQueryError as error:
        raise ClientRegistrationError(f"grace: {error}") from None


def rotate_client_secret(
    session: Session,
    client_id: str,
    *,
    grace: timedelta,
    actor: str = "admin",
    context: audit.RequestContext | None = None,
) -> str:
    """Give the client a new secret and return it (shown once). The old one keeps working
    for ``grace`` (0: it stops at once; at most MAX_SECRET_GRACE), so the deployments that
    hold it can move over; a later rotation ends it at once. Every instance's client cache
    drops its copy within IDENTITY_CACHE_CHECK_SECONDS."""
    if grace < timedelta(0) or grace > MAX_SECRET_GRACE:
        raise ClientRegistrationError(
            f"the grace period must be between 0 and {MAX_SECRET_GRACE.days} days"
        )
    client = _existing(session, client_id)
    if client.is_public or client.secret_digest is None:
        raise ClientRegistrationError(f"client {client_id!r} is public: it has no secret")
    secret = secrets.token_urlsafe(32)  # 256 bits
    if grace:
        client.previous_secret_digest = client.secret_digest
        client.previous_secret_expires_at = utcnow() + grace
    else:
        client.previous_secret_digest = client.previous_secret_expires_at = None
    client.secret_digest = secret_digest(secret)
    session.flush()
    repositories.bump_cache_generation(session, "clients")
    audit.record(
        session,
        "client.secret_rotated",
        context=context,
        actor=actor,
        client_id=client_id,
        detail={"grace_seconds": int(grace.total_seconds())},
    )
    return secret


def delete_client(
    session: Session,
    client_id: str,
    context: audit.RequestContext | None = None,
    actor: str = "admin",
) -> None:
    """Remove a client; raise LookupError when there is none."""
    if not repositories.delete_client(session, client_id):
        raise LookupError(f"no client {client_id!r}")
    audit.record(session, "client.deleted", context=context, actor=actor, client_id=client_id)


def describe(client: Client) -> dict[str, object]:
    """The JSON shape of a client, without any secret material."""
    data: dict[str, object] = {
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
        "role_prefixes": client.role_prefixes,
        "created_at": client.created_at.isoformat(),
    }
    expires_at = client.previous_secret_expires_at
    if client.previous_secret_digest and expires_at is not None and expires_at > utcnow():
        data["previous_secret_expires_at"] = expires_at.isoformat()
    return data
