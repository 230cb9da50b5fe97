"""The credential-event table: what each event ends, checked against the promise as the README
states it (written out here, not read from the module), on the real database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from identity.accounts import operators, profile, recovery, sessions
from identity.accounts.credential_events import CredentialEvent, Current
from identity.accounts.emailed_secrets import EMAIL_CHANGE, PASSWORD_RESET
from identity.accounts.errors import InvalidLink
from identity.accounts.service import Accounts
from identity.accounts.sessions import SessionPolicy
from identity.db import Database
from identity.models import BrowserSession, RefreshToken, User, VerificationChallenge, utcnow
from identity.services import Services
from tests.accounts.conftest import (
    CONTEXT,
    OTHER_PASSWORD,
    PASSWORD,
    create_user,
    mails,
    refresh_family,
    reload,
    token_in,
)

MakeClient = Callable[..., tuple[str, str | None]]
_POLICY = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=8), https=False)
_ALL_EVENTS = list(CredentialEvent)


@dataclass
class World:
    """Everything a credential event may end, for one user."""

    user: User
    current_session: str
    other_session: str
    app: str  # the calling app's client id
    other_app: str
    access: dict[str, str]  # client id -> the jti of its family's access token


@dataclass(frozen=True)
class Left:
    """What survives an event."""

    sessions: set[str]
    families_of: set[str]
    pending_email_change: bool
    reset_link: bool
    verification_code: bool


# The promise, row by row (README "Security": what ends when credentials change).
EXPECTED = {
    CredentialEvent.PASSWORD_RESET: Left(set(), set(), False, False, True),
    CredentialEvent.PASSWORD_CHANGED: Left({"current"}, {"app"}, False, False, True),
    CredentialEvent.EMAIL_CHANGED: Left({"current"}, set(), True, False, True),
    CredentialEvent.SIGNED_OUT_EVERYWHERE: Left(set(), set(), False, True, True),
    CredentialEvent.USER_DISABLED: Left(set(), set(), False, False, False),
    CredentialEvent.USER_DELETED: Left(set(), set(), False, False, False),
}


def _session(database: Database, user: User) -> str:
    with database.transaction() as session:
        _, row = sessions.start_authenticated(
            session, None, user.id, datetime.now(UTC), _POLICY, CONTEXT, ["pwd"]
        )
        return row.id


@pytest.fixture
def world(services: Services, database: Database, make_client: MakeClient) -> World:
    accounts = services.accounts
    user = create_user(accounts, database, "ada@example.com")
    apps = [
        make_client(
            name=name,
            redirect_uris=[f"https://{name}.example.com/cb"],
            grant_types=["authorization_code", "refresh_token"],
            scope="offline_access",
        )[0]
        for name in ("app", "other")
    ]
    with database.transaction() as session:
        row = _row(session, user)
        accounts.emailed_secrets.issue(
            session,
            row,
            EMAIL_CHANGE,
            to="new@example.com",
            data={"email": "new@example.com"},
            new_email="new@example.com",
        )
        accounts.emailed_secrets.issue(session, row, PASSWORD_RESET)
        accounts.emailed_secrets.issue_code(
            session, row, password_hash=row.password_hash, name=row.name
        )
    return World(
        user=user,
        current_session=_session(database, user),
        other_session=_session(database, user),
        app=apps[0],
        other_app=apps[1],
        access={client: refresh_family(services, database, client, user) for client in apps},
    )


def _row(session: Session, user: User) -> User:
    row = session.get(User, user.id)
    assert row is not None
    return row


def _left(services: Services, database: Database, world: World) -> Left:
    names = {world.current_session: "current", world.other_session: "other"}
    clients = {world.app: "app", world.other_app: "other_app"}
    user_id, now = world.user.id, utcnow()
    with database.transaction() as session:
        live_sessions = session.scalars(
            select(BrowserSession.id).where(BrowserSession.user_id == user_id)
        ).all()
        live_families = session.scalars(
            select(RefreshToken.client_id).where(
                RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
            )
        ).all()
        codes = session.scalars(
            select(VerificationChallenge.id).where(VerificationChallenge.user_id == user_id)
        ).all()
        secrets = services.accounts.emailed_secrets
        left = Left(
            sessions={names[s] for s in live_sessions},
            families_of={clients[c] for c in live_families},
            pending_email_change=secrets.pending(session, user_id, EMAIL_CHANGE) is not None,
            reset_link=secrets.pending(session, user_id, PASSWORD_RESET) is not None,
            verification_code=bool(codes),
        )
        # Every family that ended took its access token with it.
        for client, jti in world.access.items():
            ended = clients[client] not in left.families_of
            assert services.denylist.is_revoked(jti, session) is ended, (client, now)
    return left


@pytest.mark.parametrize("event", _ALL_EVENTS, ids=[e.name.lower() for e in _ALL_EVENTS])
def test_each_credential_event_ends_what_the_table_says(
    services: Services, database: Database, world: World, event: CredentialEvent
) -> None:
    with database.transaction() as session:
        services.accounts.credentials_changed(
            session,
            _row(session, world.user),
            event,
            current=Current(browser_session_id=world.current_session, client_id=world.app),
            context=CONTEXT,
        )
    assert _left(services, database, world) == EXPECTED[event]


def test_enabling_a_disabled_user_brings_no_token_back(
    services: Services, database: Database, world: World
) -> None:
    with database.transaction() as session:
        operators.set_active(services.accounts, session, _row(session, world.user), False)
    with database.transaction() as session:
        operators.set_active(services.accounts, session, _row(session, world.user), True)
    assert _left(services, database, world) == EXPECTED[CredentialEvent.USER_DISABLED]


def test_deleting_a_user_denies_their_live_access_tokens(
    services: Services, database: Database, world: World
) -> None:
    with database.transaction() as session:
        operators.delete_user(services.accounts, session, _row(session, world.user))
    with database.transaction() as session:
        assert all(services.denylist.is_revoked(jti, session) for jti in world.access.values())


# -- the findings: each chain ends with the old link refused ------------------------------------


def _attacker_requests_email_change(accounts: Accounts, database: Database, user: User) -> str:
    """Someone who knows the password asks to move the account to their address."""
    with database.transaction() as session:
        profile.request_email_change(
            accounts, session, _row(session, user), "attacker@example.net", PASSWORD, CONTEXT
        )
    message = mails(database, "attacker@example.net", "email_change_confirm")[-1]
    return token_in(message, "/account/email/confirm")


def test_a_password_reset_kills_a_pending_email_change(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "owner@example.com")
    stolen = _attacker_requests_email_change(accounts, database, user)
    with database.transaction() as session:
        recovery.request_reset(accounts, session, user.email, CONTEXT)
    reset = token_in(mails(database, user.email, "password_reset")[-1], "/reset-password")
    with database.transaction() as session:
        recovery.reset_password(accounts, session, reset, OTHER_PASSWORD, CONTEXT)
    with pytest.raises(InvalidLink), database.transaction() as session:
        profile.confirm_email_change(accounts, session, stolen, CONTEXT)
    assert reload(database, user).email == "owner@example.com"


def test_a_password_change_kills_a_pending_email_change_and_reset_links(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "owner@example.com")
    stolen = _attacker_requests_email_change(accounts, database, user)
    with database.transaction() as session:
        recovery.request_reset(accounts, session, user.email, CONTEXT)
    reset = token_in(mails(database, user.email, "password_reset")[-1], "/reset-password")
    with database.transaction() as session:
        profile.change_password(
            accounts, session, _row(session, user), PASSWORD, OTHER_PASSWORD, CONTEXT
        )
    with pytest.raises(InvalidLink), database.transaction() as session:
        profile.confirm_email_change(accounts, session, stolen, CONTEXT)
    with pytest.raises(InvalidLink), database.transaction() as session:
        recovery.check_reset_token(accounts, session, reset)


def test_an_email_change_kills_the_reset_links_sent_to_the_old_address(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "old@example.com")
    with database.transaction() as session:
        recovery.request_reset(accounts, session, user.email, CONTEXT)
    reset = token_in(mails(database, user.email, "password_reset")[-1], "/reset-password")
    with database.transaction() as session:
        profile.request_email_change(
            accounts, session, _row(session, user), "new@example.com", PASSWORD, CONTEXT
        )
    confirm = token_in(
        mails(database, "new@example.com", "email_change_confirm")[-1], "/account/email/confirm"
    )
    with database.transaction() as session:
        profile.confirm_email_change(accounts, session, confirm, CONTEXT)
    with pytest.raises(InvalidLink), database.transaction() as session:
        recovery.reset_password(accounts, session, reset, OTHER_PASSWORD, CONTEXT)


def test_signing_out_everywhere_kills_a_pending_email_change(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "owner@example.com")
    stolen = _attacker_requests_email_change(accounts, database, user)
    with database.transaction() as session:
        profile.revoke_everything(accounts, session, _row(session, user), CONTEXT)
    with pytest.raises(InvalidLink), database.transaction() as session:
        profile.confirm_email_change(accounts, session, stolen, CONTEXT)


def test_cancelling_an_email_change_kills_its_link(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "owner@example.com")
    link = _attacker_requests_email_change(accounts, database, user)
    with database.transaction() as session:
        assert profile.cancel_email_change(accounts, session, _row(session, user), CONTEXT)
        assert not profile.cancel_email_change(accounts, session, _row(session, user), CONTEXT)
    with pytest.raises(InvalidLink), database.transaction() as session:
        profile.confirm_email_change(accounts, session, link, CONTEXT)
