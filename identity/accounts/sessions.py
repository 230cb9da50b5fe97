"""Browser sessions: server-side rows keyed by the SHA-256 of a 256-bit cookie value, and the
CSRF token bound to each. Anonymous sessions exist so that the login forms have CSRF too."""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from identity import repositories
from identity.audit import RequestContext
from identity.models import BrowserSession, secret_digest

_TOUCH_EVERY = timedelta(seconds=60)
_ANONYMOUS_LIFETIME = timedelta(hours=1)


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
    """The live session the cookie names, or None. Expired rows are deleted on sight."""
    if not cookie_value or len(cookie_value) > 128:
        return None
    row = repositories.get_browser_session(session, secret_digest(cookie_value))
    if row is None:
        return None
    idle_limit = policy.idle if row.user_id is not None else _ANONYMOUS_LIFETIME
    if row.expires_at <= now or now - row.last_seen_at > idle_limit:
        repositories.delete_browser_session(session, row.id)
        return None
    if now - row.last_seen_at > _TOUCH_EVERY:  # not a write on every page view
        row.last_seen_at = now
    return row


def _create(
    session: Session,
    now: datetime,
    expires_at: datetime,
    context: RequestContext,
    *,
    user_id: uuid.UUID | None = None,
    amr: list[str] | None = None,
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
) -> tuple[str, BrowserSession]:
    """Log in: always a new session id (no fixation); pending flow data carries over."""
    data: dict[str, Any] = {}
    if previous is not None:
        data = dict(previous.data)
        repositories.delete_browser_session(session, previous.id)
    return _create(
        session, now, now + policy.absolute, context, user_id=user_id, amr=amr, data=data
    )


def end(session: Session, row: BrowserSession) -> None:
    """Log out: the row is gone, so the cookie is worthless even if it was copied."""
    repositories.delete_browser_session(session, row.id)


def csrf_matches(row: BrowserSession | None, submitted: str | None) -> bool:
    """True when the form's CSRF token is the one bound to this session."""
    if row is None or not submitted:
        return False
    return hmac.compare_digest(row.csrf_token.encode(), submitted.encode())
