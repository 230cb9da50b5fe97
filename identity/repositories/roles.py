"""The queries of users' roles."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from identity.admin_models import UserRole

__all__ = ["add_user_role", "remove_user_role", "user_roles", "users_with_role"]


def user_roles(session: Session, user_id: uuid.UUID) -> list[str]:
    """The user's roles, sorted."""
    query = select(UserRole.role).where(UserRole.user_id == user_id).order_by(UserRole.role)
    return list(session.scalars(query))


def add_user_role(session: Session, user_id: uuid.UUID, role: str) -> bool:
    """Give the role; False if the user had it already."""
    if session.get(UserRole, (user_id, role)) is not None:
        return False
    session.add(UserRole(user_id=user_id, role=role))
    session.flush()
    return True


def remove_user_role(session: Session, user_id: uuid.UUID, role: str) -> bool:
    """Take the role away; False if the user did not have it."""
    result = session.execute(
        delete(UserRole).where(UserRole.user_id == user_id, UserRole.role == role)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def users_with_role(session: Session, role: str) -> Sequence[uuid.UUID]:
    return list(session.scalars(select(UserRole.user_id).where(UserRole.role == role)))
