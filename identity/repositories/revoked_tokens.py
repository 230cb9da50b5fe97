"""The queries of the denylist."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from identity.models import RevokedToken
from identity.repositories._base import insert_ignoring_duplicates

__all__ = ["add_revoked_token", "is_token_revoked", "live_revoked_tokens", "prune_revoked_tokens"]


def add_revoked_token(session: Session, jti: str, expires_at: datetime) -> None:
    insert_ignoring_duplicates(session, RevokedToken, {"jti": jti, "expires_at": expires_at})


def is_token_revoked(session: Session, jti: str) -> bool:
    return bool(session.scalar(select(exists().where(RevokedToken.jti == jti))))


def live_revoked_tokens(session: Session, now: datetime) -> Sequence[tuple[str, datetime]]:
    rows = session.execute(
        select(RevokedToken.jti, RevokedToken.expires_at).where(RevokedToken.expires_at > now)
    )
    return [(jti, expires_at) for jti, expires_at in rows]


def prune_revoked_tokens(session: Session, now: datetime) -> int:
    result = session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]
