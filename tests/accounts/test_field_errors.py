"""Every field of a form is checked, and every refusal is told in one answer: one wrong field
never hides another (the services raise one InvalidInput naming all of them)."""

from __future__ import annotations

import pytest

from identity.accounts import profile, recovery
from identity.accounts.errors import InvalidInput, InvalidLink
from identity.accounts.service import Accounts
from identity.db import Database
from identity.models import User
from tests.accounts.conftest import CONTEXT, PASSWORD, create_user, mails, reload

WEAK = "password"


def test_signup_names_every_wrong_field_at_once(accounts: Accounts, database: Database) -> None:
    with pytest.raises(InvalidInput) as refused, database.transaction() as session:
        accounts.signup(session, email="not-an-email", name=" ", password=WEAK, context=CONTEXT)
    assert set(refused.value.fields) == {"email", "name", "password"}
    assert "common" in refused.value.fields["password"]


def test_password_change_names_a_wrong_current_and_a_weak_new_password(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "change@example.com")
    with pytest.raises(InvalidInput) as refused, database.transaction() as session:
        attached = session.get(User, user.id)
        assert attached is not None
        profile.change_password(accounts, session, attached, "not-my-password", WEAK, CONTEXT)
    assert set(refused.value.fields) == {"current_password", "new_password"}
    assert reload(database, user).password_hash == user.password_hash


def test_email_change_names_a_bad_address_and_a_wrong_password(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "move@example.com")
    with pytest.raises(InvalidInput) as refused, database.transaction() as session:
        attached = session.get(User, user.id)
        assert attached is not None
        profile.request_email_change(
            accounts, session, attached, "no-at-sign", "not-my-password", CONTEXT
        )
    assert set(refused.value.fields) == {"new_email", "email_password"}


def test_email_change_to_the_same_address_is_told_with_a_wrong_password(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "same@example.com")
    with pytest.raises(InvalidInput) as refused, database.transaction() as session:
        attached = session.get(User, user.id)
        assert attached is not None
        profile.request_email_change(
            accounts, session, attached, "SAME@example.com", "not-my-password", CONTEXT
        )
    assert refused.value.fields == {
        "new_email": "That is already your email address.",
        "email_password": "That isn't your current password.",
    }
    assert mails(database, "same@example.com") == []


def test_a_dead_reset_link_also_names_a_weak_password(
    accounts: Accounts, database: Database
) -> None:
    """The link is the refusal (a new one is needed), and the password's fault rides along
    so that the next try does not fail on it."""
    create_user(accounts, database, "reset@example.com", password=PASSWORD)
    with pytest.raises(InvalidLink) as refused, database.transaction() as session:
        recovery.reset_password(accounts, session, "no-such-token", WEAK, CONTEXT)
    assert set(refused.value.fields) == {"password"}
