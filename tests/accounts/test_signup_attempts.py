"""Signup attempts, called directly: each code and link is bound to the attempt it was mailed
for (its password and name), live codes do not void one another, and wrong codes count per
address and client IP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from identity.accounts.emailed_secrets import LIVE_CODES
from identity.accounts.errors import EmailNotVerified, InvalidCode, InvalidCredentials, Throttled
from identity.accounts.passwords import PasswordHasher
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import User, VerificationChallenge, utcnow
from identity.services import Services
from tests.accounts.conftest import (
    CONTEXT,
    OTHER_PASSWORD,
    PASSWORD,
    code_in,
    create_user,
    mails,
    reload,
    token_in,
)

EMAIL = "ada@example.com"


def _signup(
    accounts: Accounts, database: Database, password: str = PASSWORD, name: str = "Ada"
) -> tuple[str, str]:
    """Sign EMAIL up: (code, link token) of the mail this attempt was sent."""
    with database.transaction() as session:
        accounts.signup(session, email=EMAIL, name=name, password=password, context=CONTEXT)
    message = mails(database, EMAIL, "verify_email")[-1]
    return code_in(message), token_in(message, "/verify-email")


def _verify(
    accounts: Accounts, database: Database, code: str, context: RequestContext = CONTEXT
) -> User:
    with database.transaction() as session:
        return accounts.verify_code(session, EMAIL, code, context)


def _login(accounts: Accounts, database: Database, password: str) -> User:
    with database.transaction() as session:
        return accounts.authenticate(session, EMAIL, password, CONTEXT)


def _user(database: Database) -> User:
    with database.transaction() as session:
        return session.scalars(select(User).where(User.email == EMAIL)).one()


def _challenges(database: Database) -> list[VerificationChallenge]:
    with database.transaction() as session:
        return list(
            session.scalars(select(VerificationChallenge).order_by(VerificationChallenge.id))
        )


def _expire_codes(database: Database) -> None:
    with database.transaction() as session:
        session.execute(update(VerificationChallenge).values(expires_at=utcnow() - timedelta(1)))


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# -- each attempt keeps its own password ---------------------------------------------------------


def test_each_attempts_code_gives_that_attempts_password_and_name(
    accounts: Accounts, database: Database
) -> None:
    first, _ = _signup(accounts, database, PASSWORD, "Ada")
    _signup(accounts, database, OTHER_PASSWORD, "Eve")
    user = _verify(accounts, database, first)
    assert reload(database, user).name == "Ada"
    assert _login(accounts, database, PASSWORD).id == user.id
    with pytest.raises(InvalidCredentials):
        _login(accounts, database, OTHER_PASSWORD)


def test_each_attempts_link_gives_that_attempts_password(
    accounts: Accounts, database: Database
) -> None:
    _signup(accounts, database, PASSWORD)
    _, second = _signup(accounts, database, OTHER_PASSWORD, "Eve")
    with database.transaction() as session:
        user = accounts.verify_link(session, second, CONTEXT)
    assert reload(database, user).name == "Eve"
    assert _login(accounts, database, OTHER_PASSWORD).id == user.id
    with pytest.raises(InvalidCredentials):
        _login(accounts, database, PASSWORD)


def test_a_repeated_signup_leaves_the_unverified_accounts_password_and_name_alone(
    accounts: Accounts, database: Database
) -> None:
    _signup(accounts, database, PASSWORD, "Ada")
    before = _user(database)
    _signup(accounts, database, OTHER_PASSWORD, "Visit http://evil.example")
    after = _user(database)
    assert (after.password_hash, after.name) == (before.password_hash, before.name)


def test_a_challenge_keeps_its_attempts_password_hash_and_name_never_the_password(
    accounts: Accounts, database: Database
) -> None:
    _signup(accounts, database, PASSWORD, "Ada")
    _signup(accounts, database, OTHER_PASSWORD, "Eve")
    first, second = _challenges(database)
    hasher = PasswordHasher(1, 8, 1)
    assert first.password_hash and hasher.verify(first.password_hash, PASSWORD)
    assert second.password_hash and hasher.verify(second.password_hash, OTHER_PASSWORD)
    assert (first.name, second.name) == ("Ada", "Eve")
    assert PASSWORD not in str(vars(first)) and OTHER_PASSWORD not in str(vars(second))


def test_verifying_one_attempt_ends_every_other_attempts_code_and_link(
    accounts: Accounts, database: Database
) -> None:
    first, _ = _signup(accounts, database, PASSWORD)
    second, second_link = _signup(accounts, database, OTHER_PASSWORD)
    _verify(accounts, database, first)
    with pytest.raises(InvalidCode):
        _verify(accounts, database, second)
    with pytest.raises(Exception, match="invalid or has expired"), database.transaction() as s:
        accounts.verify_link(s, second_link, CONTEXT)
    assert _challenges(database) == []


# -- a new code never voids a live one -----------------------------------------------------------


def test_a_resent_code_keeps_the_earlier_live_code_working(
    accounts: Accounts, database: Database
) -> None:
    first, _ = _signup(accounts, database)
    with database.transaction() as session:
        accounts.resend_code(session, EMAIL, CONTEXT)
    assert len(mails(database, EMAIL, "verify_email")) == 2
    assert _verify(accounts, database, first).email_verified


def test_at_most_five_codes_live_at_once_the_oldest_gives_way(
    settings_for: Callable[..., Settings], services: Services, database: Database
) -> None:
    # A mail cap above the live-code cap: this counts codes, not mails.
    settings = settings_for(rate_limits=("mail.address=100/3600",))
    accounts = Accounts.from_settings(
        settings, database, services.redis, services.loop_redis, services.families
    )
    assert LIVE_CODES == 5
    codes = [_signup(accounts, database)[0] for _ in range(LIVE_CODES + 1)]
    assert len(_challenges(database)) == LIVE_CODES
    with pytest.raises(InvalidCode):
        _verify(accounts, database, codes[0])
    assert _verify(accounts, database, codes[1]).email_verified


def test_a_sign_in_while_a_code_is_live_mails_nothing(
    accounts: Accounts, database: Database
) -> None:
    code, _ = _signup(accounts, database)
    for _ in range(3):
        with pytest.raises(EmailNotVerified):
            _login(accounts, database, PASSWORD)
    assert len(mails(database, EMAIL)) == 1
    assert _verify(accounts, database, code).email_verified


def test_a_sign_in_after_the_codes_expired_mails_a_code_for_that_password(
    accounts: Accounts, database: Database
) -> None:
    _signup(accounts, database, PASSWORD)
    _expire_codes(database)
    with pytest.raises(EmailNotVerified):
        _login(accounts, database, PASSWORD)
    code = code_in(mails(database, EMAIL, "verify_email")[-1])
    _verify(accounts, database, code)
    assert _login(accounts, database, PASSWORD).email == EMAIL


def test_a_resent_code_of_a_single_attempt_keeps_its_password(
    accounts: Accounts, database: Database
) -> None:
    _signup(accounts, database, PASSWORD)
    _expire_codes(database)
    with database.transaction() as session:
        accounts.resend_code(session, EMAIL, CONTEXT)
    _verify(accounts, database, code_in(mails(database, EMAIL)[-1]))
    assert _login(accounts, database, PASSWORD).email == EMAIL


def test_a_resent_code_of_a_contested_address_proves_the_mailbox_and_no_password(
    accounts: Accounts, database: Database
) -> None:
    # Two attempts (an attacker's and the owner's); anyone may ask for a new code, so it
    # cannot carry either password: whoever uses it chooses one through a reset.
    _signup(accounts, database, OTHER_PASSWORD, "Visit http://evil.example")
    _signup(accounts, database, PASSWORD, "Ada")
    _expire_codes(database)
    with database.transaction() as session:
        accounts.resend_code(session, EMAIL, CONTEXT)
    user = _verify(accounts, database, code_in(mails(database, EMAIL)[-1]))
    fresh = reload(database, user)
    assert fresh.email_verified and fresh.password_hash is None and fresh.name == ""
    for password in (PASSWORD, OTHER_PASSWORD):
        with pytest.raises(InvalidCredentials):
            _login(accounts, database, password)


def test_an_operator_made_unverified_account_gets_a_code_for_its_own_password(
    accounts: Accounts, database: Database
) -> None:
    create_user(accounts, database, EMAIL, verified=False)
    with database.transaction() as session:
        accounts.resend_code(session, EMAIL, CONTEXT)
    _verify(accounts, database, code_in(mails(database, EMAIL)[-1]))
    assert _login(accounts, database, PASSWORD).email == EMAIL


# -- wrong codes ---------------------------------------------------------------------------------


def test_five_wrong_codes_make_that_ip_wait_but_not_another(
    accounts: Accounts, database: Database
) -> None:
    code, _ = _signup(accounts, database)
    guesser = RequestContext(ip="198.51.100.66", user_agent="guesser")
    for _ in range(5):
        with pytest.raises(InvalidCode):
            _verify(accounts, database, _wrong(code), guesser)
    with pytest.raises(Throttled):
        _verify(accounts, database, code, guesser)
    assert _verify(accounts, database, code, CONTEXT).email_verified


def test_guesses_from_many_ips_pause_codes_for_everyone_but_never_the_link(
    accounts: Accounts, database: Database
) -> None:
    code, link = _signup(accounts, database)
    limit = accounts.limiter.limit_of("verify.account").attempts
    for guess in range(limit):
        context = RequestContext(ip=f"198.51.100.{guess}", user_agent="botnet")
        with pytest.raises(InvalidCode):
            _verify(accounts, database, _wrong(code), context)
    with pytest.raises(Throttled):
        _verify(accounts, database, code, CONTEXT)
    with database.transaction() as session:
        assert accounts.verify_link(session, link, CONTEXT).email_verified
