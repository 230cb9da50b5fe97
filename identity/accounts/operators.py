"""Operator actions on user accounts: the ``identity users`` commands, the admin API and the
admin console all call these, so each action is checked, applied and audited one way.

Every acting function takes the ``actor`` (``"admin"`` on the command line, the admin
client's id or the admin user's id elsewhere) and the request's ``context``; the audit row
it writes names the actor and, as its subject, the account. The rules themselves stay where
they live: what a disable or "sign out everywhere" ends is the credential-event table
(``Accounts.credentials_changed``), a reset mail is ``recovery.request_reset``, names are
``fields.clean_name``.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts import factors, federation, recovery, roles
from identity.accounts.credential_events import CredentialEvent
from identity.accounts.emailed_secrets import PASSWORD_RESET
from identity.accounts.errors import AccountError, FieldErrors, InvalidInput
from identity.accounts.fields import clean_name, normalise_email
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import BrowserSession, RefreshToken, User, utcnow

_CLI = RequestContext.command_line()
# The role that opens the admin console, and the admin API to a browser session.
ADMIN_ROLE = "admin"
# An invitation is a password-reset link (the same row purpose, so the reset page takes it)
# that lives longer: an operator sent it, and the invitee may read their mail days later.
# Using it sets the password and verifies the address (``recovery.reset_password``).
INVITATION = replace(PASSWORD_RESET, lifetime=timedelta(hours=72), template="invitation")
Status = Literal["active", "disabled", "unverified"]
_CURSOR = "Give the next_cursor of the previous page, as it was."
_TAKEN = "This address already has an account."


class AccountDisabled(AccountError):
    """The action needs an enabled account (a reset mail to a disabled one is never sent)."""

    code = "account_disabled"

    def __init__(self) -> None:
        super().__init__("The account is disabled: enable it first.")


# -- creating and finding ----------------------------------------------------------------------


def create_user(
    accounts: Accounts,
    session: Session,
    *,
    email: str,
    name: str,
    password: str | None = None,
    verified: bool = True,
    invite: bool = False,
    actor: str = "admin",
    context: RequestContext = _CLI,
) -> User:
    """Create an account directly (no signup mail); refuses a taken address.

    With a password the account is ready (``verified`` says whether its address counts as
    proven). With ``invite`` it has no password and is unverified: the invitation mail's
    link (``INVITATION``) opens the reset page, where the invitee chooses a password, which
    proves the mailbox and so verifies the address."""
    errors = FieldErrors()
    with errors.check():
        email = normalise_email(email)
    with errors.check():
        name = clean_name(name)
    if invite and password is not None:
        errors.add("password", "An invited user chooses their own password: leave it out.")
    elif not invite and password is None:
        errors.add("password", "Give a password, or invite the user to choose one.")
    normalised = None
    if password is not None and "password" not in errors.fields:
        with errors.check():
            normalised = accounts.check_password(password, email, name, "password")
    if "email" not in errors.fields and repositories.get_user_by_email(session, email):
        errors.add("email", _TAKEN)
    errors.raise_any()
    user = User(
        email=email,
        name=name,
        password_hash=None if normalised is None else accounts.hasher.hash(normalised),
        email_verified=verified and not invite,
    )
    try:
        with session.begin_nested():  # a racing request may take the address first
            repositories.add_user(session, user)
    except IntegrityError:
        raise InvalidInput({"email": _TAKEN}) from None
    audit.record(
        session,
        "user.created",
        context=context,
        actor=actor,
        subject=str(user.id),
        detail={"invited": invite},
    )
    if invite:
        reset_link = f"{accounts.settings.issuer}/forgot-password"
        accounts.emailed_secrets.issue(session, user, INVITATION, reset_link=reset_link)
    return user


def find_user(session: Session, id_or_email: str) -> User:
    """A user by UUID or email; LookupError if there is none."""
    user = None
    if "@" in id_or_email:
        try:
            user = repositories.get_user_by_email(session, normalise_email(id_or_email))
        except InvalidInput:
            user = None
    else:
        try:
            user = repositories.get_user(session, uuid.UUID(id_or_email))
        except ValueError:
            user = None
    if user is None:
        raise LookupError(f"no user {id_or_email!r}")
    return user


# -- acting on an account ----------------------------------------------------------------------


def set_active(
    accounts: Accounts,
    session: Session,
    user: User,
    active: bool,
    *,
    actor: str = "admin",
    context: RequestContext = _CLI,
) -> None:
    """Enable or disable; disabling ends every session and token of the account."""
    user.is_active = active
    if not active:
        accounts.credentials_changed(session, user, CredentialEvent.USER_DISABLED, context=context)
    audit.record(
        session,
        "user.enabled" if active else "user.disabled",
        context=context,
        actor=actor,
        subject=str(user.id),
    )


def delete_user(
    accounts: Accounts,
    session: Session,
    user: User,
    *,
    actor: str = "admin",
    context: RequestContext = _CLI,
) -> None:
    """Delete the account. Its live access tokens go on the denylist first; its sessions,
    codes and tokens then go with it (foreign-key cascade)."""
    audit.record(session, "user.deleted", context=context, actor=actor, subject=str(user.id))
    accounts.credentials_changed(session, user, CredentialEvent.USER_DELETED, context=context)
    repositories.delete_user(session, user)


def rename_user(
    accounts: Accounts,
    session: Session,
    user: User,
    name: str,
    *,
    actor: str = "admin",
    context: RequestContext = _CLI,
) -> None:
    """Change the account's name, by the rule of the owner's own change (``clean_name``)."""
    user.name = clean_name(name)
    audit.record(session, "profile.updated", context=context, actor=actor, subject=str(user.id))


def send_reset(
    accounts: Accounts,
    session: Session,
    user: User,
    *,
    actor: str = "admin",
    context: RequestContext = _CLI,
) -> None:
    """Mail the account the forgotten-password link, as if its owner had asked (the same
    limiters, link and mail). AccountDisabled for a disabled account, which gets no mail."""
    if not user.is_active:
        raise AccountDisabled()
    recovery.request_reset(accounts, session, user.email, context)
    audit.record(session, "password.reset_sent", context=context, actor=actor, subject=str(user.id))


def end_sessions(
    accounts: Accounts,
    session: Session,
    user: User,
    *,
    actor: str = "admin",
    context: RequestContext = _CLI,
) -> None:
    """Sign the account out everywhere: the credential event its owner's "sign out
    everywhere" is (browser sessions, refresh families and their live access tokens)."""
    accounts.credentials_changed(
        session, user, CredentialEvent.SIGNED_OUT_EVERYWHERE, context=context
    )
    audit.record(session, "session.revoked_all", context=context, actor=actor, subject=str(user.id))


def reset_mfa(
    accounts: Accounts,
    session: Session,
    user: User,
    *,
    actor: str = "admin",
    context: RequestContext = _CLI,
) -> bool:
    """Remove every second factor and recovery code of an account that lost them (the owner
    is mailed). False, with no audit row and no mail, when there was nothing to remove."""
    summary = factors.summary(session, user)
    if not (summary.any or summary.recovery_codes_left > 0):
        return False
    factors.reset(accounts, session, user, context, actor=actor)
    return True


# -- reading -----------------------------------------------------------------------------------


def describe(user: User) -> dict[str, Any]:
    """The JSON shape of an account, as lists and the CLI show it."""
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


def _encode_cursor(user: User) -> str:
    raw = json.dumps([user.email, str(user.id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        email, user_id = json.loads(raw)
        return str(email), uuid.UUID(str(user_id))
    except (binascii.Error, ValueError, TypeError):  # JSON and UTF-8 errors are ValueErrors
        raise InvalidInput({"cursor": _CURSOR}) from None


def search_users(
    session: Session,
    *,
    email_prefix: str | None = None,
    status: Status | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[User], str | None]:
    """A page of accounts ordered by email (then id), and the cursor of the next page (None:
    no more). ``email_prefix`` matches the start of the address literally (``%`` and ``_``
    too); ``status``: ``active`` (enabled and verified), ``unverified`` (enabled, address
    not yet proven: pending invitations too) or ``disabled``."""
    prefix = None
    if email_prefix:
        prefix = unicodedata.normalize("NFKC", email_prefix.strip()).lower() or None
    after = None if cursor is None else _decode_cursor(cursor)
    rows = repositories.search_users(
        session,
        email_prefix=prefix,
        active=None if status is None else status != "disabled",
        verified={"active": True, "unverified": False}.get(status or ""),
        after=after,
        limit=limit + 1,
    )
    page = list(rows[:limit])
    return page, _encode_cursor(page[-1]) if len(rows) > limit else None


def app_sessions(session: Session, user: User, now: datetime) -> list[dict[str, Any]]:
    """One entry per live refresh-token family (an app signed in): when it started, when
    its newest token was issued (``last_used_at``), its client and scope."""
    started: dict[uuid.UUID, datetime] = {}
    heads: dict[uuid.UUID, tuple[RefreshToken, str]] = {}
    for row, client_name in repositories.live_refresh_tokens_with_client_names(
        session, user.id, now
    ):
        started.setdefault(row.family_id, row.created_at)
        if row.rotated_at is None and row.expires_at > now:
            heads[row.family_id] = (row, client_name)
    return [
        {
            "id": str(family_id),
            "client_id": head.client_id,
            "client_name": client_name,
            "scope": head.scope,
            "created_at": started[family_id],
            "last_used_at": head.created_at,
        }
        for family_id, (head, client_name) in heads.items()
    ]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def user_detail(session: Session, user: User, *, now: datetime | None = None) -> dict[str, Any]:
    """``describe`` and what an operator needs to help the account: its second factors,
    linked providers, browser sessions, app sessions and roles. No secret of any of them."""
    now = now or utcnow()
    summary = factors.summary(session, user)
    passkeys = repositories.passkeys_of(session, user.id)
    return {
        **describe(user),
        "factors": {
            "totp": summary.totp,
            "passkeys": {"count": len(passkeys), "names": [p.name for p in passkeys]},
            "recovery_codes_left": summary.recovery_codes_left,
        },
        "providers": [
            {
                "provider": link.provider,
                "email": link.email,
                "last_used_at": _iso(link.last_used_at),
            }
            for link in federation.links(session, user)
        ],
        "sessions": [
            {
                "id": row.public_id,
                "created_at": row.created_at.isoformat(),
                "last_seen_at": row.last_seen_at.isoformat(),
                "ip": row.ip,
                "user_agent": row.user_agent,
            }
            for row in repositories.list_user_sessions(session, user.id, now)
        ],
        "app_sessions": [
            {
                **entry,
                "created_at": _iso(entry["created_at"]),
                "last_used_at": _iso(entry["last_used_at"]),
            }
            for entry in app_sessions(session, user, now)
        ],
        "roles": roles.roles_of(session, user),
    }


# -- who may operate ---------------------------------------------------------------------------


def is_console_admin(session: Session, browser_session: BrowserSession) -> bool:
    """The one rule for a browser session that may use the admin console and the admin API:
    it belongs to an active user with the ``admin`` role, and its sign-in showed a second
    factor (``mfa`` in its ``amr``)."""
    if browser_session.user_id is None or "mfa" not in (browser_session.amr or []):
        return False
    user = repositories.get_user(session, browser_session.user_id)
    return user is not None and user.is_active and ADMIN_ROLE in roles.roles_of(session, user)
