"""Forgotten passwords: the reset request, the link check and the reset itself."""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.errors import InvalidLink
from identity.accounts.fields import normalise_email
from identity.accounts.service import RESET_LIFETIME, Accounts
from identity.audit import RequestContext
from identity.models import OneTimeToken, User, secret_digest

PURPOSE = "password_reset"


def request_reset(
    accounts: Accounts, session: Session, email: str, context: RequestContext
) -> None:
    """Mail a reset link if the account exists; the answer is the same either way."""
    accounts.limit("reset.ip", context.ip or "unknown")
    try:
        email = normalise_email(email)
    except Exception:  # an invalid address gets the same answer as an unknown one
        return
    accounts.limit("reset.account", email)
    user = repositories.get_user_by_email(session, email)
    if user is None or not user.is_active:
        return
    repositories.delete_one_time_tokens(session, user.id, PURPOSE)  # newest wins
    token = secrets.token_urlsafe(32)
    repositories.add_one_time_token(
        session,
        OneTimeToken(
            digest=secret_digest(token),
            user_id=user.id,
            purpose=PURPOSE,
            expires_at=accounts.now() + RESET_LIFETIME,
        ),
    )
    accounts.mailer.enqueue(
        session,
        user.email,
        "password_reset",
        name=user.name,
        link=accounts.link("/reset-password", token),
        minutes=int(RESET_LIFETIME.total_seconds() // 60),
    )
    audit.record(session, "password.reset_requested", context=context, subject=str(user.id))


def _live_token_user(accounts: Accounts, session: Session, token: str) -> User:
    row = repositories.get_one_time_token(session, secret_digest(token), PURPOSE) if token else None
    if row is None or row.used_at is not None or row.expires_at <= accounts.now():
        raise InvalidLink()
    user = repositories.get_user(session, row.user_id)
    if user is None or not user.is_active:
        raise InvalidLink()
    return user


def check_reset_token(accounts: Accounts, session: Session, token: str) -> None:
    """Raise InvalidLink unless the token could be used. Spends nothing (a GET on the link)."""
    _live_token_user(accounts, session, token)


def reset_password(
    accounts: Accounts, session: Session, token: str, password: str, context: RequestContext
) -> User:
    """Set a new password with a reset token; every session of the account ends.

    Completing a reset proves the mailbox, so the address counts as verified, and anything
    an earlier unverified registrant set up for it dies with the old password."""
    user = _live_token_user(accounts, session, token)
    normalised = accounts.check_password(password, user.email, user.name, "password")
    if not repositories.use_one_time_token(session, secret_digest(token), accounts.now()):
        raise InvalidLink()
    accounts.set_password(session, user, normalised)
    user.email_verified = True
    repositories.delete_one_time_tokens(session, user.id, PURPOSE)
    repositories.delete_challenges(session, user.id)
    accounts.end_everything(session, user)
    audit.record(session, "password.reset", context=context, subject=str(user.id))
    return user
