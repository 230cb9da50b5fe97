"""Accounts, called directly: signup, email verification and login."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from identity.accounts import operators, sessions
from identity.accounts.errors import (
    EmailNotVerified,
    InvalidCode,
    InvalidCredentials,
    InvalidLink,
    Throttled,
)
from identity.accounts.service import Accounts
from identity.accounts.sessions import SessionPolicy
from identity.db import Database
from identity.models import BrowserSession, User
from tests.accounts.conftest import (
    CONTEXT,
    OTHER_PASSWORD,
    PASSWORD,
    audit_types,
    code_in,
    create_user,
    mails,
    reload,
    token_in,
)

_POLICY = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=8), https=False)


def _signup(accounts: Accounts, database: Database, email: str, password: str = PASSWORD) -> str:
    """Sign ``email`` up and return the code of the newest verification mail."""
    with database.transaction() as session:
        accounts.signup(session, email=email, name="Ada", password=password, context=CONTEXT)
    return code_in(mails(database, email.strip().lower(), "verify_email")[-1])


def _verify(accounts: Accounts, database: Database, email: str, code: str) -> User:
    with database.transaction() as session:
        return accounts.verify_code(session, email, code, CONTEXT)


def _login(accounts: Accounts, database: Database, email: str, password: str = PASSWORD) -> User:
    with database.transaction() as session:
        return accounts.authenticate(session, email, password, CONTEXT)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# -- signup ---------------------------------------------------------------------------------


def test_signup_creates_an_unverified_account_with_a_normalised_email(
    accounts: Accounts, database: Database
) -> None:
    _signup(accounts, database, "  Ada@Example.COM ")
    with database.transaction() as session:
        user = session.scalars(select(User)).one()
    assert user.email == "ada@example.com" and not user.email_verified


def test_signup_for_a_verified_address_tells_its_owner_and_mails_no_code(
    accounts: Accounts, database: Database
) -> None:
    owner = create_user(accounts, database, "taken@example.com")
    with database.transaction() as session:
        accounts.signup(
            session, email="taken@example.com", name="Eve", password=OTHER_PASSWORD, context=CONTEXT
        )
    assert [m.template for m in mails(database, "taken@example.com")] == ["signup_exists"]
    assert reload(database, owner).password_hash == owner.password_hash


def test_a_repeated_signups_own_code_gives_it_its_own_password(
    accounts: Accounts, database: Database
) -> None:
    _signup(accounts, database, "ada@example.com", OTHER_PASSWORD)
    code = _signup(accounts, database, "ada@example.com", PASSWORD)
    _verify(accounts, database, "ada@example.com", code)
    assert _login(accounts, database, "ada@example.com", PASSWORD).email == "ada@example.com"
    with pytest.raises(InvalidCredentials):
        _login(accounts, database, "ada@example.com", OTHER_PASSWORD)


# -- verification ---------------------------------------------------------------------------


def test_the_mailed_code_verifies_the_account(accounts: Accounts, database: Database) -> None:
    code = _signup(accounts, database, "ada@example.com")
    user = _verify(accounts, database, "ada@example.com", code)
    assert reload(database, user).email_verified
    assert "email.verified" in audit_types(database, user)


def test_a_verification_code_is_single_use(accounts: Accounts, database: Database) -> None:
    code = _signup(accounts, database, "ada@example.com")
    _verify(accounts, database, "ada@example.com", code)
    with pytest.raises(InvalidCode):
        _verify(accounts, database, "ada@example.com", code)


def test_a_wrong_code_is_refused_and_audited(accounts: Accounts, database: Database) -> None:
    code = _signup(accounts, database, "ada@example.com")
    with pytest.raises(InvalidCode):
        _verify(accounts, database, "ada@example.com", _wrong(code))
    with database.transaction() as session:
        user = session.scalars(select(User)).one()
    assert "verify.failed" in audit_types(database, user)


def test_five_wrong_codes_make_that_ip_wait_even_with_the_right_code(
    accounts: Accounts, database: Database
) -> None:
    # Each try is counted before its transaction rolls back, so the count survives.
    code = _signup(accounts, database, "ada@example.com")
    for _ in range(5):
        with pytest.raises(InvalidCode):
            _verify(accounts, database, "ada@example.com", _wrong(code))
    with pytest.raises(Throttled):
        _verify(accounts, database, "ada@example.com", code)
    with database.transaction() as session:
        assert not session.scalars(select(User)).one().email_verified


def test_a_code_is_bound_to_its_account(accounts: Accounts, database: Database) -> None:
    code_one = _signup(accounts, database, "one@example.com")
    code_two = _signup(accounts, database, "two@example.com")
    while code_two == code_one:  # one chance in a million: draw the other account a new code
        with database.transaction() as session:
            two = session.scalars(select(User).where(User.email == "two@example.com")).one()
            accounts.emailed_secrets.discard_codes(session, two.id)  # a new code voids none
            accounts.emailed_secrets.issue_code(
                session, two, password_hash=two.password_hash, name=two.name
            )
        code_two = code_in(mails(database, "two@example.com")[-1])
    with pytest.raises(InvalidCode):
        _verify(accounts, database, "two@example.com", code_one)


def test_the_mailed_link_verifies_the_account_once(accounts: Accounts, database: Database) -> None:
    _signup(accounts, database, "ada@example.com")
    token = token_in(mails(database, "ada@example.com")[-1], "/verify-email")
    with database.transaction() as session:
        user = accounts.verify_link(session, token, CONTEXT)
    assert reload(database, user).email_verified
    with pytest.raises(InvalidLink), database.transaction() as session:
        accounts.verify_link(session, token, CONTEXT)


def test_verifying_ends_the_sessions_set_up_before_the_proof(
    accounts: Accounts, database: Database
) -> None:
    code = _signup(accounts, database, "ada@example.com")
    now = datetime.now(UTC)
    with database.transaction() as session:
        user = session.scalars(select(User)).one()
        sessions.start_authenticated(session, None, user.id, now, _POLICY, CONTEXT, ["pwd"])
    _verify(accounts, database, "ada@example.com", code)
    with database.transaction() as session:
        assert session.scalars(select(BrowserSession)).all() == []


def test_resending_to_an_unknown_address_mails_nothing_and_says_nothing(
    accounts: Accounts, database: Database
) -> None:
    with database.transaction() as session:
        accounts.resend_code(session, "nobody@example.com", CONTEXT)
    assert mails(database, "nobody@example.com") == []


def test_resending_mails_a_code_that_verifies(accounts: Accounts, database: Database) -> None:
    _signup(accounts, database, "ada@example.com")
    with database.transaction() as session:
        accounts.resend_code(session, "ada@example.com", CONTEXT)
    sent = mails(database, "ada@example.com", "verify_email")
    assert len(sent) == 2
    assert _verify(accounts, database, "ada@example.com", code_in(sent[-1])).email_verified


# -- login ----------------------------------------------------------------------------------


def test_login_with_the_right_password_returns_the_user(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "ada@example.com")
    assert _login(accounts, database, " ADA@example.com").id == user.id
    assert "login.succeeded" in audit_types(database, user)


def test_a_wrong_password_is_refused_and_audited(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "ada@example.com")
    with pytest.raises(InvalidCredentials):
        _login(accounts, database, "ada@example.com", OTHER_PASSWORD)
    assert "login.failed" in audit_types(database, user)


def test_an_unknown_account_is_refused_like_a_wrong_password(
    accounts: Accounts, database: Database
) -> None:
    create_user(accounts, database, "ada@example.com")
    with pytest.raises(InvalidCredentials) as unknown:
        _login(accounts, database, "nobody@example.com")
    with pytest.raises(InvalidCredentials) as wrong:
        _login(accounts, database, "ada@example.com", OTHER_PASSWORD)
    assert str(unknown.value) == str(wrong.value)


def test_an_unverified_login_is_refused_and_mails_a_fresh_code(
    accounts: Accounts, database: Database
) -> None:
    create_user(accounts, database, "ada@example.com", verified=False)
    with pytest.raises(EmailNotVerified):
        _login(accounts, database, "ada@example.com")
    # Mailed in a transaction of its own: the refused login's rollback does not take it.
    code = code_in(mails(database, "ada@example.com", "verify_email")[-1])
    assert _verify(accounts, database, "ada@example.com", code).email_verified


def test_a_disabled_account_cannot_log_in(accounts: Accounts, database: Database) -> None:
    create_user(accounts, database, "ada@example.com")
    with database.transaction() as session:
        operators.set_active(
            accounts, session, operators.find_user(session, "ada@example.com"), False
        )
    with pytest.raises(InvalidCredentials):
        _login(accounts, database, "ada@example.com")


def test_login_is_throttled_after_ten_wrong_passwords(
    accounts: Accounts, database: Database
) -> None:
    create_user(accounts, database, "ada@example.com")
    for _ in range(10):
        with pytest.raises(InvalidCredentials):
            _login(accounts, database, "ada@example.com", OTHER_PASSWORD)
    # Even the right password waits: the limiter is checked before the password.
    with pytest.raises(Throttled):
        _login(accounts, database, "ada@example.com")
