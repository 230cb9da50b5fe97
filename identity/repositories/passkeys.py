"""The queries of passkeys (WebAuthn credentials)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from identity.models import Passkey

__all__ = [
    "add_passkey",
    "count_passkeys",
    "delete_passkey",
    "delete_passkeys",
    "get_passkey",
    "get_passkey_by_credential_id",
    "passkeys_of",
    "use_passkey",
]


def add_passkey(session: Session, passkey: Passkey) -> None:
    session.add(passkey)
    session.flush()


def passkeys_of(session: Session, user_id: uuid.UUID) -> Sequence[Passkey]:
    """The user's passkeys, oldest first."""
    query = select(Passkey).where(Passkey.user_id == user_id).order_by(Passkey.id)
    return session.scalars(query).all()


def count_passkeys(session: Session, user_id: uuid.UUID) -> int:
    query = select(func.count()).where(Passkey.user_id == user_id)
    return int(session.scalar(query) or 0)


def get_passkey(session: Session, user_id: uuid.UUID, passkey_id: int) -> Passkey | None:
    """The passkey ``passkey_id`` if it is the user's: another user's is None, like none."""
    query = select(Passkey).where(Passkey.id == passkey_id, Passkey.user_id == user_id)
    return session.scalars(query).first()


def get_passkey_by_credential_id(session: Session, credential_id: str) -> Passkey | None:
    return session.scalars(select(Passkey).where(Passkey.credential_id == credential_id)).first()


def use_passkey(
    session: Session,
    passkey_id: int,
    seen_count: int,
    new_count: int,
    backup_state: bool,
    now: datetime,
) -> bool:
    """Record a use that moved the counter from ``seen_count`` to ``new_count``. False when
    another use changed the counter since it was read: a conditional UPDATE, so of two
    racing uses of one assertion one wins."""
    result = session.execute(
        update(Passkey)
        .where(Passkey.id == passkey_id, Passkey.sign_count == seen_count)
        .values(sign_count=new_count, backup_state=backup_state, last_used_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_passkey(session: Session, user_id: uuid.UUID, passkey_id: int) -> bool:
    """Remove one of the user's passkeys; True when there was one."""
    result = session.execute(
        delete(Passkey).where(Passkey.id == passkey_id, Passkey.user_id == user_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_passkeys(session: Session, user_id: uuid.UUID) -> None:
    """Remove every passkey of the user (an operator's reset of the second factors)."""
    session.execute(delete(Passkey).where(Passkey.user_id == user_id))
