"""The queries of users."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, event, inspect, or_, select
from sqlalchemy.orm import Session

from identity.models import User
from identity.repositories.cache_generations import bump_cache_generation

__all__ = [
    "add_user",
    "delete_user",
    "get_user",
    "get_user_by_email",
    "list_users",
    "search_users",
]


def get_user(session: Session, user_id: uuid.UUID, *, for_update: bool = False) -> User | None:
    return session.get(User, user_id, with_for_update=for_update or None)


def get_user_by_email(session: Session, email: str, *, for_update: bool = False) -> User | None:
    query = select(User).where(User.email == email)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def add_user(session: Session, user: User) -> None:
    session.add(user)
    session.flush()


def list_users(session: Session, limit: int = 1000) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.created_at, User.id).limit(limit)).all()


def search_users(
    session: Session,
    *,
    email_prefix: str | None,
    active: bool | None,
    verified: bool | None,
    after: tuple[str, uuid.UUID] | None,
    limit: int,
) -> Sequence[User]:
    """Up to ``limit`` users ordered by (email, id), past the key ``after`` (keyset pages:
    each page costs the same however deep), matching every filter given. The prefix is
    matched literally: its ``%``, ``_`` and escape characters are escaped."""
    query = select(User)
    if email_prefix:
        query = query.where(User.email.startswith(email_prefix, autoescape=True))
    if active is not None:
        query = query.where(User.is_active == active)
    if verified is not None:
        query = query.where(User.email_verified == verified)
    if after is not None:
        email, user_id = after
        query = query.where(or_(User.email > email, and_(User.email == email, User.id > user_id)))
    return session.scalars(query.order_by(User.email, User.id).limit(limit)).all()


def delete_user(session: Session, user: User) -> None:
    session.delete(user)
    session.flush()


# What the cached users (userinfo, identity.row_cache) show or depend on.
_CACHED_ATTRIBUTES = ("email", "name", "email_verified", "is_active")


@event.listens_for(Session, "before_flush")
def _bump_users_generation(session: Session, _context: Any, _instances: Any) -> None:
    """Every change of a cached attribute, and every deletion, moves the users' generation
    in the same transaction, whichever code path made it."""
    changed = any(isinstance(row, User) for row in session.deleted) or any(
        isinstance(row, User)
        and any(inspect(row).attrs[name].history.has_changes() for name in _CACHED_ATTRIBUTES)
        for row in session.dirty
    )
    if changed:
        bump_cache_generation(session, "users")
