"""SQLAlchemy rows. Rows implement Authlib's model mixins directly.

This module holds clients, users and what hangs off them (sessions, emailed codes, grants,
tokens, consents, device authorizations), the audit trail and the mail outbox. The shared base
lives in ``model_base``; the other nouns' rows live in ``admin_models``, ``factor_models`` and
``federation_models``. This module re-exports all of them, so ``from identity.models import X``
keeps working and importing it puts every table on ``Base.metadata``."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

# The shared base, imported in the re-exporting form: this module uses these names and still
# hands them out (``from identity.models import utcnow`` is older than ``model_base``).
from identity.model_base import NAMING_CONVENTION as NAMING_CONVENTION
from identity.model_base import Base as Base
from identity.model_base import BigId as BigId
from identity.model_base import UTCDateTime as UTCDateTime
from identity.model_base import secret_digest as secret_digest
from identity.model_base import utcnow as utcnow

_LOOPBACK_IPS = {"127.0.0.1", "::1"}
# Scopes every client with a user grant may ask for, on top of its registered ones.
OIDC_SCOPES = ("openid", "profile", "email", "offline_access", "roles")


class Client(Base, ClientMixin):  # type: ignore[misc]
    """A registered OAuth client. Its secret is kept only as a SHA-256 digest."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_digest: Mapped[str | None] = mapped_column(String(64))
    redirect_uris: Mapped[list[str]]
    grant_types: Mapped[list[str]]
    scope: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[list[str]]
    is_public: Mapped[bool] = mapped_column(default=False)
    is_first_party: Mapped[bool] = mapped_column(default=False)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    # A confidential client may be given refresh tokens without asking for offline_access.
    refresh_without_offline_access: Mapped[bool] = mapped_column(default=False)
    # Its users sign in with two factors (acr urn:identity:loa:2), whatever the request asks.
    require_mfa: Mapped[bool] = mapped_column(default=False)
    # Its tokens carry only the user's roles with one of these prefixes (none: every role).
    role_prefixes: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    # After a secret rotation the old secret still works until then (a grace period).
    previous_secret_digest: Mapped[str | None] = mapped_column(String(64))
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """For user grants: its registered scopes plus the OpenID Connect ones."""
        if not scope:
            return ""
        allowed = set(scope_to_list(self.scope)) | set(OIDC_SCOPES)
        return " ".join(dict.fromkeys(s for s in scope_to_list(scope) if s in allowed))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match; the one exception is the port of a loopback IP redirect
        (RFC 8252 §7.3), because native apps listen on whatever port is free."""
        if redirect_uri in self.redirect_uris:
            return True
        asked = urlsplit(redirect_uri)
        if asked.scheme != "http" or asked.hostname not in _LOOPBACK_IPS or asked.fragment:
            return False
        for registered in self.redirect_uris:
            known = urlsplit(registered)
            if (
                known.scheme == "http"
                and known.hostname == asked.hostname
                and known.path == asked.path
                and known.query == asked.query
                and asked.username is None
            ):
                return True
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        """The current secret, or the previous one within its grace period after a rotation.
        During a rotation both digests are compared: the timing does not tell which matched."""
        if self.secret_digest is None:
            return False
        given = secret_digest(client_secret)
        current = hmac.compare_digest(given, self.secret_digest)
        if self.previous_secret_digest is None or self.previous_secret_expires_at is None:
            # Whether a rotation is under way is no secret; the token endpoint's usual case
            # skips the clock and the second comparison.
            return current
        previous = hmac.compare_digest(given, self.previous_secret_digest)
        return current or (previous and utcnow() < self.previous_secret_expires_at)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.is_public:
            return method == "none"
        return method in {"client_secret_basic", "client_secret_post"}

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def has_scope(self, scope: str) -> bool:
        """True when every scope token asked for was registered for this client."""
        return set(scope_to_list(scope) or []) <= set(scope_to_list(self.scope) or [])


class AuditEvent(Base):
    """One security event. Never holds a secret: detail carries ids and reasons only."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "occurred_at"),
        Index(None, "type", "occurred_at"),
        Index(None, "subject", "occurred_at"),
        Index(None, "client_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    actor: Mapped[str | None] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(String(128))
    client_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CacheGeneration(Base):
    """A counter bumped in the transaction that changes what a process may cache (clients):
    every instance compares it with the one its cache was filled under."""

    __tablename__ = "cache_generations"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class RevokedToken(Base):
    """A revoked access token's jti, kept until the token would have expired anyway.

    The durable half of the denylist: Redis (or a process cache) answers fast, this row
    survives a Redis flush or restart."""

    __tablename__ = "revoked_tokens"
    __table_args__ = (Index(None, "expires_at"),)

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person. ``email`` is stored normalised (trimmed, NFKC, lower-cased) and is unique."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    email_verified: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    password_changed_at: Mapped[datetime | None]
    # Signups of this address while it was unverified. Past one, the address is contested
    # (someone else may have signed up with it too), so a code anyone can ask for carries no
    # attempt's password: see ``VerificationChallenge.password_hash``.
    signup_attempts: Mapped[int] = mapped_column(default=0, server_default="0")

    def get_user_id(self) -> str:
        return str(self.id)


_USER_FK = "users.id"


class BrowserSession(Base):
    """A server-side browser session. The cookie holds a 256-bit value; the row only its
    SHA-256. Anonymous sessions (user_id None) carry the CSRF token of the login forms."""

    __tablename__ = "browser_sessions"
    __table_args__ = (Index(None, "user_id"), Index(None, "expires_at"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # What pages and the API show and take: never the digest that keys the row.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    auth_time: Mapped[datetime | None]
    amr: Mapped[list[str]] = mapped_column(default=list)
    # The upstream provider of a federated sign-in (the ``idp`` claim), else None.
    idp: Mapped[str | None] = mapped_column(String(40))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class VerificationChallenge(Base):
    """One email-verification code and its link, bound to the signup attempt it was mailed
    for. A few may be live at once; a new one never voids an earlier one."""

    __tablename__ = "verification_challenges"
    __table_args__ = (Index(None, "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    code_digest: Mapped[str] = mapped_column(String(64))
    link_digest: Mapped[str] = mapped_column(String(64), unique=True)
    # The attempt's argon2 hash and name: whoever verifies with this code gets them, and
    # every other attempt's password dies (pre-hijacking). No hash: the code proves the
    # mailbox only, and its user chooses a password afterwards.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class OneTimeToken(Base):
    """A single-use emailed token (password reset, email change), kept as its SHA-256."""

    __tablename__ = "one_time_tokens"
    __table_args__ = (Index(None, "user_id", "purpose"),)

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class OutboxMessage(Base):
    """A mail waiting for (or done with) SMTP delivery. Bodies are blanked once sent,
    because they may hold codes and links."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index(None, "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    template: Mapped[str] = mapped_column(String(64))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))


# Re-exports: the rows of the other nouns, under their old names, so that importing this module
# puts every table on Base.metadata. Those modules import ``model_base``, never this one, so
# there is no cycle.
from identity.admin_models import UserRole as UserRole  # noqa: E402
from identity.admin_models import WebhookAttempt as WebhookAttempt  # noqa: E402
from identity.admin_models import WebhookDelivery as WebhookDelivery  # noqa: E402
from identity.admin_models import WebhookEndpoint as WebhookEndpoint  # noqa: E402
from identity.admin_models import WebhookEvent as WebhookEvent  # noqa: E402
from identity.factor_models import Passkey as Passkey  # noqa: E402
from identity.factor_models import RecoveryCode as RecoveryCode  # noqa: E402
from identity.factor_models import TotpFactor as TotpFactor  # noqa: E402
from identity.federation_models import FederatedIdentity as FederatedIdentity  # noqa: E402
from identity.federation_models import UpstreamProvider as UpstreamProvider  # noqa: E402
from identity.grant_models import AuthorizationCode as AuthorizationCode  # noqa: E402
from identity.grant_models import Consent as Consent  # noqa: E402
from identity.grant_models import DeviceAuthorization as DeviceAuthorization  # noqa: E402
from identity.grant_models import RefreshToken as RefreshToken  # noqa: E402
