"""Forgotten passwords: the reset request, the link check and the reset itself."""

from __future__ import annotations

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.credential_events import CredentialEvent
from identity.accounts.emailed_secrets import PASSWORD_RESET
from identity.accounts.errors import FieldErrors, InvalidLink
from identity.accounts.fields import normalise_email
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User


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
        # The same work as for an account (nothing kept, nothing sent) and an audit row as
        # well, so the time the answer takes does not tell whether the address has one.
        accounts.emailed_secrets.issue_decoy(session, email, PASSWORD_RESET)
        audit.record(
            session,
            "password.reset_requested",
            context=context,
            outcome="failure",
            subject=str(user.id) if user is not None else None,
            detail={"reason": "no_account" if user is None else "disabled"},
        )
        return
    accounts.emailed_secrets.issue(session, user, PASSWORD_RESET)  # newest wins
    audit.record(session, "password.reset_requested", context=context, subject=str(user.id))


def _live_token_user(accounts: Accounts, session: Session, token: str) -> User:
    row = accounts.emailed_secrets.peek(session, PASSWORD_RESET, token)
    if row is None:
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
    an earlier unverified registrant set up for it dies with the old password.
    A dead link is the refusal (InvalidLink), naming a refused password too."""
    try:
        user: User | None = _live_token_user(accounts, session, token)
    except InvalidLink:
        user = None
    errors = FieldErrors()
    with errors.check():
        normalised = accounts.check_password(
            password, user.email if user else "", user.name if user else None, "password"
        )
    if user is None:
        raise InvalidLink(errors.fields)
    errors.raise_any()
    if accounts.emailed_secrets.consume(session, PASSWORD_RESET, token) is None:
        raise InvalidLink()
    accounts.set_password(session, user, normalised)
    # The mailbox is proven: the address is verified, so its pending codes mean nothing now.
    user.email_verified = True
    accounts.emailed_secrets.discard_codes(session, user.id)
    accounts.credentials_changed(session, user, CredentialEvent.PASSWORD_RESET, context=context)
    audit.record(session, "password.reset", context=context, subject=str(user.id))
    return user
