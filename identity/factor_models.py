"""Rows of a user's sign-in factors beyond the password: the authenticator app (TOTP), its
recovery codes, and passkeys (WebAuthn). Kept apart from ``models`` by noun, on the same
``Base``; ``models`` re-exports them, so importing it registers these tables too."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from identity.model_base import Base, BigId, utcnow

_USER_FK = "users.id"


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
