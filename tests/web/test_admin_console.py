"""The admin console (``/admin``) through HTTP: who gets in (anonymous visitors sign in and
come back, users without the role get 403, administrators show a second factor), every
action with its audit row (actor: the administrator, subject: the target), CSRF, a client
secret shown once, and bad input answered with the form and a message."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity import audit
from identity.accounts import factors, operators, roles
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, BrowserSession, Client, User
from tests.conftest import MailSink, remember_secret
from tests.web_helpers import PASSWORD, Browser, csrf_of, set_up_authenticator, totp_code

ADMIN = "root@example.com"
ALICE = "alice@example.com"
_CLI = RequestContext.command_line()
_SECRET_FIELD = re.compile(r'id="client-secret"[^>]*>([^<]+)</textarea>')


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
    tmp_path: Path,
) -> TestClient:
    """The app, mailing to the sink, with a key folder of its own (a test rotates it)."""
    settings = settings_for(
        smtp_url=mail_sink.url, keys_dir=tmp_path / "own-keys", cache_check_seconds=0
    )
    return app_for(settings)


def _accounts(http: TestClient) -> Any:
    return http.app.state.accounts  # type: ignore[attr-defined]


def _make_user(http: TestClient, database: Database, email: str, *, admin: bool = False) -> User:
    with database.transaction() as session:
        user = operators.create_user(
            _accounts(http), session, email=email, name="Someone", password=PASSWORD
        )
        if admin:
            roles.add_role(session, user, "admin", actor="admin", context=_CLI)
        return user


def _enrol(http: TestClient, database: Database, user: User) -> pyotp.TOTP:
    """An authenticator app for ``user``, confirmed with the previous step's code (so the
    current and the next step's codes are left for the test)."""
    accounts = _accounts(http)
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get(User, user.id))
    totp = pyotp.TOTP(setup.secret)
    remember_secret(setup.secret)
    with database.transaction() as session:
        factors.confirm_totp(
            accounts,
            session,
            session.get(User, user.id),
            totp_code(totp, -1),
            _CLI,
            authenticated_at=accounts.now(),
        )
    return totp


def _another_browser(http: TestClient) -> Browser:
    """A browser of its own (no cookie shared) on the same app."""
    return Browser(TestClient(http.app, base_url=str(http.base_url)))


def _second_step(browser: Browser, code: str) -> Any:
    return browser.submit("/login/two-factor", code=code)


@pytest.fixture
def admin(http: TestClient, database: Database) -> tuple[User, pyotp.TOTP]:
    user = _make_user(http, database, ADMIN, admin=True)
    return user, _enrol(http, database, user)


@pytest.fixture
def console(http: TestClient, admin: tuple[User, pyotp.TOTP]) -> Browser:
    """A browser signed in as the administrator with password and authenticator app."""
    browser = Browser(http)
    assert browser.login(ADMIN, next="/admin").headers["location"] == "/login/two-factor"
    done = _second_step(browser, totp_code(admin[1]))
    assert done.status_code == 303 and done.headers["location"] == "/admin", done.text
    return browser


@pytest.fixture
def alice(http: TestClient, database: Database) -> User:
    return _make_user(http, database, ALICE)


def _events(database: Database, type: str) -> list[AuditEvent]:
    with database.transaction() as session:
        query = select(AuditEvent).where(AuditEvent.type == type).order_by(AuditEvent.id)
        return list(session.scalars(query))


def _assert_audited(database: Database, type: str, admin: User, subject: str) -> None:
    rows = _events(database, type)
    assert rows, f"no {type} event"
    assert (rows[-1].actor, rows[-1].subject) == (str(admin.id), subject)


def _user(database: Database, user_id: uuid.UUID) -> User | None:
    with database.transaction() as session:
        return session.get(User, user_id)


def _act(console: Browser, page: str, action: str | None = None, **fields: str) -> Any:
    """POST a form of ``page`` as the console does; follow it to the page it lands on."""
    response = console.submit(page, action, **fields)
    assert response.status_code == 303, response.text
    return console.http.get(response.headers["location"])


def _notice(page: str) -> str:
    match = re.search(r'<div class="notice" role="status">.*?<p>(.*?)</p>', page, re.S)
    return unescape(match.group(1)) if match else ""


# -- who gets in ---------------------------------------------------------------------------


def test_an_anonymous_visit_signs_in_and_comes_back_to_the_page(
    http: TestClient, admin: tuple[User, pyotp.TOTP]
) -> None:
    for path in ("/admin", "/admin/users?q=al", "/admin/clients", "/admin/keys", "/admin/audit"):
        response = http.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=" + quote(path, safe="")
    browser = Browser(http)
    login_page = http.get("/login?next=" + quote("/admin/users?q=al", safe=""))
    assert 'name="next" value="/admin/users?q=al"' in login_page.text
    assert browser.login(ADMIN, next="/admin/users?q=al").headers["location"] == "/login/two-factor"
    done = _second_step(browser, totp_code(admin[1]))
    assert done.headers["location"] == "/admin/users?q=al"
    assert http.get("/admin/users?q=al").status_code == 200


def test_a_user_without_the_admin_role_gets_a_friendly_403(
    http: TestClient, database: Database, alice: User
) -> None:
    browser = Browser(http)
    assert browser.login(ALICE).headers["location"] == "/account"
    for path in ("/admin", f"/admin/users/{alice.id}", "/admin/clients", "/admin/audit"):
        page = http.get(path, follow_redirects=False)
        assert page.status_code == 403
        assert "This page is for administrators" in page.text
    # Nor can the forms be used: the CSRF token is right, the role is missing.
    token = csrf_of(http.get("/account").text)
    refused = http.post(
        f"/admin/users/{alice.id}/roles", data={"csrf_token": token, "role": "admin"}
    )
    assert refused.status_code == 403
    with database.transaction() as session:
        assert roles.roles_of(session, session.get(User, alice.id)) == []


def test_an_administrator_without_a_second_factor_is_sent_to_set_one_up(
    http: TestClient, database: Database
) -> None:
    _make_user(http, database, ADMIN, admin=True)
    browser = Browser(http)
    assert browser.login(ADMIN).headers["location"] == "/account"
    page = http.get("/admin/users", follow_redirects=False)
    assert page.status_code == 403
    assert "Set up a second factor first" in page.text
    assert 'href="/account/two-factor/setup?next=%2Fadmin%2Fusers"' in page.text
    # Setting the app up counts as this session's second factor, and leads back.
    set_up_authenticator(browser, next="/admin/users")
    assert http.get("/admin/users", follow_redirects=False).status_code == 200


def test_an_administrator_signed_in_with_the_password_alone_steps_up(
    http: TestClient, database: Database
) -> None:
    user = _make_user(http, database, ADMIN, admin=True)
    browser = Browser(http)
    assert browser.login(ADMIN).headers["location"] == "/account"
    totp = _enrol(http, database, user)  # added elsewhere after this browser signed in
    page = http.get("/admin/audit?type=user.", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login/two-factor?next=%2Fadmin%2Faudit%3Ftype%3Duser."
    done = browser.submit(
        page.headers["location"], code=totp_code(totp), next="/admin/audit?type=user."
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/audit?type=user."
    assert http.get("/admin/audit?type=user.").status_code == 200
    with database.transaction() as session:
        amr = session.scalars(select(BrowserSession.amr).where(BrowserSession.user_id == user.id))
        assert "mfa" in next(iter(amr))


def test_a_disabled_administrator_is_out_at_once(
    http: TestClient, database: Database, console: Browser, admin: tuple[User, pyotp.TOTP]
) -> None:
    with database.transaction() as session:
        operators.set_active(_accounts(http), session, session.get(User, admin[0].id), False)
    assert http.get("/admin", follow_redirects=False).headers["location"] == "/login?next=%2Fadmin"


def test_the_overview_links_every_section_and_only_admin_pages_load_their_css(
    http: TestClient, console: Browser
) -> None:
    page = http.get("/admin").text
    for path in ("/admin/users", "/admin/clients", "/admin/keys", "/admin/audit"):
        assert f'href="{path}"' in page
    assert "/static/admin.css" in page
    assert "/static/admin.css" not in http.get("/account").text
    assert http.get("/static/admin.css").status_code == 200


# -- users ---------------------------------------------------------------------------------


def test_the_search_finds_by_email_prefix_and_status_and_pages_on(
    http: TestClient, database: Database, console: Browser
) -> None:
    with database.transaction() as session:
        for number in range(27):
            session.add(User(email=f"user{number:02d}@example.org", name="", email_verified=True))
        session.add(User(email="zed@example.org", email_verified=True, is_active=False))
    first = http.get("/admin/users?q=USER")
    assert first.status_code == 200
    assert "user00@example.org" in first.text and "user24@example.org" in first.text
    assert "user25@example.org" not in first.text and "zed@" not in first.text
    more = re.search(r'href="(/admin/users\?[^"]+)" rel="next"', first.text)
    assert more is not None
    second = http.get(unescape(more.group(1)))
    assert "user25@example.org" in second.text and "user26@example.org" in second.text
    assert "user00@example.org" not in second.text
    disabled = http.get("/admin/users?status=disabled")
    assert "zed@example.org" in disabled.text and "user00@" not in disabled.text
    listed = _events(database, "admin.users_listed")
    assert listed[0].detail == {"email": "USER", "status": None, "cursor": False}


def test_the_search_refuses_a_bad_status_or_page_link_with_a_message(
    http: TestClient, console: Browser
) -> None:
    bad_status = http.get("/admin/users?status=deleted")
    assert bad_status.status_code == 400
    assert "Choose a status from the list." in bad_status.text
    bad_cursor = http.get("/admin/users?cursor=not-ours")
    assert bad_cursor.status_code == 400
    assert "That page link doesn&#39;t work. Search again." in bad_cursor.text


def test_the_user_page_shows_the_account_and_its_reading_is_audited(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    alice: User,
) -> None:
    with database.transaction() as session:
        roles.add_role(session, session.get(User, alice.id), "app1:editor", actor="a", context=_CLI)
    _another_browser(http).login(ALICE)  # a session of hers
    page = http.get(f"/admin/users/{alice.id}")
    assert page.status_code == 200
    for text in (ALICE, str(alice.id), "app1:editor", "Browser sessions", "App sessions"):
        assert text in page.text
    _assert_audited(database, "admin.user_viewed", admin[0], str(alice.id))
    assert http.get(f"/admin/users/{uuid.uuid4()}").status_code == 404
    assert http.get("/admin/users/not-an-id").status_code == 404


@pytest.mark.parametrize(
    ("action", "fields", "event", "notice"),
    [
        ("disable", {}, "user.disabled", "Disabled alice@example.com"),
        (
            "send-reset",
            {},
            "password.reset_sent",
            "Sent a password reset link to alice@example.com",
        ),
        (
            "end-sessions",
            {},
            "session.revoked_all",
            "Signed alice@example.com out of every browser and app",
        ),
        ("name", {"name": "Alice Liddell"}, "profile.updated", "Renamed alice@example.com"),
        (
            "roles",
            {"role": "app1:editor"},
            "user.role_added",
            "Gave alice@example.com the role app1:editor",
        ),
    ],
)
def test_each_action_is_applied_confirmed_and_audited_with_the_administrator_as_actor(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    alice: User,
    action: str,
    fields: dict[str, str],
    event: str,
    notice: str,
) -> None:
    page = f"/admin/users/{alice.id}"
    landed = _act(console, page, f"{page}/{action}", **fields)
    assert landed.status_code == 200
    assert _notice(landed.text) == notice
    _assert_audited(database, event, admin[0], str(alice.id))


def test_disabling_ends_the_sessions_and_enabling_lets_the_person_in_again(
    http: TestClient, database: Database, console: Browser, alice: User
) -> None:
    hers = _another_browser(http)
    assert hers.login(ALICE).headers["location"] == "/account"
    page = f"/admin/users/{alice.id}"
    _act(console, page, f"{page}/disable")
    assert hers.http.get("/account", follow_redirects=False).status_code == 303
    assert hers.login(ALICE).status_code == 400
    landed = _act(console, page, f"{page}/enable")
    assert _notice(landed.text) == "Enabled alice@example.com"
    assert hers.login(ALICE).headers["location"] == "/account"


def test_a_reset_link_is_mailed_and_a_disabled_account_gets_none(
    http: TestClient, database: Database, console: Browser, alice: User, mail_sink: MailSink
) -> None:
    page = f"/admin/users/{alice.id}"
    _act(console, page, f"{page}/send-reset")
    assert "/reset-password?token=" in MailSink.text(mail_sink.wait_for(ALICE)[0])
    _act(console, page, f"{page}/disable")
    refused = console.submit(page, f"{page}/send-reset")
    assert refused.status_code == 400
    assert "The account is disabled: enable it first." in refused.text


def test_resetting_second_factors_removes_them_and_says_when_there_were_none(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    alice: User,
) -> None:
    page = f"/admin/users/{alice.id}"
    none = _act(console, page, f"{page}/reset-mfa")
    assert _notice(none.text) == "alice@example.com had no second factor to remove"
    _enrol(http, database, alice)
    done = _act(console, page, f"{page}/reset-mfa")
    assert _notice(done.text) == "Removed the second factors of alice@example.com"
    _assert_audited(database, "mfa.reset", admin[0], str(alice.id))
    with database.transaction() as session:
        assert not factors.has_second_factor(session, session.get(User, alice.id))


def test_roles_are_added_and_removed_and_a_bad_name_is_explained(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    alice: User,
) -> None:
    page = f"/admin/users/{alice.id}"
    _act(console, page, f"{page}/roles", role="admin")
    again = _act(console, page, f"{page}/roles", role="admin")
    assert _notice(again.text) == "alice@example.com already has the role admin"
    removed = _act(console, page, f"{page}/roles/remove", role="admin")
    assert _notice(removed.text) == "Took the role admin from alice@example.com"
    _assert_audited(database, "user.role_removed", admin[0], str(alice.id))
    refused = console.submit(page, f"{page}/roles", role="not a role!")
    assert refused.status_code == 400
    assert "A role is 1 to 100 characters" in refused.text
    assert 'value="not a role!"' in refused.text  # what was typed, to correct
    with database.transaction() as session:
        assert roles.roles_of(session, session.get(User, alice.id)) == []


def test_deleting_asks_first_then_deletes_and_audits(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    alice: User,
) -> None:
    confirm = http.get(f"/admin/users/{alice.id}/delete")
    assert confirm.status_code == 200 and "Delete alice@example.com?" in confirm.text
    assert _user(database, alice.id) is not None  # the GET changed nothing
    landed = _act(console, f"/admin/users/{alice.id}/delete", f"/admin/users/{alice.id}/delete")
    assert _notice(landed.text) == "Deleted alice@example.com"
    assert _user(database, alice.id) is None
    _assert_audited(database, "user.deleted", admin[0], str(alice.id))


def test_a_form_without_the_right_csrf_token_changes_nothing(
    http: TestClient, database: Database, console: Browser, alice: User
) -> None:
    for token in ("", "forged"):
        response = http.post(f"/admin/users/{alice.id}/disable", data={"csrf_token": token})
        assert response.status_code == 403
        assert "This form expired" in response.text
    user = _user(database, alice.id)
    assert user is not None and user.is_active
    assert _events(database, "user.disabled") == []


def test_a_new_account_is_made_with_a_password_or_an_invitation(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    mail_sink: MailSink,
) -> None:
    made = _act(
        console,
        "/admin/users/new",
        email="Bob@Example.com",
        name="Bob",
        how="password",
        password=PASSWORD,
    )
    assert _notice(made.text) == "Created bob@example.com"
    assert _another_browser(http).login("bob@example.com").headers["location"] == "/account"
    invited = _act(
        console, "/admin/users/new", email="carol@example.com", name="Carol", how="invite"
    )
    assert _notice(invited.text) == "Invited carol@example.com"
    assert "/reset-password?token=" in MailSink.text(mail_sink.wait_for("carol@example.com")[0])
    created = _events(database, "user.created")
    assert {row.actor for row in created[-2:]} == {str(admin[0].id)}


def test_a_new_account_form_explains_what_is_wrong_and_keeps_what_was_typed(
    http: TestClient, console: Browser, alice: User
) -> None:
    taken = console.submit(
        "/admin/users/new", email=ALICE, name="Al", how="password", password=PASSWORD
    )
    assert taken.status_code == 400
    assert "This address already has an account." in taken.text
    assert 'value="Al"' in taken.text
    no_password = console.submit("/admin/users/new", email="dan@example.com", how="password")
    assert no_password.status_code == 400
    assert "Give a password, or invite the user to choose one." in no_password.text
    no_way = console.submit("/admin/users/new", email="dan@example.com", how="telepathy")
    assert no_way.status_code == 400
    assert "Choose how the person gets a password." in no_way.text


# -- clients and keys ----------------------------------------------------------------------


def _token(http: TestClient, client_id: str, secret: str) -> int:
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    return response.status_code


def _shown_secret(page: str) -> str | None:
    match = _SECRET_FIELD.search(page)
    if match is None:
        return None
    remember_secret(match.group(1))
    return match.group(1)


def test_a_new_client_secret_is_shown_once_and_works(
    http: TestClient, database: Database, console: Browser, admin: tuple[User, pyotp.TOTP]
) -> None:
    made = console.submit(
        "/admin/clients", name="Reports", grant_client_credentials="on", scope="reports"
    )
    assert made.status_code == 303
    location = made.headers["location"]
    client_id = location.rsplit("/", 1)[1]
    page = http.get(location)
    secret = _shown_secret(page.text)
    assert secret is not None and "it will not be shown again" in page.text
    assert _notice(page.text) == "Created the client Reports"
    assert secret not in http.get(location).text  # a reload shows it no more
    assert _shown_secret(http.get(location).text) is None
    assert _token(http, client_id, secret) == 200
    created = _events(database, "client.created")[-1]
    assert (created.actor, created.client_id) == (str(admin[0].id), client_id)


def test_rotating_a_secret_shows_the_new_one_once_and_keeps_the_old_for_the_grace(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    client_id, old = make_client(grant_types=["client_credentials"])
    assert old is not None
    page = f"/admin/clients/{client_id}"
    rotated = _act(console, page, f"{page}/rotate-secret", grace="86400")
    new = _shown_secret(rotated.text)
    assert new is not None and new != old
    assert _shown_secret(http.get(page).text) is None
    assert _token(http, client_id, new) == 200
    assert _token(http, client_id, old) == 200  # within the grace
    _act(console, page, f"{page}/rotate-secret", grace="0")
    assert _token(http, client_id, new) == 401  # no overlap chosen
    assert _events(database, "client.secret_rotated")[-1].actor == str(admin[0].id)
    bad = console.submit(page, f"{page}/rotate-secret", grace="forever")
    assert bad.status_code == 400 and "Choose how long the old secret works." in bad.text


def test_a_client_is_edited_and_bad_settings_are_explained_and_not_saved(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    client_id, _ = make_client(redirect_uris=["https://app.example.com/cb"])
    page = f"/admin/clients/{client_id}"
    saved = _act(
        console,
        page,
        page,
        name="Renamed app",
        redirect_uris="https://app.example.com/cb\nhttps://app.example.com/other",
        grant_authorization_code="on",
        grant_refresh_token="on",
        scope="openid roles",
        role_prefixes="app1:",
        require_mfa="on",
    )
    assert _notice(saved.text) == "Saved the client Renamed app"
    with database.transaction() as session:
        client = session.get(Client, client_id)
        assert client is not None
        assert client.redirect_uris == [
            "https://app.example.com/cb",
            "https://app.example.com/other",
        ]
        assert (client.role_prefixes, client.require_mfa, client.scope) == (
            ["app1:"],
            True,
            "openid roles",
        )
    assert _events(database, "client.updated")[-1].actor == str(admin[0].id)
    refused = console.submit(
        page, page, name="Evil", redirect_uris="javascript:alert(1)", grant_authorization_code="on"
    )
    assert refused.status_code == 400
    assert "forbidden or missing scheme" in unescape(refused.text)
    assert "javascript:alert(1)" in unescape(refused.text)  # kept to correct
    with database.transaction() as session:
        unchanged = session.get(Client, client_id)
        assert unchanged is not None and unchanged.name == "Renamed app"


def test_a_client_is_deleted_after_a_confirmation(
    http: TestClient,
    database: Database,
    console: Browser,
    admin: tuple[User, pyotp.TOTP],
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    client_id, _ = make_client(grant_types=["client_credentials"])
    page = f"/admin/clients/{client_id}/delete"
    assert "Delete the client test client?" in http.get(page).text
    landed = _act(console, page, page)
    assert _notice(landed.text) == "Deleted the client test client"
    with database.transaction() as session:
        assert session.get(Client, client_id) is None
    assert _events(database, "client.deleted")[-1].actor == str(admin[0].id)
    assert http.get(f"/admin/clients/{client_id}").status_code == 404


def test_a_bad_new_client_is_explained(http: TestClient, console: Browser) -> None:
    refused = console.submit("/admin/clients", name="", grant_client_credentials="on")
    assert refused.status_code == 400
    assert "a client needs a name" in refused.text


def test_the_keys_page_lists_and_rotates_the_signing_keys(
    http: TestClient, database: Database, console: Browser, admin: tuple[User, pyotp.TOTP]
) -> None:
    store = http.app.state.services.keys  # type: ignore[attr-defined]
    (next_kid,) = [record.kid for record in store.records() if record.state == "next"]
    page = http.get("/admin/keys")
    assert next_kid in page.text and "Rotate the signing key" in page.text
    landed = _act(console, "/admin/keys", "/admin/keys/rotate")
    assert _notice(landed.text) == f"Rotated the signing keys: {next_kid} signs now"
    assert "retired" in landed.text
    rotated = _events(database, "key.rotated")[-1]
    assert (rotated.actor, rotated.subject) == (str(admin[0].id), next_kid)
    assert [r.state for r in store.records() if r.kid == next_kid] == ["active"]


# -- audit ---------------------------------------------------------------------------------


def test_the_audit_page_filters_and_pages_on(
    http: TestClient, database: Database, console: Browser, alice: User
) -> None:
    with database.transaction() as session:
        for number in range(55):
            audit.record(session, "test.event", subject=str(alice.id), detail={"n": number})
        audit.record(session, "other.event", subject="someone-else")
    first = http.get(f"/admin/audit?user={ALICE}&type=test.")
    assert first.status_code == 200
    # Newest first: the last event written leads, the oldest waits on the older page.
    shown = unescape(first.text)
    assert shown.index('"n": 54') < shown.index('"n": 53') and '"n": 0}' not in shown
    assert "other.event" not in first.text
    more = re.search(r'href="(/admin/audit\?[^"]+)" rel="next"', first.text)
    assert more is not None and "Older events" in first.text
    second = unescape(http.get(unescape(more.group(1))).text)
    assert '"n": 0}' in second and '"n": 54' not in second
    nobody = http.get("/admin/audit?user=nobody@example.com")
    assert nobody.status_code == 200 and "No event matches." in nobody.text


def test_the_audit_page_explains_bad_filters(http: TestClient, console: Browser) -> None:
    since = http.get("/admin/audit?since=yesterday")
    assert since.status_code == 400 and "bad time" in unescape(since.text)
    user = http.get("/admin/audit?user=alice")
    assert user.status_code == 400 and "Give a user id or an email address." in user.text
    for before in ("x", "-1", str(2**70)):
        cursor = http.get(f"/admin/audit?before={before}")
        assert cursor.status_code == 400
        assert "That page link doesn&#39;t work." in cursor.text
