"""Operator actions on accounts, called directly (``accounts.operators``): what the CLI, the
admin API and the admin console share. Each action applies the account rules that exist
and leaves an audit row naming the operator and the account."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select

from identity import repositories
from identity.accounts import factors, operators, recovery, roles, sessions
from identity.accounts.errors import InvalidInput, InvalidLink
from identity.accounts.service import Accounts
from identity.accounts.sessions import SessionPolicy
from identity.db import Database
from identity.models import (
    AuditEvent,
    BrowserSession,
    FederatedIdentity,
    OneTimeToken,
    UpstreamProvider,
    User,
    utcnow,
)
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
ACTOR = "ops-client"


def _audit(database: Database, type: str) -> list[AuditEvent]:
    with database.transaction() as session:
        query = select(AuditEvent).where(AuditEvent.type == type).order_by(AuditEvent.id)
        return list(session.scalars(query))


def _browser(database: Database, user: User, amr: list[str]) -> BrowserSession:
    with database.transaction() as session:
        _, row = sessions.start_authenticated(
            session, None, user.id, datetime.now(UTC), _POLICY, CONTEXT, amr
        )
        return row


def _act(database: Database, user: User, action: Callable[..., object], *args: object) -> object:
    """Run an acting function on a fresh copy of ``user`` in its own transaction."""
    with database.transaction() as session:
        row = session.get(User, user.id)
        assert row is not None
        return action(session, row, *args)


# -- creating ------------------------------------------------------------------------------------


def test_a_created_user_is_verified_and_audited_with_its_operator(
    accounts: Accounts, database: Database
) -> None:
    with database.transaction() as session:
        user = operators.create_user(
            accounts,
            session,
            email=" Grace@Example.COM ",
            name="Grace",
            password=PASSWORD,
            actor=ACTOR,
            context=CONTEXT,
        )
    fresh = reload(database, user)
    assert (fresh.email, fresh.email_verified, fresh.is_active) == ("grace@example.com", True, True)
    assert accounts.hasher.verify(fresh.password_hash or "", PASSWORD)
    [created] = _audit(database, "user.created")
    assert (created.actor, created.subject, created.ip) == (ACTOR, str(user.id), CONTEXT.ip)
    assert created.detail == {"invited": False}
    assert mails(database, "grace@example.com") == []  # no signup mail


def test_the_command_line_call_still_works_and_records_admin(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "cli@example.com", verified=False)
    assert not reload(database, user).email_verified
    [created] = _audit(database, "user.created")
    assert created.actor == "admin" and created.user_agent == "identity-cli"


def test_an_invited_user_sets_a_password_with_the_mailed_link_which_verifies_them(
    accounts: Accounts, database: Database
) -> None:
    with database.transaction() as session:
        user = operators.create_user(
            accounts, session, email="new@example.com", name="New", invite=True, actor=ACTOR
        )
    fresh = reload(database, user)
    assert fresh.password_hash is None and not fresh.email_verified
    [mail] = mails(database, "new@example.com", "invitation")
    assert "72 hours" in mail.text_body and "New" not in mail.text_body  # no chosen text
    token = token_in(mail, "/reset-password")
    with database.transaction() as session:
        [row] = session.scalars(select(OneTimeToken).where(OneTimeToken.user_id == user.id))
        lifetime = row.expires_at - utcnow()
        assert timedelta(hours=71) < lifetime <= timedelta(hours=72)
    with database.transaction() as session:
        recovery.reset_password(accounts, session, token, OTHER_PASSWORD, CONTEXT)
    fresh = reload(database, user)
    assert fresh.email_verified and accounts.hasher.verify(
        fresh.password_hash or "", OTHER_PASSWORD
    )
    # The link works once.
    with database.transaction() as session, pytest.raises(InvalidLink):
        recovery.reset_password(accounts, session, token, PASSWORD, CONTEXT)


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"password": PASSWORD, "invite": True}, {"password"}),
        ({}, {"password"}),
        ({"password": "short"}, {"password"}),
        ({"password": PASSWORD, "email": "not an address"}, {"email"}),
        ({"password": PASSWORD, "name": "  "}, {"name"}),
        ({"email": "nope", "name": "", "invite": True}, {"email", "name"}),
    ],
)
def test_create_refuses_bad_input_naming_every_field(
    accounts: Accounts, database: Database, fields: dict[str, object], refused: set[str]
) -> None:
    values: dict[str, object] = {"email": "x@example.com", "name": "X", **fields}
    with database.transaction() as session, pytest.raises(InvalidInput) as caught:
        operators.create_user(accounts, session, **values)  # type: ignore[arg-type]
    assert set(caught.value.fields) == refused


def test_create_refuses_a_taken_address(accounts: Accounts, database: Database) -> None:
    create_user(accounts, database, "taken@example.com")
    with database.transaction() as session, pytest.raises(InvalidInput) as caught:
        operators.create_user(accounts, session, email="TAKEN@example.com", name="T", invite=True)
    assert set(caught.value.fields) == {"email"}
    assert mails(database, "taken@example.com", "invitation") == []


# -- searching -----------------------------------------------------------------------------------


def _search(database: Database, **filters: object) -> tuple[list[str], str | None]:
    with database.transaction() as session:
        users, cursor = operators.search_users(session, **filters)  # type: ignore[arg-type]
        return [user.email for user in users], cursor


def test_search_pages_by_email_with_an_opaque_cursor(
    accounts: Accounts, database: Database
) -> None:
    emails = [f"user{n}@example.com" for n in (5, 3, 9, 1, 7, 2, 8)]
    for email in emails:
        create_user(accounts, database, email)
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = _search(database, cursor=cursor, limit=3)
        assert len(page) <= 3
        seen += page
        if cursor is None:
            break
        assert "@" not in cursor  # opaque: base64url
    assert seen == sorted(emails)


def test_the_email_prefix_is_matched_literally(accounts: Accounts, database: Database) -> None:
    for email in ("a_b@example.com", "axb@example.com", "a%c@example.com", "abc@example.com"):
        create_user(accounts, database, email)
    assert _search(database, email_prefix="a_")[0] == ["a_b@example.com"]
    assert _search(database, email_prefix="a%")[0] == ["a%c@example.com"]
    assert _search(database, email_prefix=" A")[0] == sorted(
        ["a_b@example.com", "axb@example.com", "a%c@example.com", "abc@example.com"]
    )
    assert _search(database, email_prefix="b")[0] == []


def test_status_filters_partition_the_accounts(accounts: Accounts, database: Database) -> None:
    create_user(accounts, database, "on@example.com")
    create_user(accounts, database, "pending@example.com", verified=False)
    off = create_user(accounts, database, "off@example.com")
    _act(database, off, lambda s, u: operators.set_active(accounts, s, u, False))
    assert _search(database, status="active")[0] == ["on@example.com"]
    assert _search(database, status="unverified")[0] == ["pending@example.com"]
    assert _search(database, status="disabled")[0] == ["off@example.com"]


@pytest.mark.parametrize("cursor", ["!!!", "e30", "WyJhIl0", "WyJhIiwibm90LWEtdXVpZCJd"])
def test_a_cursor_that_is_not_ours_is_invalid_input(database: Database, cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _search(database, cursor=cursor)
    assert set(caught.value.fields) == {"cursor"}


# -- acting --------------------------------------------------------------------------------------


def test_rename_follows_the_profile_rule_and_is_audited(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "ada@example.com")
    with database.transaction() as session, pytest.raises(InvalidInput):
        operators.rename_user(accounts, session, session.get_one(User, user.id), "a\x07b")
    _act(
        database,
        user,
        lambda s, u: operators.rename_user(accounts, s, u, "  Ada L. ", actor=ACTOR),
    )
    assert reload(database, user).name == "Ada L."
    [renamed] = _audit(database, "profile.updated")
    assert (renamed.actor, renamed.subject) == (ACTOR, str(user.id))


def test_send_reset_is_the_forgotten_password_mail(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "ada@example.com")
    _act(database, user, lambda s, u: operators.send_reset(accounts, s, u, actor=ACTOR))
    token = token_in(mails(database, "ada@example.com", "password_reset")[-1], "/reset-password")
    assert [e.subject for e in _audit(database, "password.reset_requested")] == [str(user.id)]
    [sent] = _audit(database, "password.reset_sent")
    assert (sent.actor, sent.subject) == (ACTOR, str(user.id))
    with database.transaction() as session:
        recovery.check_reset_token(accounts, session, token)


def test_send_reset_refuses_a_disabled_account(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "ada@example.com")
    _act(database, user, lambda s, u: operators.set_active(accounts, s, u, False))
    with pytest.raises(operators.AccountDisabled):
        _act(database, user, lambda s, u: operators.send_reset(accounts, s, u))
    assert mails(database, "ada@example.com", "password_reset") == []


@pytest.fixture
def app_id(make_client: MakeClient) -> str:
    return make_client(
        name="Notes",
        redirect_uris=["https://notes.example.com/cb"],
        grant_types=["authorization_code", "refresh_token"],
        scope="offline_access",
    )[0]


@pytest.mark.parametrize("action", ["end_sessions", "disable"])
def test_ending_sessions_and_disabling_end_everything_the_owner_signed_in(
    services: Services, database: Database, app_id: str, action: str
) -> None:
    accounts = services.accounts
    user = create_user(accounts, database, "ada@example.com")
    _browser(database, user, ["pwd"])
    jti = refresh_family(services, database, app_id, user)
    if action == "disable":
        _act(database, user, lambda s, u: operators.set_active(accounts, s, u, False, actor=ACTOR))
    else:
        _act(database, user, lambda s, u: operators.end_sessions(accounts, s, u, actor=ACTOR))
    with database.transaction() as session:
        assert repositories.list_user_sessions(session, user.id, utcnow()) == []
        assert repositories.live_refresh_families(session, user.id, None, utcnow()) == []
        assert services.denylist.is_revoked(jti, session)
    [row] = _audit(database, "user.disabled" if action == "disable" else "session.revoked_all")
    assert (row.actor, row.subject) == (ACTOR, str(user.id))


def test_reset_mfa_removes_every_factor_once(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "ada@example.com")
    assert _act(database, user, lambda s, u: operators.reset_mfa(accounts, s, u)) is False
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get_one(User, user.id))
    with database.transaction() as session:
        factors.confirm_totp(
            accounts,
            session,
            session.get_one(User, user.id),
            pyotp.TOTP(setup.secret).now(),
            CONTEXT,
            authenticated_at=accounts.now(),
        )
    reset = _act(database, user, lambda s, u: operators.reset_mfa(accounts, s, u, actor=ACTOR))
    assert reset is True
    with database.transaction() as session:
        summary = factors.summary(session, session.get_one(User, user.id))
        assert not summary.any and summary.recovery_codes_left == 0
    [row] = _audit(database, "mfa.reset")
    assert (row.actor, row.subject) == (ACTOR, str(user.id))
    assert len(mails(database, "ada@example.com", "second_factor_removed")) == 1
    assert _act(database, user, lambda s, u: operators.reset_mfa(accounts, s, u)) is False


# -- reading -------------------------------------------------------------------------------------


def test_user_detail_shows_factors_links_sessions_apps_and_roles_but_no_secret(
    services: Services, database: Database, app_id: str
) -> None:
    accounts = services.accounts
    user = create_user(accounts, database, "ada@example.com")
    browser = _browser(database, user, ["pwd"])
    refresh_family(services, database, app_id, user)
    with database.transaction() as session:
        session.add(
            UpstreamProvider(
                name="corp",
                kind="oidc",
                issuer="https://corp.example.com",
                client_id="identity",
                client_secret_sealed="sealed",
                scope="openid email",
                label="Corp",
            )
        )
        session.flush()
        session.add(
            FederatedIdentity(
                provider="corp", subject="u-1", user_id=user.id, email="ada@corp.example.com"
            )
        )
        roles.add_role(
            session, session.get_one(User, user.id), "app1:editor", actor=ACTOR, context=CONTEXT
        )
    with database.transaction() as session:
        detail = operators.user_detail(session, session.get_one(User, user.id))
    assert detail["email"] == "ada@example.com" and detail["roles"] == ["app1:editor"]
    assert detail["factors"] == {
        "totp": False,
        "passkeys": {"count": 0, "names": []},
        "recovery_codes_left": 0,
    }
    assert [(p["provider"], p["email"]) for p in detail["providers"]] == [
        ("corp", "ada@corp.example.com")
    ]
    [seen] = detail["sessions"]
    assert seen["id"] == browser.public_id and seen["ip"] == CONTEXT.ip
    assert browser.csrf_token not in str(detail) and browser.id not in str(detail)
    [app] = detail["app_sessions"]
    assert (app["client_id"], app["client_name"]) == (app_id, "Notes")
    assert app["created_at"] and app["last_used_at"]


# -- who may operate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "amr", "active", "allowed"),
    [
        ("admin", ["pwd", "otp", "mfa"], True, True),
        ("admin", ["pwd"], True, False),  # no second factor in this sign-in
        ("app1:admin", ["pwd", "otp", "mfa"], True, False),  # another role
        (None, ["pwd", "otp", "mfa"], True, False),
        ("admin", ["pwd", "otp", "mfa"], False, False),  # disabled
    ],
)
def test_is_console_admin_needs_the_role_and_a_second_factor(
    accounts: Accounts,
    database: Database,
    role: str | None,
    amr: list[str],
    active: bool,
    allowed: bool,
) -> None:
    user = create_user(accounts, database, "root@example.com")
    if role is not None:
        with database.transaction() as session:
            roles.add_role(
                session, session.get_one(User, user.id), role, actor=ACTOR, context=CONTEXT
            )
    browser = _browser(database, user, amr)
    with database.transaction() as session:
        session.get_one(User, user.id).is_active = active
    with database.transaction() as session:
        row = session.get_one(BrowserSession, browser.id)
        assert operators.is_console_admin(session, row) is allowed


def test_an_anonymous_session_is_no_console_admin(accounts: Accounts, database: Database) -> None:
    with database.transaction() as session:
        _, row = sessions.start_anonymous(session, datetime.now(UTC), CONTEXT)
        row.amr = ["mfa"]
        assert operators.is_console_admin(session, row) is False


def test_find_user_by_id_or_email(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "ada@example.com")
    with database.transaction() as session:
        assert operators.find_user(session, "ADA@example.com").id == user.id
        assert operators.find_user(session, str(user.id)).id == user.id
        for missing in (str(uuid.uuid4()), "nobody@example.com", "not-a-uuid", "@@"):
            with pytest.raises(LookupError):
                operators.find_user(session, missing)


def test_a_creation_racing_another_for_the_address_gets_the_field_error(
    accounts: Accounts, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check found the address free, but another request took it before the insert:
    the unique index decides, and the answer is the same field error."""
    create_user(accounts, database, "race@example.com")
    monkeypatch.setattr(repositories, "get_user_by_email", lambda *args, **kwargs: None)
    with database.transaction() as session:
        with pytest.raises(InvalidInput) as caught:
            operators.create_user(
                accounts, session, email="race@example.com", name="R", password=PASSWORD
            )
        # The transaction is still usable after the refusal (a savepoint took the error).
        assert session.scalar(select(User.email).where(User.email == "race@example.com"))
    assert set(caught.value.fields) == {"email"}
