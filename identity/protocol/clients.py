"""Client administration: registering, updating and deleting clients, their ids, their
one-time secrets and the rotation of those secrets. The rules live in ``client_rules``."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.models import Client, secret_digest, utcnow
from identity.protocol.client_rules import GRANT_TYPES as GRANT_TYPES
from identity.protocol.client_rules import UPDATABLE as UPDATABLE
from identity.protocol.client_rules import ClientRegistrationError as ClientRegistrationError
from identity.protocol.client_rules import ClientSettings as ClientSettings
from identity.protocol.client_rules import check_settings as check_settings
from identity.protocol.client_rules import normalise_scope as normalise_scope
from identity.protocol.client_rules import validate_redirect_uri as validate_redirect_uri

# How long an old secret may live on after a rotation: long enough to roll a deployment
# out, short enough that a leaked secret cannot be kept alive by rotating it.
MAX_SECRET_GRACE = timedelta(days=30)


@dataclass(frozen=True)
class RegisteredClient:
    client: Client
    secret: str | None  # shown once; only its digest is stored


def new_client_id() -> str:
    """144 random bits, URL-safe, never starting with "-": the id is typed on command lines,
    where a leading dash reads as an option (a 1-in-64 chance with plain token_urlsafe)."""
    while True:
        client_id = secrets.token_urlsafe(18)
        if not client_id.startswith("-"):
            return client_id


# The Client column behind each setting (the others have the setting's name).
_COLUMNS = {"public": "is_public", "first_party": "is_first_party"}


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
