"""Browser sessions, called directly: new id at login, timeouts, logout and CSRF binding."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from identity.accounts import sessions
from identity.accounts.service import Accounts
from identity.accounts.sessions import SessionPolicy
from identity.db import Database
from identity.models import BrowserSession, User
from tests.accounts.conftest import CONTEXT, create_user

IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=8)
_POLICY = SessionPolicy(idle=IDLE, absolute=ABSOLUTE, https=False)
_START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def user(accounts: Accounts, database: Database) -> User:
    return create_user(accounts, database, "ada@example.com")


def _anonymous(database: Database) -> tuple[str, BrowserSession]:
    with database.transaction() as session:
        return sessions.start_anonymous(session, _START, CONTEXT)


def _log_in(
    database: Database, user: User, previous: BrowserSession | None = None
) -> tuple[str, BrowserSession]:
    with database.transaction() as session:
        return sessions.start_authenticated(
            session, previous, user.id, _START, _POLICY, CONTEXT, ["pwd"]
        )


def _load(database: Database, cookie: str, at: datetime) -> BrowserSession | None:
    """A visit, as a page request makes it: load the session, and its upkeep at the end."""
    with database.transaction() as session:
        row = sessions.load(session, cookie, at, _POLICY)
        sessions.upkeep(session, cookie, at, _POLICY)
        return row


def _exists(database: Database, row: BrowserSession) -> bool:
    with database.transaction() as session:
        return session.get(BrowserSession, row.id) is not None


def test_login_always_issues_a_new_session_id(database: Database, user: User) -> None:
    anonymous_cookie, anonymous = _anonymous(database)
    cookie, row = _log_in(database, user, anonymous)
    assert cookie != anonymous_cookie and row.id != anonymous.id
    assert _load(database, anonymous_cookie, _START) is None
    loaded = _load(database, cookie, _START)
    assert loaded is not None and loaded.user_id == user.id


def test_login_carries_the_pending_flow_data_over(database: Database, user: User) -> None:
    _, anonymous = _anonymous(database)
    with database.transaction() as session:
        row = session.get(BrowserSession, anonymous.id)
        assert row is not None
        row.data = {"next": "/authorize?client_id=app"}
    with database.transaction() as session:
        previous = session.get(BrowserSession, anonymous.id)
        _, row = sessions.start_authenticated(
            session, previous, user.id, _START, _POLICY, CONTEXT, ["pwd"]
        )
    assert row.data == {"next": "/authorize?client_id=app"}


def test_the_cookie_value_is_not_stored_only_its_digest(database: Database, user: User) -> None:
    cookie, row = _log_in(database, user)
    assert row.id == hashlib.sha256(cookie.encode()).hexdigest()
    assert cookie not in (row.id, row.public_id, row.csrf_token)


def test_a_session_idle_for_longer_than_the_idle_timeout_is_gone(
    database: Database, user: User
) -> None:
    cookie, row = _log_in(database, user)
    # Idle exactly as long as allowed: still alive, and the visit counts as activity.
    assert _load(database, cookie, _START + IDLE) is not None
    assert _load(database, cookie, _START + 2 * IDLE + timedelta(seconds=1)) is None
    assert not _exists(database, row)  # deleted on sight, not just ignored


def test_a_session_in_use_still_ends_at_the_absolute_timeout(
    database: Database, user: User
) -> None:
    cookie, row = _log_in(database, user)
    moment = _START
    while moment + IDLE / 2 < _START + ABSOLUTE:
        moment += IDLE / 2  # a visit every 15 minutes keeps it from idling out
        assert _load(database, cookie, moment) is not None
    assert _load(database, cookie, _START + ABSOLUTE) is None
    assert not _exists(database, row)


def test_a_visit_is_written_at_most_once_a_minute(database: Database, user: User) -> None:
    cookie, _ = _log_in(database, user)
    soon = _load(database, cookie, _START + timedelta(seconds=30))
    assert soon is not None and soon.last_seen_at == _START
    later = _load(database, cookie, _START + timedelta(seconds=61))
    assert later is not None and later.last_seen_at == _START + timedelta(seconds=61)


def test_an_anonymous_session_lives_an_hour_at_most(database: Database) -> None:
    cookie, _ = _anonymous(database)
    assert _load(database, cookie, _START + timedelta(minutes=59)) is not None
    assert _load(database, cookie, _START + timedelta(hours=1)) is None


def test_logout_deletes_the_session(database: Database, user: User) -> None:
    cookie, row = _log_in(database, user)
    with database.transaction() as session:
        sessions.end(session, row)
    assert _load(database, cookie, _START) is None and not _exists(database, row)


@pytest.mark.parametrize("cookie", ["", "unknown-cookie-value", "x" * 129])
def test_an_unknown_or_oversized_cookie_loads_nothing(database: Database, cookie: str) -> None:
    assert _load(database, cookie, _START) is None


def test_csrf_matches_only_the_token_of_its_own_session(database: Database, user: User) -> None:
    _, mine = _log_in(database, user)
    _, theirs = _anonymous(database)
    assert sessions.csrf_matches(mine, mine.csrf_token)
    assert not sessions.csrf_matches(mine, theirs.csrf_token)
    assert not sessions.csrf_matches(mine, "")
    assert not sessions.csrf_matches(mine, None)
    assert not sessions.csrf_matches(None, mine.csrf_token)


def test_https_sessions_use_a_host_prefixed_secure_cookie() -> None:
    https = SessionPolicy(idle=IDLE, absolute=ABSOLUTE, https=True)
    assert https.cookie_name.startswith("__Host-")
    assert https.cookie_options() == {
        "httponly": True,
        "samesite": "lax",
        "secure": True,
        "path": "/",
    }
    assert not _POLICY.cookie_options()["secure"]
