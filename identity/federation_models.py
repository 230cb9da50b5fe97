"""Rows of federation: the upstream identity providers people may sign in with, and the links
from their accounts to local users. Kept apart from ``models`` by noun, on the same ``Base``;
``models`` re-exports them, so importing it registers these tables too."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from identity.model_base import Base, BigId, utcnow

_USER_FK = "users.id"


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
