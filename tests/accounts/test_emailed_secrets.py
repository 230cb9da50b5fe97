"""The emailed one-time secrets: digests at rest, links from the issuer, lifetimes, newest
wins, spent once, peeking spends nothing."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from identity.accounts.emailed_secrets import (
    CODE_LIFETIME,
    EMAIL_CHANGE,
    PASSWORD_RESET,
    EmailedSecrets,
    LinkPurpose,
)
from identity.accounts.service import Accounts
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, OneTimeToken, OutboxMessage, User, VerificationChallenge
from tests.accounts.conftest import Clock, code_in, create_user, mails, token_in
from tests.conftest import ISSUER


@pytest.fixture
def emailed(settings: Settings, accounts: Accounts, clock: Clock) -> EmailedSecrets:
    return EmailedSecrets(settings, accounts.mailer, clock)


@pytest.fixture
def user(accounts: Accounts, database: Database) -> User:
    return create_user(accounts, database, "ada@example.com")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _issue(emailed: EmailedSecrets, database: Database, user: User, purpose: LinkPurpose) -> str:
    """Issue a link of ``purpose`` to ``user`` and return the token from its mail."""
    # The email-change mail names the address being confirmed.
    extra: dict[str, Any] = {"new_email": "new@example.com"} if purpose is EMAIL_CHANGE else {}
    with database.transaction() as session:
        emailed.issue(session, user, purpose, **extra)
    return token_in(mails(database, user.email, purpose.template)[-1], purpose.path)


def _consume(
    emailed: EmailedSecrets, database: Database, purpose: LinkPurpose, token: str
) -> OneTimeToken | None:
    with database.transaction() as session:
        return emailed.consume(session, purpose, token)


def _peek(
    emailed: EmailedSecrets, database: Database, purpose: LinkPurpose, token: str
) -> OneTimeToken | None:
    with database.transaction() as session:
        return emailed.peek(session, purpose, token)


# -- links ----------------------------------------------------------------------------------


def test_an_issued_link_stores_only_the_digest_of_its_token(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    token = _issue(emailed, database, user, PASSWORD_RESET)
    with database.transaction() as session:
        rows = session.scalars(select(OneTimeToken)).all()
        assert [row.digest for row in rows] == [_sha256(token)]
        stored = [str(value) for row in rows for value in vars(row).values()]
    assert not any(token in value for value in stored)


def test_the_link_in_the_mail_is_built_from_the_issuer(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    token = _issue(emailed, database, user, PASSWORD_RESET)
    assert f"{ISSUER}/reset-password?token={token}" in mails(database, user.email)[-1].text_body


@pytest.mark.parametrize(
    ("purpose", "lifetime"),
    [(PASSWORD_RESET, timedelta(minutes=30)), (EMAIL_CHANGE, timedelta(hours=24))],
)
def test_a_link_lives_exactly_its_purposes_lifetime(
    emailed: EmailedSecrets,
    database: Database,
    user: User,
    clock: Clock,
    purpose: LinkPurpose,
    lifetime: timedelta,
) -> None:
    token = _issue(emailed, database, user, purpose)
    assert (
        f"{int(lifetime.total_seconds() // 60)} minutes"
        in mails(database, user.email)[-1].text_body
    )
    clock.advance(lifetime - timedelta(seconds=1))
    assert _peek(emailed, database, purpose, token) is not None
    clock.advance(timedelta(seconds=1))
    assert _peek(emailed, database, purpose, token) is None
    assert _consume(emailed, database, purpose, token) is None


def test_issuing_a_link_voids_the_earlier_one_of_the_same_purpose(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    first = _issue(emailed, database, user, PASSWORD_RESET)
    second = _issue(emailed, database, user, PASSWORD_RESET)
    assert _consume(emailed, database, PASSWORD_RESET, first) is None
    assert _consume(emailed, database, PASSWORD_RESET, second) is not None


def test_issuing_a_link_keeps_the_live_links_of_other_purposes(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    reset = _issue(emailed, database, user, PASSWORD_RESET)
    _issue(emailed, database, user, EMAIL_CHANGE)
    assert _consume(emailed, database, PASSWORD_RESET, reset) is not None


def test_a_link_is_consumed_only_once(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    token = _issue(emailed, database, user, PASSWORD_RESET)
    spent = _consume(emailed, database, PASSWORD_RESET, token)
    assert spent is not None and spent.user_id == user.id
    assert _consume(emailed, database, PASSWORD_RESET, token) is None
    assert _peek(emailed, database, PASSWORD_RESET, token) is None


def test_peeking_a_link_spends_nothing(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    token = _issue(emailed, database, user, PASSWORD_RESET)
    assert _peek(emailed, database, PASSWORD_RESET, token) is not None
    assert _peek(emailed, database, PASSWORD_RESET, token) is not None
    assert _consume(emailed, database, PASSWORD_RESET, token) is not None


def test_a_link_of_one_purpose_is_refused_for_another(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    token = _issue(emailed, database, user, PASSWORD_RESET)
    assert _peek(emailed, database, EMAIL_CHANGE, token) is None
    assert _consume(emailed, database, EMAIL_CHANGE, token) is None
    assert _consume(emailed, database, PASSWORD_RESET, token) is not None


@pytest.mark.parametrize("token", ["", "not-a-token-anyone-was-sent"])
def test_an_empty_or_unknown_token_is_refused(
    emailed: EmailedSecrets, database: Database, user: User, token: str
) -> None:
    _issue(emailed, database, user, PASSWORD_RESET)
    assert _peek(emailed, database, PASSWORD_RESET, token) is None
    assert _consume(emailed, database, PASSWORD_RESET, token) is None


def test_a_link_can_carry_data_and_go_to_another_address(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    with database.transaction() as session:
        emailed.issue(
            session,
            user,
            EMAIL_CHANGE,
            to="new@example.com",
            data={"email": "new@example.com"},
            new_email="new@example.com",
        )
    assert mails(database, user.email) == []
    token = token_in(mails(database, "new@example.com")[0], EMAIL_CHANGE.path)
    row = _consume(emailed, database, EMAIL_CHANGE, token)
    assert row is not None and row.data == {"email": "new@example.com"}


def test_pending_is_the_live_link_and_none_once_spent(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    token = _issue(emailed, database, user, EMAIL_CHANGE)
    with database.transaction() as session:
        pending = emailed.pending(session, user.id, EMAIL_CHANGE)
        assert pending is not None and pending.digest == _sha256(token)
    _consume(emailed, database, EMAIL_CHANGE, token)
    with database.transaction() as session:
        assert emailed.pending(session, user.id, EMAIL_CHANGE) is None


# -- the verification code and its link ----------------------------------------------------


def _issue_code(emailed: EmailedSecrets, database: Database, user: User) -> tuple[str, str]:
    """Issue a code to ``user``: (code, link token) from its mail."""
    with database.transaction() as session:
        emailed.issue_code(session, user, password_hash=user.password_hash, name=user.name)
    message = mails(database, user.email, "verify_email")[-1]
    return code_in(message), token_in(message, "/verify-email")


def _challenge(database: Database, user: User) -> VerificationChallenge:
    with database.transaction() as session:
        query = select(VerificationChallenge).where(VerificationChallenge.user_id == user.id)
        return session.scalars(query).one()


def test_a_verification_code_and_link_are_stored_only_as_digests(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    code, token = _issue_code(emailed, database, user)
    challenge = _challenge(database, user)
    # The code digest is bound to the account: the code alone does not produce it.
    assert challenge.code_digest == _sha256(f"{user.id}:{code}") != _sha256(code)
    assert challenge.link_digest == _sha256(token)
    stored = [str(value) for value in vars(challenge).values()]
    assert not any(token in value or code in value for value in stored)


def test_a_verification_code_matches_only_on_its_own_account(
    accounts: Accounts, emailed: EmailedSecrets, database: Database, user: User
) -> None:
    other = create_user(accounts, database, "grace@example.com")
    code, _ = _issue_code(emailed, database, user)
    challenge = _challenge(database, user)
    assert emailed.code_matches(user, challenge, f" {code} ")
    assert not emailed.code_matches(other, challenge, code)


def test_a_verification_code_lives_ten_minutes(
    emailed: EmailedSecrets, database: Database, user: User, clock: Clock
) -> None:
    _issue_code(emailed, database, user)
    assert "10 minutes" in mails(database, user.email)[-1].text_body
    clock.advance(CODE_LIFETIME - timedelta(seconds=1))
    with database.transaction() as session:
        assert emailed.live_code(session, user) is not None
    clock.advance(timedelta(seconds=1))
    with database.transaction() as session:
        assert emailed.live_code(session, user) is None


def test_a_verification_link_is_consumed_only_once(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    _, token = _issue_code(emailed, database, user)
    with database.transaction() as session:
        spent = emailed.consume_code_link(session, token)
        assert spent is not None and spent.user_id == user.id
    with database.transaction() as session:
        assert emailed.consume_code_link(session, token) is None


def test_a_new_code_keeps_the_earlier_live_code_and_its_link(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    first_code, first_link = _issue_code(emailed, database, user)
    second_code, _ = _issue_code(emailed, database, user)
    assert first_code != second_code  # two live codes of one account always differ
    with database.transaction() as session:
        first = emailed.matching_code(session, user, first_code)
        assert first is not None and first.link_digest == _sha256(first_link)
        assert emailed.matching_code(session, user, second_code) is not None


def test_over_the_mail_cap_nothing_is_stored_and_the_earlier_link_stays(
    emailed: EmailedSecrets, accounts: Accounts, database: Database, user: User
) -> None:
    cap = accounts.limiter.limit_of("mail.address").attempts
    tokens = [_issue(emailed, database, user, PASSWORD_RESET) for _ in range(cap)]
    with database.transaction() as session:
        assert not emailed.issue(session, user, PASSWORD_RESET)
        assert not emailed.issue_code(session, user, password_hash=None, name=None)
    assert len(mails(database, user.email)) == cap
    assert _consume(emailed, database, PASSWORD_RESET, tokens[-1]) is not None
    with database.transaction() as session:
        assert emailed.live_code(session, user) is None
        dropped = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.type == "mail.dropped")
        )
        assert [d["template"] for d in dropped] == ["password_reset", "verify_email"]


def test_a_decoy_sends_nothing_and_keeps_nothing(
    emailed: EmailedSecrets, database: Database, user: User
) -> None:
    live = _issue(emailed, database, user, PASSWORD_RESET)
    with database.transaction() as session:
        emailed.issue_decoy(session, "nobody@example.com", PASSWORD_RESET)
        emailed.issue_decoy(session, user.email, PASSWORD_RESET)
    with database.transaction() as session:
        assert session.scalars(select(OutboxMessage.to_address)).all() == [user.email]
        assert len(session.scalars(select(OneTimeToken)).all()) == 1
    assert _consume(emailed, database, PASSWORD_RESET, live) is not None
