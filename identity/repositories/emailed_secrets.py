"""The queries of verification challenges and one-time tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from identity.models import OneTimeToken, User, VerificationChallenge

__all__ = [
    "add_challenge",
    "add_one_time_token",
    "challenge_by_link",
    "delete_challenges",
    "delete_one_time_tokens",
    "get_one_time_token",
    "keep_newest_challenges",
    "live_challenges",
    "live_one_time_tokens",
    "lock_challenge_owner",
    "prune_one_time_secrets",
    "use_challenge",
    "use_one_time_token",
]


def add_challenge(session: Session, challenge: VerificationChallenge) -> None:
    session.add(challenge)
    session.flush()


def delete_challenges(session: Session, user_id: uuid.UUID) -> None:
    session.execute(delete(VerificationChallenge).where(VerificationChallenge.user_id == user_id))


def live_challenges(
    session: Session, user_id: uuid.UUID, now: datetime
) -> Sequence[VerificationChallenge]:
    """The user's unused, unexpired challenges, newest first."""
    query = (
        select(VerificationChallenge)
        .where(
            VerificationChallenge.user_id == user_id,
            VerificationChallenge.used_at.is_(None),
            VerificationChallenge.expires_at > now,
        )
        .order_by(VerificationChallenge.id.desc())
    )
    return session.scalars(query).all()


def keep_newest_challenges(session: Session, user_id: uuid.UUID, now: datetime, keep: int) -> None:
    """Delete the user's spent and expired challenges, and the live ones past the newest
    ``keep``."""
    mine = VerificationChallenge.user_id == user_id
    session.execute(
        delete(VerificationChallenge).where(
            mine,
            or_(
                VerificationChallenge.used_at.is_not(None), VerificationChallenge.expires_at <= now
            ),
        )
    )
    newest = (
        select(VerificationChallenge.id)
        .where(mine)
        .order_by(VerificationChallenge.id.desc())
        .limit(keep)
    )
    session.execute(
        delete(VerificationChallenge)
        .where(mine, VerificationChallenge.id.not_in(newest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def lock_challenge_owner(session: Session, challenge: VerificationChallenge) -> User | None:
    """The challenge's user, its row locked to the end of the transaction (PostgreSQL), so
    that two verifications of one account run one after the other."""
    return session.get(User, challenge.user_id, with_for_update=True, populate_existing=True)


def challenge_by_link(session: Session, link_digest: str) -> VerificationChallenge | None:
    query = select(VerificationChallenge).where(VerificationChallenge.link_digest == link_digest)
    return session.scalars(query).one_or_none()


def use_challenge(session: Session, challenge_id: int, now: datetime) -> bool:
    """Mark used; False when another request used it first."""
    result = session.execute(
        update(VerificationChallenge)
        .where(VerificationChallenge.id == challenge_id, VerificationChallenge.used_at.is_(None))
        .values(used_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def add_one_time_token(session: Session, token: OneTimeToken) -> None:
    session.add(token)
    session.flush()


def get_one_time_token(session: Session, digest: str, purpose: str) -> OneTimeToken | None:
    token = session.get(OneTimeToken, digest)
    return token if token is not None and token.purpose == purpose else None


def live_one_time_tokens(
    session: Session, user_id: uuid.UUID, purpose: str, now: datetime
) -> Sequence[OneTimeToken]:
    """The user's unused, unexpired tokens of ``purpose``, newest first."""
    query = select(OneTimeToken).where(
        OneTimeToken.user_id == user_id,
        OneTimeToken.purpose == purpose,
        OneTimeToken.used_at.is_(None),
        OneTimeToken.expires_at > now,
    )
    return session.scalars(query.order_by(OneTimeToken.created_at.desc())).all()


def use_one_time_token(session: Session, digest: str, now: datetime) -> bool:
    """Spend a token atomically; False when it was spent, expired or replaced."""
    result = session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.digest == digest,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .values(used_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def delete_one_time_tokens(session: Session, user_id: uuid.UUID, purpose: str) -> None:
    session.execute(
        delete(OneTimeToken).where(OneTimeToken.user_id == user_id, OneTimeToken.purpose == purpose)
    )


def prune_one_time_secrets(session: Session, now: datetime) -> None:
    session.execute(delete(OneTimeToken).where(OneTimeToken.expires_at <= now))
    session.execute(delete(VerificationChallenge).where(VerificationChallenge.expires_at <= now))
