"""The queries of the mail outbox."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from identity.models import BrowserSession, OneTimeToken, OutboxMessage
from identity.repositories._base import is_postgresql

__all__ = [
    "add_outbox_message",
    "claim_due_messages",
    "get_user_session_by_public_id",
    "latest_outbox_message",
    "live_one_time_token",
    "mark_message_failed",
    "mark_message_sent",
    "outbox_backlog",
]


def add_outbox_message(session: Session, message: OutboxMessage) -> None:
    session.add(message)
    session.flush()


def claim_due_messages(
    session: Session, now: datetime, *, limit: int, claim_for: timedelta
) -> Sequence[OutboxMessage]:
    """Claim up to ``limit`` due messages for ``claim_for``, in one UPDATE ... RETURNING, so
    two senders can never claim the same message. On PostgreSQL the candidate rows are
    locked with SKIP LOCKED, so concurrent senders take different ones instead of waiting;
    the claim (``claimed_until``) also lets a crashed sender's messages go out later."""
    due = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
            (OutboxMessage.claimed_until.is_(None)) | (OutboxMessage.claimed_until < now),
        )
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    if is_postgresql(session):
        due = due.with_for_update(skip_locked=True)
    claim = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + claim_for)
        .returning(OutboxMessage)
        .execution_options(synchronize_session=False)
    )
    return sorted(session.scalars(claim).all(), key=lambda message: message.id)


def mark_message_sent(session: Session, message_id: int, now: datetime) -> None:
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(sent_at=now, claimed_until=None, text_body="", html_body="", last_error=None)
    )


def mark_message_failed(
    session: Session, message_id: int, error: str, next_attempt_at: datetime
) -> None:
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(
            attempts=OutboxMessage.attempts + 1,
            last_error=error[:500],
            next_attempt_at=next_attempt_at,
            claimed_until=None,
        )
    )


def latest_outbox_message(session: Session, to_address: str) -> OutboxMessage | None:
    """The newest mail to ``to_address`` (compared without case), sent or not."""
    query = (
        select(OutboxMessage)
        .where(func.lower(OutboxMessage.to_address) == to_address.strip().lower())
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    )
    return session.scalars(query).one_or_none()


def outbox_backlog(session: Session) -> int:
    query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    return int(session.scalar(query) or 0)


def get_user_session_by_public_id(
    session: Session, user_id: uuid.UUID, public_id: str
) -> BrowserSession | None:
    query = select(BrowserSession).where(
        BrowserSession.user_id == user_id, BrowserSession.public_id == public_id
    )
    return session.scalars(query).one_or_none()


def live_one_time_token(
    session: Session, user_id: uuid.UUID, purpose: str, now: datetime
) -> OneTimeToken | None:
    query = (
        select(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .order_by(OneTimeToken.created_at.desc())
        .limit(1)
    )
    return session.scalars(query).one_or_none()
