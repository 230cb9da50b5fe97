"""The queries of second factors: authenticator apps and recovery codes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from identity.models import RecoveryCode, TotpFactor

__all__ = [
    "add_recovery_codes",
    "count_unused_recovery_codes",
    "delete_recovery_codes",
    "delete_totp_factor",
    "get_totp_factor",
    "put_totp_factor",
    "unused_recovery_codes",
    "use_recovery_code",
    "use_totp_step",
]


def get_totp_factor(session: Session, user_id: uuid.UUID) -> TotpFactor | None:
    return session.get(TotpFactor, user_id)


def put_totp_factor(session: Session, factor: TotpFactor) -> None:
    """Store ``factor``, replacing the user's unconfirmed one if there is one."""
    session.execute(delete(TotpFactor).where(TotpFactor.user_id == factor.user_id))
    session.add(factor)
    session.flush()


def delete_totp_factor(session: Session, user_id: uuid.UUID) -> bool:
    """Remove the user's authenticator app; True when there was one."""
    result = session.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def use_totp_step(session: Session, user_id: uuid.UUID, step: int, now: datetime) -> bool:
    """Record that the code of time step ``step`` was used. False when that step, or a
    later one, was already used: a conditional UPDATE, so of two racing uses one wins."""
    result = session.execute(
        update(TotpFactor)
        .where(
            TotpFactor.user_id == user_id,
            or_(TotpFactor.last_step.is_(None), TotpFactor.last_step < step),
        )
        .values(last_step=step, last_used_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_recovery_codes(
    session: Session, user_id: uuid.UUID, code_hashes: Sequence[str], now: datetime
) -> None:
    session.add_all(
        RecoveryCode(user_id=user_id, code_hash=code_hash, created_at=now)
        for code_hash in code_hashes
    )
    session.flush()


def delete_recovery_codes(session: Session, user_id: uuid.UUID) -> None:
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


def unused_recovery_codes(session: Session, user_id: uuid.UUID) -> Sequence[RecoveryCode]:
    query = select(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
    )
    return session.scalars(query.order_by(RecoveryCode.id)).all()


def count_unused_recovery_codes(session: Session, user_id: uuid.UUID) -> int:
    query = select(func.count()).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
    )
    return int(session.scalar(query) or 0)


def use_recovery_code(session: Session, code_id: int, now: datetime) -> bool:
    """Mark a code used; False when it already was (of two racing uses, one wins)."""
    result = session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.id == code_id, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
