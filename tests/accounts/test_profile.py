"""Self-service changes, called directly: email change, password change, name, sessions and
consents."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from identity import repositories
from identity.accounts import profile, sessions
from identity.accounts.credential_events import Current
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
_CONFIRM = "/account/email/confirm"


@pytest.fixture
def user(accounts: Accounts, database: Database) -> User:
    return create_user(accounts, database, "ada@example.com")


def _attached(session: Session, user: User) -> User:
    """``user`` as a row of ``session``, so that changes to it are written."""
    row = session.get(User, user.id)
    assert row is not None
    return row


def _request_change(
    accounts: Accounts,
    database: Database,
    user: User,
    new_email: str = "new@example.com",
    password: str = PASSWORD,
) -> str:
    with database.transaction() as session:
        return profile.request_email_change(
            accounts, session, _attached(session, user), new_email, password, CONTEXT
        )


def _change_token(database: Database, new_email: str = "new@example.com", index: int = -1) -> str:
    return token_in(mails(database, new_email, "email_change_confirm")[index], _CONFIRM)


def _confirm(accounts: Accounts, database: Database, token: str) -> User:
    with database.transaction() as session:
        return profile.confirm_email_change(accounts, session, token, CONTEXT)


def _start_session(database: Database, user: User) -> BrowserSession:
    with database.transaction() as session:
        _, row = sessions.start_authenticated(
            session, None, user.id, datetime.now(UTC), _POLICY, CONTEXT, ["pwd"]
        )
        return row


def _session_ids(database: Database) -> set[str]:
    with database.transaction() as session:
        return set(session.scalars(select(BrowserSession.id)).all())


# -- email change ---------------------------------------------------------------------------


def test_an_email_change_link_changes_the_email_and_the_old_address_is_told(
    accounts: Accounts, database: Database, user: User
) -> None:
    assert _request_change(accounts, database, user, " New@Example.com ") == "new@example.com"
    notice = mails(database, "ada@example.com", "email_change_notice")
    assert len(notice) == 1 and "new@example.com" in notice[0].text_body
    assert "1440 minutes" in mails(database, "new@example.com")[0].text_body
    changed = _confirm(accounts, database, _change_token(database))
    fresh = reload(database, changed)
    assert fresh.email == "new@example.com" and fresh.email_verified
    assert "email.changed" in audit_types(database, user)


def test_an_email_change_needs_the_current_password(
    accounts: Accounts, database: Database, user: User
) -> None:
    with pytest.raises(InvalidInput) as refused:
        _request_change(accounts, database, user, password=OTHER_PASSWORD)
    assert "email_password" in refused.value.fields
    assert mails(database, "new@example.com") == [] and mails(database, user.email) == []


def test_an_email_change_link_is_single_use(
    accounts: Accounts, database: Database, user: User
) -> None:
    _request_change(accounts, database, user)
    token = _change_token(database)
    _confirm(accounts, database, token)
    with pytest.raises(InvalidLink):
        _confirm(accounts, database, token)


def test_a_new_email_change_request_voids_the_pending_one(
    accounts: Accounts, database: Database, user: User
) -> None:
    _request_change(accounts, database, user, "first@example.com")
    first = _change_token(database, "first@example.com")
    _request_change(accounts, database, user, "second@example.com")
    with pytest.raises(InvalidLink):
        _confirm(accounts, database, first)
    assert _confirm(accounts, database, _change_token(database, "second@example.com")).email == (
        "second@example.com"
    )


def test_an_email_change_to_a_taken_address_mails_it_nothing_but_answers_the_same(
    accounts: Accounts, database: Database, user: User
) -> None:
    create_user(accounts, database, "taken@example.com")
    assert _request_change(accounts, database, user, "taken@example.com") == "taken@example.com"
    assert mails(database, "taken@example.com") == []
    assert [m.template for m in mails(database, "ada@example.com")] == ["email_change_notice"]


def test_an_email_change_to_a_taken_address_still_voids_the_pending_one(
    accounts: Accounts, database: Database, user: User
) -> None:
    create_user(accounts, database, "taken@example.com")
    _request_change(accounts, database, user)
    pending = _change_token(database)
    _request_change(accounts, database, user, "taken@example.com")
    with pytest.raises(InvalidLink):
        _confirm(accounts, database, pending)


def test_an_email_change_link_is_refused_once_the_address_is_taken(
    accounts: Accounts, database: Database, user: User
) -> None:
    _request_change(accounts, database, user)
    token = _change_token(database)
    create_user(accounts, database, "new@example.com")
    with pytest.raises(InvalidLink):
        _confirm(accounts, database, token)
    assert reload(database, user).email == "ada@example.com"


def test_an_email_change_link_lives_a_day(
    database: Database, user: User, clock: Clock, accounts_on: Callable[[Clock], Accounts]
) -> None:
    timed = accounts_on(clock)
    _request_change(timed, database, user)
    token = _change_token(database)
    clock.advance(timedelta(hours=24))
    with pytest.raises(InvalidLink):
        _confirm(timed, database, token)
    clock.advance(timedelta(seconds=-1))
    assert _confirm(timed, database, token).email == "new@example.com"


def test_confirming_an_email_change_ends_every_session(
    accounts: Accounts, database: Database, user: User
) -> None:
    _start_session(database, user)
    _request_change(accounts, database, user)
    _confirm(accounts, database, _change_token(database))
    assert _session_ids(database) == set()


def test_the_pending_email_is_shown_until_it_is_confirmed(
    accounts: Accounts, database: Database, user: User
) -> None:
    with database.transaction() as session:
        assert profile.pending_email(accounts, session, user) is None
    _request_change(accounts, database, user)
    with database.transaction() as session:
        assert profile.pending_email(accounts, session, user) == "new@example.com"
    _confirm(accounts, database, _change_token(database))
    with database.transaction() as session:
        assert profile.pending_email(accounts, session, user) is None


# -- password and name ----------------------------------------------------------------------


def test_changing_the_password_ends_the_other_sessions_but_keeps_the_current_one(
    accounts: Accounts, database: Database, user: User
) -> None:
    current, other = _start_session(database, user), _start_session(database, user)
    with database.transaction() as session:
        profile.change_password(
            accounts,
            session,
            _attached(session, user),
            PASSWORD,
            OTHER_PASSWORD,
            CONTEXT,
            keep=Current(browser_session_id=current.id),
        )
    assert _session_ids(database) == {current.id} != {other.id}
    with database.transaction() as session:
        accounts.authenticate(session, user.email, OTHER_PASSWORD, CONTEXT)
    assert mails(database, user.email)[-1].template == "password_changed"


def test_changing_the_password_needs_the_current_one(
    accounts: Accounts, database: Database, user: User
) -> None:
    with pytest.raises(InvalidInput) as refused, database.transaction() as session:
        profile.change_password(
            accounts, session, _attached(session, user), OTHER_PASSWORD, OTHER_PASSWORD, CONTEXT
        )
    assert "current_password" in refused.value.fields
    with pytest.raises(InvalidCredentials), database.transaction() as session:
        accounts.authenticate(session, user.email, OTHER_PASSWORD, CONTEXT)


def test_a_new_name_is_stored_normalised(database: Database, user: User) -> None:
    fullwidth_a = "\uff21"  # NFKC folds it to "A"
    with database.transaction() as session:
        profile.change_name(
            session, _attached(session, user), f"  {fullwidth_a}da Lovelace ", CONTEXT
        )
    assert reload(database, user).name == "Ada Lovelace"


def test_a_name_with_a_control_character_is_refused(database: Database, user: User) -> None:
    with pytest.raises(InvalidInput), database.transaction() as session:
        profile.change_name(session, _attached(session, user), "Ada\x07", CONTEXT)
    assert reload(database, user).name == "Ada"


# -- sessions and consents ------------------------------------------------------------------


def test_the_session_list_marks_the_current_session(
    accounts: Accounts, database: Database, user: User
) -> None:
    current, other = _start_session(database, user), _start_session(database, user)
    with database.transaction() as session:
        views = profile.list_sessions(accounts, session, user, current)
    marked = {view.public_id: view.current for view in views}
    assert marked == {current.public_id: True, other.public_id: False}


def test_revoking_another_users_session_is_refused(
    accounts: Accounts, database: Database, user: User
) -> None:
    theirs = _start_session(database, create_user(accounts, database, "eve@example.com"))
    with pytest.raises(LookupError), database.transaction() as session:
        profile.revoke_session(session, user, theirs.public_id, CONTEXT)
    assert _session_ids(database) == {theirs.id}


def test_signing_out_everywhere_ends_every_session(
    accounts: Accounts, database: Database, user: User
) -> None:
    _start_session(database, user)
    _start_session(database, user)
    with database.transaction() as session:
        profile.revoke_everything(accounts, session, user, CONTEXT)
    assert _session_ids(database) == set()


def test_revoking_a_consent_removes_it_and_an_unknown_one_is_refused(
    accounts: Accounts,
    database: Database,
    user: User,
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    client_id, _ = make_client(redirect_uris=["https://app.example.com/callback"])
    with database.transaction() as session:
        repositories.save_consent(session, user.id, client_id, "openid email")
    with database.transaction() as session:
        assert [c.client_id for c in profile.list_consents(session, user)] == [client_id]
        profile.revoke_consent(accounts, session, user, client_id, CONTEXT)
    with database.transaction() as session:
        assert profile.list_consents(session, user) == []
    with pytest.raises(LookupError), database.transaction() as session:
        profile.revoke_consent(accounts, session, user, client_id, CONTEXT)
