"""The queries of browser sessions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from identity.models import BrowserSession

__all__ = [
    "add_browser_session",
    "delete_browser_session",
    "delete_user_sessions",
    "get_browser_session",
    "list_user_sessions",
    "prune_browser_sessions",
]


def get_browser_session(session: Session, session_id: str) -> BrowserSession | None:
    return session.get(BrowserSession, session_id)


def add_browser_session(session: Session, browser_session: BrowserSession) -> None:
    session.add(browser_session)
    session.flush()


def delete_browser_session(session: Session, session_id: str) -> None:
    session.execute(delete(BrowserSession).where(BrowserSession.id == session_id))


def delete_user_sessions(session: Session, user_id: uuid.UUID, *, keep: str | None = None) -> int:
    query = delete(BrowserSession).where(BrowserSession.user_id == user_id)
    if keep is not None:
        query = query.where(BrowserSession.id != keep)
    return int(session.execute(query).rowcount)  # type: ignore[attr-defined]


def list_user_sessions(
    session: Session, user_id: uuid.UUID, now: datetime
) -> Sequence[BrowserSession]:
    query = (
        select(BrowserSession)
        .where(BrowserSession.user_id == user_id, BrowserSession.expires_at > now)
        .order_by(BrowserSession.last_seen_at.desc())
    )
    return session.scalars(query).all()


def prune_browser_sessions(session: Session, now: datetime) -> int:
    result = session.execute(delete(BrowserSession).where(BrowserSession.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]
