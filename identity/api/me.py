"""JSON API handlers of the signed-in user (``/api/v1/me...``, logout): thin calls into
``profile``, the refresh-token service and the denylist."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from identity import audit, repositories
from identity.accounts import operators, profile
from identity.accounts.credential_events import Current
from identity.accounts.errors import FieldErrors, InvalidInput
from identity.api.bodies import (
    AccountConsent,
    AccountConsents,
    AccountEvent,
    AccountEvents,
    AccountSession,
    AccountSessions,
    AccountStatus,
    ChangePasswordRequest,
    EventsQuery,
    LogoutRequest,
    Me,
    UpdateMeRequest,
)
from identity.api.calls import ApiCall, Reply, Result
from identity.api.problems import from_account_error, invalid_input, not_found
from identity.models import User

# The services name the email-change fields after the account page's form.
_EMAIL_CHANGE_FIELDS = {"new_email": "email", "email_password": "password"}
# Session public ids, family ids and client ids are all of this shape; anything else (a NUL
# byte PostgreSQL would refuse, a megabyte of text) is a 404 before any query.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _me(user: User) -> Me:
    return Me(
        id=user.id,
        email=user.email,
        name=user.name,
        email_verified=user.email_verified,
        created_at=user.created_at,
    )


def get_me(call: ApiCall) -> Result:
    return _me(call.me)


def update_me(call: ApiCall) -> Result:
    """``name`` changes now (200); ``email`` with ``password`` mails a confirmation (202).
    Both at once change together or not at all (one transaction)."""
    body = call.body_as(UpdateMeRequest)
    if body.name is None and body.email is None and body.password is None:
        raise invalid_input({"body": "Send a name, or an email with your current password."})
    # Every field is checked and every fault told at once (the services' email-change field
    # names become ours at the end); any fault rolls the whole call back.
    errors = FieldErrors()
    if body.email is None and body.password is not None:
        errors.add("password", "Only needed to change the email address.")
    if body.name is not None:
        with errors.check():
            profile.change_name(call.db, call.me, body.name, call.context)
    if body.email is not None:
        with errors.check():
            if body.password is None:
                errors.add("password", "Enter your current password to change your email.")
                profile.new_address(call.me, body.email)
            else:
                profile.request_email_change(
                    call.accounts, call.db, call.me, body.email, body.password, call.context
                )
    try:
        errors.raise_any()
    except InvalidInput as error:
        raise from_account_error(error, _EMAIL_CHANGE_FIELDS) from None
    if body.email is None:
        return _me(call.me)
    return Reply(202, AccountStatus(status="check_email"))


def change_password(call: ApiCall) -> Result:
    """Every browser session and every other app of the account is signed out; the calling
    app keeps its own refresh tokens; the mail notice goes out."""
    body = call.body_as(ChangePasswordRequest)
    profile.change_password(
        call.accounts,
        call.db,
        call.me,
        body.current_password,
        body.new_password,
        call.context,
        keep=Current(client_id=str(call.claims["client_id"])),
    )
    return None


# -- sessions -----------------------------------------------------------------------------------


def _app_sessions(call: ApiCall, now: datetime) -> list[AccountSession]:
    """One entry per live refresh-token family: its first token's time, its newest scope."""
    return [
        AccountSession(
            id=entry["id"],
            type="app",
            created_at=entry["created_at"],
            last_seen_at=entry["last_used_at"],
            client_id=entry["client_id"],
            client_name=entry["client_name"],
            scope=entry["scope"],
        )
        for entry in operators.app_sessions(call.db, call.me, now)
    ]


def list_sessions(call: ApiCall) -> Result:
    now = call.accounts.now()
    browser = [
        AccountSession(
            id=view.public_id,
            type="browser",
            created_at=view.created_at,
            last_seen_at=view.last_seen_at,
            ip=view.ip,
            user_agent=view.user_agent,
            device=view.device,
            current=False,  # a bearer call has no browser session of its own
        )
        for view in profile.list_sessions(call.accounts, call.db, call.me, None)
    ]
    return AccountSessions(sessions=browser + _app_sessions(call, now))


def _own_family(call: ApiCall, value: str) -> uuid.UUID | None:
    """The refresh family ``value`` names, if it is a live one of this user."""
    try:
        family_id = uuid.UUID(value)
    except ValueError:
        return None
    live = repositories.live_refresh_families(call.db, call.me.id, None, call.accounts.now())
    return family_id if family_id in live else None


def revoke_session(call: ApiCall) -> Result:
    """A browser session (by its public id) or an app's refresh family of this user; any
    other id, including another user's, is a 404."""
    session_id = call.path["session_id"]
    if not _ID.fullmatch(session_id):
        raise not_found("You have no session with this id.")
    try:
        profile.revoke_session(call.db, call.me, session_id, call.context)
        return None
    except LookupError:
        pass
    family_id = _own_family(call, session_id)
    if family_id is None:
        raise not_found("You have no session with this id.")
    call.oauth.families.revoke_family(call.db, family_id, reason="user", context=call.context)
    audit.record(
        call.db,
        "session.revoked",
        context=call.context,
        subject=str(call.me.id),
        detail={"family_id": str(family_id)},
    )
    return None


def _deny_presented_token(call: ApiCall) -> None:
    """The access token of this very call stops working at once."""
    expires_at = datetime.fromtimestamp(float(call.claims["exp"]), UTC)
    call.oauth.denylist.revoke(call.db, str(call.claims["jti"]), expires_at)


def logout(call: ApiCall) -> Result:
    """End the presented access token and, when sent, the refresh token's family. A refresh
    token that is unknown, spent or another user's changes nothing (as RFC 7009 answers)."""
    body = call.body_as(LogoutRequest)
    ended_family = None
    if body.refresh_token is not None:
        row = call.oauth.refresh_tokens.find(call.db, body.refresh_token)
        if row is not None and row.user_id == call.me.id:
            ended_family = row.family_id
            call.oauth.families.revoke_family(
                call.db, row.family_id, reason="logout", context=call.context
            )
    _deny_presented_token(call)
    audit.record(
        call.db,
        "logout",
        context=call.context,
        subject=str(call.me.id),
        client_id=str(call.claims["client_id"]),
        detail={"family_id": str(ended_family) if ended_family else None},
    )
    return None


def logout_everywhere(call: ApiCall) -> Result:
    """Every browser session and refresh family of the account, and this access token."""
    profile.revoke_everything(call.accounts, call.db, call.me, call.context)
    _deny_presented_token(call)
    return None


# -- consents and events ------------------------------------------------------------------------


def list_consents(call: ApiCall) -> Result:
    return AccountConsents(
        consents=[
            AccountConsent(
                client_id=view.client_id,
                client_name=view.client_name,
                scope=view.scope,
                granted_at=view.granted_at,
            )
            for view in profile.list_consents(call.db, call.me)
        ]
    )


def revoke_consent(call: ApiCall) -> Result:
    client_id = call.path["client_id"]
    try:
        if not _ID.fullmatch(client_id):
            raise LookupError("no such consent")
        profile.revoke_consent(call.accounts, call.db, call.me, client_id, call.context)
    except LookupError:
        raise not_found("You have not given this app access.") from None
    return None


def list_events(call: ApiCall) -> Result:
    """The user's own audit events, oldest first, a page at a time."""
    query = call.query_as(EventsQuery)
    rows = repositories.list_audit_events(
        call.db, subject=str(call.me.id), after_id=query.after, limit=query.limit + 1
    )
    page = rows[: query.limit]
    return AccountEvents(
        events=[
            AccountEvent(
                id=row.id,
                type=row.type,
                outcome=row.outcome,
                occurred_at=row.occurred_at,
                client_id=row.client_id,
                ip=row.ip,
                user_agent=row.user_agent,
                detail=dict(row.detail or {}),
            )
            for row in page
        ],
        next_after=page[-1].id if len(rows) > query.limit else None,
    )
