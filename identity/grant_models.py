"""Rows of the OAuth grants a user gives: authorization codes, refresh-token families,
consents and device authorizations. Kept apart from ``models`` by noun, on the same ``Base``
(``model_base``); ``models`` re-exports them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from identity.model_base import Base, utcnow

_USER_FK = "users.id"
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
