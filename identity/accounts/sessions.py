"""Browser sessions: server-side rows keyed by the SHA-256 of a 256-bit cookie value, and the
CSRF token bound to each. Anonymous sessions exist so that the login forms have CSRF too, and
so that a browser that typed a password is signed in when it verifies the address."""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from identity import audit, metrics, repositories
from identity.accounts.passwords import fingerprint
from identity.audit import RequestContext
from identity.models import BrowserSession, User, secret_digest

_TOUCH_EVERY = timedelta(seconds=60)
_ANONYMOUS_LIFETIME = timedelta(hours=1)
# Where a browser keeps the fingerprint of a password it just typed, and for how long that
# counts towards signing it in when the address is verified in it.
_TYPED_PASSWORD = "typed_password"  # noqa: S105 - a key of the session data, no secret
_TYPED_PASSWORD_LIFETIME = timedelta(hours=1)
# A sign-in that passed its password waits this long for its second factor.
_SECOND_FACTOR = "second_factor"
SECOND_FACTOR_WAIT = timedelta(minutes=5)


@dataclass(frozen=True)
class SessionPolicy:
    """Timeouts and cookie attributes, from the settings."""

    idle: timedelta
    absolute: timedelta
    https: bool

    @property
    def cookie_name(self) -> str:
        # __Host- makes the browser refuse the cookie unless Secure, host-only and Path=/.
        return "__Host-identity_session" if self.https else "identity_session"

    def cookie_options(self) -> dict[str, Any]:
        return {"httponly": True, "samesite": "lax", "secure": self.https, "path": "/"}


def load(
    session: Session, cookie_value: str | None, now: datetime, policy: SessionPolicy
) -> BrowserSession | None:
    """The live session the cookie names, or None. Only reads: ``upkeep`` writes, at the end
    of the request (on SQLite a write here would hold the one write lock for the whole
    request, and a refusal's audit row, written in its own transaction, would wait on it)."""
    if not cookie_value or len(cookie_value) > 128:
        return None
    row = repositories.get_browser_session(session, secret_digest(cookie_value))
    if row is None or _expired(row, now, policy):
        return None
    return row


def upkeep(
    session: Session, cookie_value: str | None, now: datetime, policy: SessionPolicy
) -> None:
    """After the request's work: delete the cookie's session if it expired, else note that
    it was seen (at most once a minute, so not a write on every page view). Nothing when the
    request replaced or ended it."""
    if not cookie_value or len(cookie_value) > 128:
        return
    row = repositories.get_browser_session(session, secret_digest(cookie_value))
    if row is None:
        return
    if _expired(row, now, policy):
        repositories.delete_browser_session(session, row.id)
    elif now - row.last_seen_at > _TOUCH_EVERY:
        row.last_seen_at = now


def _expired(row: BrowserSession, now: datetime, policy: SessionPolicy) -> bool:
    idle_limit = policy.idle if row.user_id is not None else _ANONYMOUS_LIFETIME
    return row.expires_at <= now or now - row.last_seen_at > idle_limit


def _create(
    session: Session,
    now: datetime,
    expires_at: datetime,
    context: RequestContext,
    *,
    user_id: uuid.UUID | None = None,
    amr: list[str] | None = None,
    idp: str | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[str, BrowserSession]:
    cookie_value = secrets.token_urlsafe(32)
    row = BrowserSession(
        id=secret_digest(cookie_value),
        public_id=secrets.token_urlsafe(12),
        user_id=user_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
        auth_time=now if user_id is not None else None,
        amr=amr or [],
        idp=idp,
        ip=context.ip,
        user_agent=(context.user_agent or "")[:512] or None,
        data=data or {},
    )
    repositories.add_browser_session(session, row)
    return cookie_value, row


def start_anonymous(
    session: Session, now: datetime, context: RequestContext
) -> tuple[str, BrowserSession]:
    """A session with no user: it only carries a CSRF token and pending flow data."""
    return _create(session, now, now + _ANONYMOUS_LIFETIME, context)


def start_authenticated(
    session: Session,
    previous: BrowserSession | None,
    user_id: uuid.UUID,
    now: datetime,
    policy: SessionPolicy,
    context: RequestContext,
    amr: list[str],
    idp: str | None = None,
) -> tuple[str, BrowserSession]:
    """Log in: always a new session id (no fixation); pending flow data carries over.
    ``idp`` names the upstream provider of a federated sign-in (its tokens' ``idp`` claim)."""
    data: dict[str, Any] = {}
    if previous is not None:
        data = dict(previous.data)
        repositories.delete_browser_session(session, previous.id)
    return _create(
        session, now, now + policy.absolute, context, user_id=user_id, amr=amr, idp=idp, data=data
    )


def remember_typed_password(
    browser: BrowserSession, password_fingerprint: str, now: datetime, next_path: str
) -> None:
    """Note that ``browser`` has just typed the password ``password_fingerprint`` names
    (``passwords.fingerprint``) at a signup or a sign-in refused for an unverified address,
    and where it was going; verifying the address in it then signs it in (start_verified)."""
    record = {"fingerprint": password_fingerprint, "at": now.timestamp(), "next": next_path}
    browser.data = {**browser.data, _TYPED_PASSWORD: record}


def start_verified(
    session: Session,
    browser: BrowserSession | None,
    user: User,
    now: datetime,
    policy: SessionPolicy,
    context: RequestContext,
) -> tuple[str, BrowserSession, str] | None:
    """Sign in the browser in which ``user``'s address was just verified, when it typed the
    password the account now has within the hour: it has proven the password and now the
    mailbox, which is what a sign-in asks. A code of another signup attempt gave the account
    that attempt's password, which this browser never typed: no sign-in then.

    Returns (cookie, new session, where the browser was going); a new session id, as at
    every login. None: the browser only verified, as any other browser does."""
    typed = browser.data.get(_TYPED_PASSWORD) if browser is not None else None
    if browser is None or not isinstance(typed, dict) or not user.is_active:
        return None
    fresh = now.timestamp() - float(typed.get("at", 0)) <= _TYPED_PASSWORD_LIFETIME.total_seconds()
    proven = user.password_hash is not None and hmac.compare_digest(
        str(typed.get("fingerprint", "")), fingerprint(user.password_hash)
    )
    if not (fresh and proven):
        return None
    browser.data = {k: v for k, v in browser.data.items() if k != _TYPED_PASSWORD}
    audit.record(
        session,
        "login.succeeded",
        context=context,
        subject=str(user.id),
        detail={"via": "email_verification"},
    )
    metrics.count_login("succeeded")
    cookie, row = start_authenticated(session, browser, user.id, now, policy, context, ["pwd"])
    return cookie, row, str(typed.get("next") or "")


@dataclass(frozen=True)
class PendingSignIn:
    """A sign-in whose password was right and whose second factor is still to come."""

    user_id: uuid.UUID
    amr: list[str]
    next_path: str
    started_at: float = 0.0
    idp: str | None = None

    def still_valid_for(self, user: User) -> bool:
        """False once the account was disabled, or its password changed after the password
        step (a reset ends every sign-in, half-done ones too)."""
        changed = user.password_changed_at
        return user.is_active and (changed is None or changed.timestamp() <= self.started_at)


def await_second_factor(
    browser: BrowserSession,
    user_id: uuid.UUID,
    now: datetime,
    amr: list[str],
    next_path: str,
    idp: str | None = None,
) -> None:
    """Keep a half-done sign-in in ``browser``'s server-side data, for ``SECOND_FACTOR_WAIT``:
    only this browser can finish it, and only with the second factor. ``idp``: the upstream
    provider of a federated first step, which the finished sign-in keeps."""
    record = {
        "user": str(user_id),
        "at": now.timestamp(),
        "amr": amr,
        "next": next_path,
        "idp": idp,
    }
    browser.data = {**browser.data, _SECOND_FACTOR: record}


def pending_sign_in(browser: BrowserSession | None, now: datetime) -> PendingSignIn | None:
    """The half-done sign-in ``browser`` holds, unless it is older than five minutes."""
    record = browser.data.get(_SECOND_FACTOR) if browser is not None else None
    if not isinstance(record, dict):
        return None
    if now.timestamp() - float(record.get("at", 0)) > SECOND_FACTOR_WAIT.total_seconds():
        return None
    try:
        user_id = uuid.UUID(str(record.get("user")))
    except ValueError:
        return None
    return PendingSignIn(
        user_id,
        list(record.get("amr") or ["pwd"]),
        str(record.get("next") or ""),
        float(record.get("at", 0)),
        str(record["idp"]) if record.get("idp") else None,
    )


def forget_pending_sign_in(browser: BrowserSession) -> None:
    browser.data = {k: v for k, v in browser.data.items() if k != _SECOND_FACTOR}


def end(session: Session, row: BrowserSession) -> None:
    """Log out: the row is gone, so the cookie is worthless even if it was copied."""
    repositories.delete_browser_session(session, row.id)


def csrf_matches(row: BrowserSession | None, submitted: str | None) -> bool:
    """True when the form's CSRF token is the one bound to this session."""
    if row is None or not submitted:
        return False
    return hmac.compare_digest(row.csrf_token.encode(), submitted.encode())
