"""SQLAlchemy rows. Rows implement Authlib's model mixins directly."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints keep migrations identical on SQLite (batch mode needs names) and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def secret_digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret: the right hash for random values (not passwords)."""
    return hashlib.sha256(secret.encode()).hexdigest()


_LOOPBACK_IPS = {"127.0.0.1", "::1"}
# Scopes every client with a user grant may ask for, on top of its registered ones.
OIDC_SCOPES = ("openid", "profile", "email", "offline_access", "roles")

# SQLite only auto-increments an INTEGER PRIMARY KEY, so the 64-bit id narrows there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


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
        Both digests are always compared, so the timing tells nothing about which matched."""
        if self.secret_digest is None:
            return False
        given = secret_digest(client_secret)
        current = hmac.compare_digest(given, self.secret_digest)
        previous = hmac.compare_digest(given, self.previous_secret_digest or "")
        within_grace = (
            self.previous_secret_expires_at is not None
            and utcnow() < self.previous_secret_expires_at
        )
        return current or (previous and within_grace)

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


_CLIENT_FK = "clients.client_id"


class AuthorizationCode(Base):
    """An authorization code, kept as its SHA-256; single use, a minute at most."""

    __tablename__ = "authorization_codes"
    __table_args__ = (Index(None, "expires_at"),)

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey(_CLIENT_FK, ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[list[str]] = mapped_column(default=list)
    nonce: Mapped[str | None] = mapped_column(String(512))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10))
    auth_time: Mapped[datetime]
    amr: Mapped[list[str]] = mapped_column(default=list)
    # The upstream provider of a federated sign-in (the ``idp`` claim), else None.
    idp: Mapped[str | None] = mapped_column(String(40))
    session_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # Access-token jti values issued from this code, so a replay can revoke them.
    issued_jtis: Mapped[list[str]] = mapped_column(default=list)
    refresh_family_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # Authlib's AuthorizationCodeMixin
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_amr(self) -> list[str]:
        return list(self.amr)

    def get_acr(self) -> str | None:
        return None


class RefreshToken(Base):
    """One refresh token of a family (a chain of rotations), kept as its SHA-256.

    Reuse of a rotated token revokes the whole family."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index(None, "family_id"),
        Index(None, "user_id", "client_id"),
        Index(None, "expires_at"),
    )

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    parent_digest: Mapped[str | None] = mapped_column(String(64))
    successor_digest: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(ForeignKey(_CLIENT_FK, ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[list[str]] = mapped_column(default=list)
    auth_time: Mapped[datetime]
    amr: Mapped[list[str]] = mapped_column(default=list)
    # The upstream provider of a federated sign-in (the ``idp`` claim), else None.
    idp: Mapped[str | None] = mapped_column(String(40))
    session_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]  # idle expiry, never past family_expires_at
    family_expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # The access token issued with this refresh token: denied when the family is revoked.
    access_jti: Mapped[str | None] = mapped_column(String(64))
    access_expires_at: Mapped[datetime | None]


class Consent(Base):
    """What a user allowed a client: remembered per user and client, widened as asked."""

    __tablename__ = "consents"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(_USER_FK, ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey(_CLIENT_FK, ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(Text, default="")
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DeviceAuthorization(Base):
    """An RFC 8628 device authorization: the device polls with its code, a person approves
    by typing the user code on the /device page."""

    __tablename__ = "device_authorizations"

    device_code_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey(_CLIENT_FK, ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    # How and where the approving person signed in (browser session): the device's tokens
    # carry it, as a code's do.
    auth_time: Mapped[datetime | None]
    amr: Mapped[list[str]] = mapped_column(default=list)
    # The upstream provider of a federated sign-in (the ``idp`` claim), else None.
    idp: Mapped[str | None] = mapped_column(String(40))
    session_id: Mapped[str | None] = mapped_column(String(64))
    interval: Mapped[int] = mapped_column(default=5)
    last_polled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class TotpFactor(Base):
    """An authenticator app (RFC 6238) of one user. Unconfirmed until its first code is
    typed back; ``last_step`` is the newest time step accepted, so no code works twice."""

    __tablename__ = "totp_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(_USER_FK, ondelete="CASCADE"), primary_key=True
    )
    # The base32 seed, encrypted (identity.secret_box): it must be read back, so no hash.
    secret_sealed: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at: Mapped[datetime | None]


class RecoveryCode(Base):
    """One single-use recovery code, as an argon2id hash: the codes hold about 50 bits, too
    few for the fast hash that suits the 256-bit secrets."""

    __tablename__ = "recovery_codes"
    __table_args__ = (Index(None, "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class Passkey(Base):
    """A passkey (WebAuthn credential) of one user: the public key its authenticator made,
    found by the credential id an assertion names. ``sign_count`` is the authenticator's
    counter: one that stops rising while either side is above zero betrays a copy."""

    __tablename__ = "passkeys"
    __table_args__ = (Index(None, "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    # base64url without padding, as browsers send it; WebAuthn caps the raw id at 1023 bytes.
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key, as registered
    sign_count: Mapped[int] = mapped_column(BigInteger)  # an unsigned 32-bit counter
    transports: Mapped[list[str]] = mapped_column(default=list)
    aaguid: Mapped[str] = mapped_column(String(36))
    backup_eligible: Mapped[bool] = mapped_column(default=False)
    backup_state: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class UpstreamProvider(Base):
    """Another identity provider people may sign in with ("Continue with ..."), configured by
    an operator: an OpenID Connect issuer, or GitHub (OAuth 2.0 and its user API)."""

    __tablename__ = "upstream_providers"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "oidc" or "github"
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    # Encrypted (identity.secret_box): it is sent to the upstream, so it must be read back.
    client_secret_sealed: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(500))
    label: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(default=True)
    # The upstream's own second factor (its amr) counts as ours for clients that require one.
    trust_mfa: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FederatedIdentity(Base):
    """A link from an upstream account (provider, its ``sub``) to a local user. Keyed by the
    upstream subject, never by email: an address can change hands upstream."""

    __tablename__ = "federated_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"), Index(None, "user_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(ForeignKey("upstream_providers.name", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_USER_FK, ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
