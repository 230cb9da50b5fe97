"""The queries of refresh tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from identity.models import Client, RefreshToken
from identity.repositories._base import is_postgresql

__all__ = [
    "add_refresh_token",
    "claim_refresh_rotation",
    "get_refresh_token",
    "live_refresh_families",
    "live_refresh_tokens_with_client_names",
    "lock_refresh_family",
    "refresh_family_access_tokens",
    "refresh_family_owner",
    "revoke_refresh_family",
    "set_refresh_access",
]


_REFRESH_FAMILY_LOCKS = 0x52465446  # the advisory-lock namespace of refresh families


def lock_refresh_family(session: Session, family_id: uuid.UUID) -> None:
    """Serialize writers of one family until the transaction ends. Racing refreshes and
    revocations would otherwise deadlock on PostgreSQL (rows and denylist inserts locked in
    different orders); SQLite already lets one writer at a time."""
    if is_postgresql(session):
        key = int.from_bytes(family_id.bytes[:4], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(_REFRESH_FAMILY_LOCKS, key)))


# A Core INSERT, not the unit of work: session.add and flush for this one row were a third
# of a refresh's CPU (py-spy, bench/README.md).
_INSERT_REFRESH_TOKEN = insert(RefreshToken.__table__)  # type: ignore[arg-type]


def add_refresh_token(session: Session, values: dict[str, Any]) -> None:
    """Store a refresh token from its column values (``RefreshTokens.issue``)."""
    session.execute(_INSERT_REFRESH_TOKEN, values)


def get_refresh_token(
    session: Session, digest: str, *, fresh: bool = False, for_update: bool = False
) -> RefreshToken | None:
    """``fresh`` re-reads a row this session already holds (another request may have changed
    it); ``for_update`` locks it on PostgreSQL until the transaction ends."""
    query = select(RefreshToken).where(RefreshToken.digest == digest)
    if fresh or for_update:
        query = query.execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def claim_refresh_rotation(
    session: Session, digest: str, now: datetime, successor_digest: str
) -> bool:
    """Mark a token rotated atomically: exactly one of any number of racing refreshes wins.
    The winner records its successor's digest in the same statement (a successor's value
    is derived from its parent's, so it is known before it is stored)."""
    result = session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.digest == digest,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(rotated_at=now, successor_digest=successor_digest)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def set_refresh_access(session: Session, digest: str, jti: str, expires_at: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.digest == digest)
        .values(access_jti=jti, access_expires_at=expires_at)
    )


def refresh_family_access_tokens(
    session: Session, family_id: uuid.UUID, now: datetime
) -> Sequence[tuple[str, datetime]]:
    """(jti, expiry) of the family's access tokens that have not expired yet."""
    rows = session.execute(
        select(RefreshToken.access_jti, RefreshToken.access_expires_at).where(
            RefreshToken.family_id == family_id,
            RefreshToken.access_jti.is_not(None),
            RefreshToken.access_expires_at > now,
        )
    )
    return [(jti, expires_at) for jti, expires_at in rows if jti and expires_at]


def revoke_refresh_family(session: Session, family_id: uuid.UUID, now: datetime) -> int:
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def refresh_family_owner(session: Session, family_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """(user_id, client_id) of a refresh-token family."""
    row = session.execute(
        select(RefreshToken.user_id, RefreshToken.client_id)
        .where(RefreshToken.family_id == family_id)
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def live_refresh_families(
    session: Session, user_id: uuid.UUID, client_id: str | None, now: datetime
) -> Sequence[uuid.UUID]:
    query = select(RefreshToken.family_id).where(
        RefreshToken.user_id == user_id,
        RefreshToken.revoked_at.is_(None),
        RefreshToken.family_expires_at > now,
    )
    if client_id is not None:
        query = query.where(RefreshToken.client_id == client_id)
    return list(session.scalars(query.distinct()))


def live_refresh_tokens_with_client_names(
    session: Session, user_id: uuid.UUID, now: datetime
) -> Sequence[tuple[RefreshToken, str]]:
    """Every token of the user's live families, oldest first, with its client's name."""
    query = (
        select(RefreshToken, Client.name)
        .join(Client, Client.client_id == RefreshToken.client_id)
        .where(
            RefreshToken.user_id == user_id,
            RefreshToken.revoked_at.is_(None),
            RefreshToken.family_expires_at > now,
        )
        .order_by(RefreshToken.created_at)
    )
    return [(row, name) for row, name in session.execute(query)]
