"""Password reset, called directly: the request, the link check and the reset."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from identity.accounts import operators, recovery, sessions
from identity.accounts.errors import InvalidCredentials, InvalidInput, InvalidLink
from identity.accounts.service import Accounts
from identity.accounts.sessions import SessionPolicy
from identity.db import Database
from identity.models import BrowserSession, User
from tests.accounts.conftest import (
    CONTEXT,
    OTHER_PASSWORD,
    PASSWORD,
    Clock,
    audit_types,
    create_user,
    mails,
    reload,
    token_in,
)

_POLICY = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=8), https=False)


@pytest.fixture
def user(accounts: Accounts, database: Database) -> User:
    return create_user(accounts, database, "ada@example.com")


def _request(accounts: Accounts, database: Database, email: str = "ada@example.com") -> None:
    with database.transaction() as session:
        recovery.request_reset(accounts, session, email, CONTEXT)


def _requested(accounts: Accounts, database: Database, email: str = "ada@example.com") -> str:
    """Ask for a reset of ``email`` and return the token of the newest reset mail."""
    _request(accounts, database, email)
    return token_in(mails(database, email, "password_reset")[-1], "/reset-password")


def _reset(
    accounts: Accounts, database: Database, token: str, password: str = OTHER_PASSWORD
) -> User:
    with database.transaction() as session:
        return recovery.reset_password(accounts, session, token, password, CONTEXT)


def _check(accounts: Accounts, database: Database, token: str) -> None:
    with database.transaction() as session:
        recovery.check_reset_token(accounts, session, token)


def _logs_in(accounts: Accounts, database: Database, password: str) -> bool:
    try:
        with database.transaction() as session:
            accounts.authenticate(session, "ada@example.com", password, CONTEXT)
    except InvalidCredentials:
        return False
    return True


def test_a_reset_request_mails_a_link_to_the_account(
    accounts: Accounts, database: Database, user: User
) -> None:
    _requested(accounts, database)
    assert "30 minutes" in mails(database, "ada@example.com")[-1].text_body
    assert "password.reset_requested" in audit_types(database, user)


@pytest.mark.parametrize("email", ["nobody@example.com", "not an address"])
def test_a_reset_request_for_no_account_mails_nothing_and_raises_nothing(
    accounts: Accounts, database: Database, user: User, email: str
) -> None:
    _request(accounts, database, email)
    assert mails(database, email) == [] and mails(database, "ada@example.com") == []


def test_a_reset_request_for_a_disabled_account_mails_nothing(
    accounts: Accounts, database: Database, user: User
) -> None:
    with database.transaction() as session:
        operators.set_active(accounts, session, operators.find_user(session, user.email), False)
    _request(accounts, database)
    assert mails(database, "ada@example.com") == []


def test_a_reset_token_sets_the_new_password(
    accounts: Accounts, database: Database, user: User
) -> None:
    _reset(accounts, database, _requested(accounts, database))
    assert _logs_in(accounts, database, OTHER_PASSWORD)
    assert not _logs_in(accounts, database, PASSWORD)


def test_a_reset_token_is_single_use(accounts: Accounts, database: Database, user: User) -> None:
    token = _requested(accounts, database)
    _reset(accounts, database, token)
    with pytest.raises(InvalidLink):
        _reset(accounts, database, token, PASSWORD)
    assert _logs_in(accounts, database, OTHER_PASSWORD)


def test_the_newest_reset_token_wins(accounts: Accounts, database: Database, user: User) -> None:
    first = _requested(accounts, database)
    second = _requested(accounts, database)
    with pytest.raises(InvalidLink):
        _check(accounts, database, first)
    with pytest.raises(InvalidLink):
        _reset(accounts, database, first)
    _reset(accounts, database, second)
    assert _logs_in(accounts, database, OTHER_PASSWORD)


def test_checking_a_reset_token_does_not_consume_it(
    accounts: Accounts, database: Database, user: User
) -> None:
    token = _requested(accounts, database)
    _check(accounts, database, token)
    _check(accounts, database, token)
    _reset(accounts, database, token)
    assert _logs_in(accounts, database, OTHER_PASSWORD)


def test_a_refused_new_password_does_not_spend_the_token(
    accounts: Accounts, database: Database, user: User
) -> None:
    token = _requested(accounts, database)
    with pytest.raises(InvalidInput):
        _reset(accounts, database, token, "short")
    _reset(accounts, database, token)
    assert _logs_in(accounts, database, OTHER_PASSWORD)


def test_a_reset_token_lives_thirty_minutes(
    accounts: Accounts,
    database: Database,
    user: User,
    clock: Clock,
    accounts_on: Callable[[Clock], Accounts],
) -> None:
    timed = accounts_on(clock)
    with database.transaction() as session:
        recovery.request_reset(timed, session, "ada@example.com", CONTEXT)
    token = token_in(mails(database, "ada@example.com")[-1], "/reset-password")
    clock.advance(timedelta(minutes=30) - timedelta(seconds=1))
    _check(timed, database, token)
    clock.advance(timedelta(seconds=1))
    with pytest.raises(InvalidLink):
        _check(timed, database, token)
    with pytest.raises(InvalidLink):
        _reset(timed, database, token)


def test_a_reset_token_of_a_disabled_account_is_refused(
    accounts: Accounts, database: Database, user: User
) -> None:
    token = _requested(accounts, database)
    with database.transaction() as session:
        operators.set_active(accounts, session, operators.find_user(session, user.email), False)
    with pytest.raises(InvalidLink):
        _check(accounts, database, token)


def test_a_reset_ends_every_session_and_sends_a_notice(
    accounts: Accounts, database: Database, user: User
) -> None:
    with database.transaction() as session:
        sessions.start_authenticated(
            session, None, user.id, datetime.now(UTC), _POLICY, CONTEXT, ["pwd"]
        )
    _reset(accounts, database, _requested(accounts, database))
    with database.transaction() as session:
        assert session.scalars(select(BrowserSession)).all() == []
    assert mails(database, "ada@example.com")[-1].template == "password_changed"
    assert "password.reset" in audit_types(database, user)


def test_a_reset_verifies_the_address_and_voids_the_verification_code(
    accounts: Accounts, database: Database
) -> None:
    unverified = create_user(accounts, database, "ada@example.com", verified=False)
    with database.transaction() as session:
        accounts.resend_code(session, "ada@example.com", CONTEXT)
        assert accounts.emailed_secrets.live_code(session, unverified) is not None
    user = _reset(accounts, database, _requested(accounts, database))
    assert reload(database, user).email_verified
    with database.transaction() as session:
        assert accounts.emailed_secrets.live_code(session, user) is None
