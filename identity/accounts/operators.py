"""Operator actions on user accounts (the `identity users` commands)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.credential_events import CredentialEvent
from identity.accounts.errors import InvalidInput
from identity.accounts.fields import clean_name, normalise_email
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User

_CLI = RequestContext.command_line()


def create_user(
    accounts: Accounts, session: Session, *, email: str, name: str, password: str, verified: bool
) -> User:
    """Create an account directly (no signup mail); refuses a taken address."""
    email, name = normalise_email(email), clean_name(name)
    normalised = accounts.check_password(password, email, name, "password")
    if repositories.get_user_by_email(session, email) is not None:
        raise InvalidInput({"email": f"{email} already has an account"})
    user = User(
        email=email,
        name=name,
        password_hash=accounts.hasher.hash(normalised),
        email_verified=verified,
    )
    repositories.add_user(session, user)
    audit.record(session, "user.created", context=_CLI, actor="admin", subject=str(user.id))
    return user


def find_user(session: Session, id_or_email: str) -> User:
    """A user by UUID or email; LookupError if there is none."""
    user = None
    if "@" in id_or_email:
        user = repositories.get_user_by_email(session, normalise_email(id_or_email))
    else:
        try:
            user = repositories.get_user(session, uuid.UUID(id_or_email))
        except ValueError:
            user = None
    if user is None:
        raise LookupError(f"no user {id_or_email!r}")
    return user


def set_active(accounts: Accounts, session: Session, user: User, active: bool) -> None:
    """Enable or disable; disabling ends every session and token of the account."""
    user.is_active = active
    if not active:
        accounts.credentials_changed(session, user, CredentialEvent.USER_DISABLED, context=_CLI)
    audit.record(
        session,
        "user.enabled" if active else "user.disabled",
        context=_CLI,
        actor="admin",
        subject=str(user.id),
    )


def delete_user(accounts: Accounts, session: Session, user: User) -> None:
    """Delete the account. Its live access tokens go on the denylist first; its sessions,
    codes and tokens then go with it (foreign-key cascade)."""
    audit.record(session, "user.deleted", context=_CLI, actor="admin", subject=str(user.id))
    accounts.credentials_changed(session, user, CredentialEvent.USER_DELETED, context=_CLI)
    repositories.delete_user(session, user)


def describe(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "email_verified": user.email_verified,
        "is_active": user.is_active,
        "created_at": user.created_at.isoformat(),
    }


def list_users(session: Session) -> Sequence[dict[str, Any]]:
    return [describe(u) for u in repositories.list_users(session)]
