"""The queries of verification challenges and one-time tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from identity.models import OneTimeToken, VerificationChallenge

__all__ = [
    "add_challenge",
    "add_one_time_token",
    "challenge_by_link",
    "delete_challenges",
    "delete_one_time_tokens",
    "get_one_time_token",
    "live_challenge",
    "prune_one_time_secrets",
    "take_challenge_attempt",
    "use_challenge",
    "use_one_time_token",
]


def add_challenge(session: Session, challenge: VerificationChallenge) -> None:
    session.add(challenge)
    session.flush()


def delete_challenges(session: Session, user_id: uuid.UUID) -> None:
    session.execute(delete(VerificationChallenge).where(VerificationChallenge.user_id == user_id))


def live_challenge(
    session: Session, user_id: uuid.UUID, now: datetime
) -> VerificationChallenge | None:
    query = (
        select(VerificationChallenge)
        .where(
            VerificationChallenge.user_id == user_id,
            VerificationChallenge.used_at.is_(None),
            VerificationChallenge.expires_at > now,
        )
        .order_by(VerificationChallenge.id.desc())
        .limit(1)
    )
    return session.scalars(query).one_or_none()


def challenge_by_link(session: Session, link_digest: str) -> VerificationChallenge | None:
    query = select(VerificationChallenge).where(VerificationChallenge.link_digest == link_digest)
    return session.scalars(query).one_or_none()


def take_challenge_attempt(session: Session, challenge_id: int, max_attempts: int) -> bool:
    """Count one try, atomically; False when the challenge has no tries left (or is used)."""
    result = session.execute(
        update(VerificationChallenge)
        .where(
            VerificationChallenge.id == challenge_id,
            VerificationChallenge.attempts < max_attempts,
            VerificationChallenge.used_at.is_(None),
        )
        .values(attempts=VerificationChallenge.attempts + 1)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


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
