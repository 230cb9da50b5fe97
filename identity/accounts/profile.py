"""Self-service changes of a signed-in user: name, password, email, sessions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.credential_events import CredentialEvent, Current
from identity.accounts.emailed_secrets import EMAIL_CHANGE
from identity.accounts.errors import FieldErrors, InvalidInput, InvalidLink, Throttled
from identity.accounts.fields import clean_name, normalise_email
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import BrowserSession, User


@dataclass(frozen=True)
class SessionView:
    """A browser session as its owner sees it."""

    public_id: str
    created_at: datetime
    last_seen_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool

    @property
    def device(self) -> str:
        """ "Firefox on Linux" rather than a raw user-agent string."""
        return describe_user_agent(self.user_agent)


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_user_agent(user_agent: str | None) -> str:
    """A short human label for a user agent; the raw string is kept for the audit log."""
    if not user_agent:
        return "Unknown browser"
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or user_agent[:40]


def change_name(session: Session, user: User, name: str, context: RequestContext) -> None:
    user.name = clean_name(name)
    audit.record(session, "profile.updated", context=context, subject=str(user.id))


def _require_password(accounts: Accounts, user: User, password: str, field: str) -> None:
    """Only wrong guesses count against the account's login limit."""
    blocked = accounts.limiter.peek("login.account", user.email)
    if not blocked.allowed:
        raise Throttled(blocked.retry_after)
    if user.password_hash is None or not accounts.hasher.verify(user.password_hash, password):
        accounts.limiter.hit("login.account", user.email)
        raise InvalidInput({field: "That isn't your current password."})


def change_password(
    accounts: Accounts,
    session: Session,
    user: User,
    current: str,
    new: str,
    context: RequestContext,
    keep: Current | None = None,
) -> None:
    """Needs the current password; then every session and app of the account but ``keep``
    (the browser session or the app that asked) is signed out."""
    errors = FieldErrors()
    with errors.check():
        normalised = accounts.check_password(new, user.email, user.name, "new_password")
    with errors.check():
        _require_password(accounts, user, current, "current_password")
    errors.raise_any()
    accounts.set_password(session, user, normalised)
    accounts.credentials_changed(
        session, user, CredentialEvent.PASSWORD_CHANGED, current=keep, context=context
    )
    audit.record(session, "password.changed", context=context, subject=str(user.id))


def new_address(user: User, new_email: str) -> str:
    """The normalised address ``user`` asks to move to; InvalidInput on ``new_email``."""
    try:
        email = normalise_email(new_email)
    except InvalidInput:
        raise InvalidInput({"new_email": "Enter a valid email address."}) from None
    if email == user.email:
        raise InvalidInput({"new_email": "That is already your email address."})
    return email


def request_email_change(
    accounts: Accounts,
    session: Session,
    user: User,
    new_email: str,
    password: str,
    context: RequestContext,
) -> str:
    """Mail a confirmation link to the new address and a notice to the old one.

    A taken address gets no mail but the same answer, so this reveals no accounts."""
    errors = FieldErrors()
    with errors.check():
        email = new_address(user, new_email)
    with errors.check():
        _require_password(accounts, user, password, "email_password")
    errors.raise_any()
    # Either way this request replaces any pending change (newest wins); a taken address
    # just gets no link.
    if repositories.get_user_by_email(session, email) is None:
        accounts.emailed_secrets.issue(
            session, user, EMAIL_CHANGE, to=email, data={"email": email}, new_email=email
        )
    else:
        accounts.emailed_secrets.discard(session, user.id, EMAIL_CHANGE)
    accounts.mailer.enqueue(
        session, user.email, "email_change_notice", name=user.name, new_email=email
    )
    audit.record(session, "email.change_requested", context=context, subject=str(user.id))
    return email


def confirm_email_change(
    accounts: Accounts,
    session: Session,
    token: str,
    context: RequestContext,
    keep: Current | None = None,
) -> User:
    """Switch to the confirmed address; every other session and every app signed in under
    the old address ends (``keep``: the confirming browser's own session)."""
    row = accounts.emailed_secrets.consume(session, EMAIL_CHANGE, token)
    if row is None:
        raise InvalidLink()
    user = repositories.get_user(session, row.user_id)
    new_email = str(row.data.get("email", ""))
    if user is None or not new_email or repositories.get_user_by_email(session, new_email):
        raise InvalidLink()
    old_email, user.email, user.email_verified = user.email, new_email, True
    accounts.credentials_changed(
        session, user, CredentialEvent.EMAIL_CHANGED, current=keep, context=context
    )
    audit.record(
        session,
        "email.changed",
        context=context,
        subject=str(user.id),
        detail={"from_domain": old_email.rsplit("@", 1)[-1]},
    )
    return user


def cancel_email_change(
    accounts: Accounts, session: Session, user: User, context: RequestContext
) -> bool:
    """Withdraw the pending email change, if there is one (its link stops working)."""
    if pending_email(accounts, session, user) is None:
        return False
    accounts.emailed_secrets.discard(session, user.id, EMAIL_CHANGE)
    audit.record(session, "email.change_cancelled", context=context, subject=str(user.id))
    return True


def pending_email(accounts: Accounts, session: Session, user: User) -> str | None:
    """The address waiting for confirmation, if any."""
    row = accounts.emailed_secrets.pending(session, user.id, EMAIL_CHANGE)
    return None if row is None else str(row.data.get("email"))


def list_sessions(
    accounts: Accounts, session: Session, user: User, current: BrowserSession | None
) -> Sequence[SessionView]:
    rows = repositories.list_user_sessions(session, user.id, accounts.now())
    return [
        SessionView(
            public_id=row.public_id,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            ip=row.ip,
            user_agent=row.user_agent,
            current=current is not None and row.id == current.id,
        )
        for row in rows
    ]


def revoke_session(session: Session, user: User, public_id: str, context: RequestContext) -> None:
    """End one of the user's own sessions; LookupError for anyone else's."""
    row = repositories.get_user_session_by_public_id(session, user.id, public_id)
    if row is None:
        raise LookupError("no such session")
    repositories.delete_browser_session(session, row.id)
    audit.record(session, "session.revoked", context=context, subject=str(user.id))


def revoke_everything(
    accounts: Accounts, session: Session, user: User, context: RequestContext
) -> None:
    """Sign out everywhere: every session and every token of the account."""
    accounts.credentials_changed(
        session, user, CredentialEvent.SIGNED_OUT_EVERYWHERE, context=context
    )
    audit.record(session, "session.revoked_all", context=context, subject=str(user.id))


@dataclass(frozen=True)
class ConsentView:
    """An app the user allowed, as the account page lists it."""

    client_id: str
    client_name: str
    scope: str
    granted_at: datetime


def list_consents(session: Session, user: User) -> Sequence[ConsentView]:
    return [
        ConsentView(client.client_id, client.name, consent.scope, consent.granted_at)
        for consent, client in repositories.list_consents(session, user.id)
    ]


def revoke_consent(
    accounts: Accounts, session: Session, user: User, client_id: str, context: RequestContext
) -> None:
    """Take an app's access away: its consent and every refresh token it holds for the user.
    LookupError when there is no such consent."""
    if not repositories.delete_consent(session, user.id, client_id):
        raise LookupError("no such consent")
    accounts.end_client_tokens(session, user, client_id)
    audit.record(
        session, "consent.revoked", context=context, subject=str(user.id), client_id=client_id
    )
