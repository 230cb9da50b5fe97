"""The account's passkey pages and the passkey parts of the sign-in pages: what a person sees
around the ceremonies (tests/web/test_passkey_endpoints.py drives the ceremonies)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import BrowserSession, Passkey, RecoveryCode, User
from identity.web.pages import NEW_RECOVERY_CODES
from tests.software_authenticator import SoftwareAuthenticator
from tests.web.conftest import LOCAL_ISSUER
from tests.web.test_passkey_endpoints import (
    _account,
    _add_passkey,
    _passkey_sign_in,
    _session_of,
    _signed_in,
)
from tests.web_helpers import PASSWORD, Browser, csrf_of, recovery_codes_in

Start = Callable[..., TestClient]


def _meta_csrf(html: str) -> str:
    """The CSRF token a passkey page gives its script (it has no form to carry one)."""
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, "the page has no CSRF meta tag"
    return match.group(1)


def _age_sign_in(database: Database, user: User) -> None:
    """Make every session of ``user`` ten minutes old: no longer a recent sign-in."""
    with database.transaction() as session:
        query = select(BrowserSession).where(BrowserSession.user_id == user.id)
        for row in session.scalars(query).all():
            assert row.auth_time is not None
            row.auth_time -= timedelta(minutes=10)


def _passkeys_of(database: Database, user: User) -> list[Passkey]:
    with database.transaction() as session:
        query = select(Passkey).where(Passkey.user_id == user.id)
        return list(session.scalars(query).all())


def _unused_codes(database: Database, user: User) -> int:
    with database.transaction() as session:
        query = select(RecoveryCode).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
        return len(session.scalars(query).all())


def test_the_first_passkey_shows_ten_recovery_codes_once(start: Start, database: Database) -> None:
    browser = start()
    user = _account(browser, "first-passkey@example.com")
    token = _signed_in(browser, "first-passkey@example.com")
    added = _add_passkey(browser, token, SoftwareAuthenticator(LOCAL_ISSUER))
    assert added.status_code == 200, added.text
    assert added.json()["redirect"] == NEW_RECOVERY_CODES
    shown = browser.get(NEW_RECOVERY_CODES)
    assert shown.status_code == 200
    assert len(recovery_codes_in(shown.text)) == 10 and _unused_codes(database, user) == 10
    # Shown once: the page is gone afterwards.
    again = browser.get(NEW_RECOVERY_CODES, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/account"
    # Made with user verification, it is this session's second factor as well.
    assert _session_of(browser).amr == ["pwd", "hwk", "mfa"]


def test_a_second_passkey_makes_no_new_codes(start: Start, database: Database) -> None:
    browser = start()
    user = _account(browser, "second-passkey@example.com")
    token = _signed_in(browser, "second-passkey@example.com")
    _add_passkey(browser, token, SoftwareAuthenticator(LOCAL_ISSUER))
    browser.get(NEW_RECOVERY_CODES)
    token = csrf_of(browser.get("/account").text)  # the session id changed
    added = _add_passkey(browser, token, SoftwareAuthenticator(LOCAL_ISSUER))
    assert added.json()["redirect"] == "/account"
    assert len(_passkeys_of(database, user)) == 2 and _unused_codes(database, user) == 10


def test_adding_a_passkey_needs_a_recent_sign_in(start: Start, database: Database) -> None:
    browser = start()
    user = _account(browser, "old-session@example.com")
    token = _signed_in(browser, "old-session@example.com")
    _age_sign_in(database, user)
    refused = browser.post("/passkeys/register/options", json={}, headers={"X-CSRF-Token": token})
    assert refused.status_code == 403
    assert refused.json()["error"] == "reauthentication_required"
    page = browser.get("/account/passkeys/new")
    assert page.status_code == 200 and 'name="password"' in page.text
    assert "data-passkey-register" not in page.text
    wrong = Browser(browser).submit("/account/passkeys/new", password="not-the-password")
    assert wrong.status_code == 400
    confirmed = Browser(browser).submit("/account/passkeys/new", password=PASSWORD)
    assert confirmed.status_code == 303
    page = browser.get("/account/passkeys/new")
    assert "data-passkey-register" in page.text and '<script src="/static/passkeys.js"' in page.text
    token = _meta_csrf(page.text)
    assert _add_passkey(browser, token, SoftwareAuthenticator(LOCAL_ISSUER)).status_code == 200


def test_the_account_page_lists_renames_and_removes_passkeys(
    start: Start, database: Database
) -> None:
    browser = start()
    user = _account(browser, "manage@example.com")
    _add_passkey(
        browser, _signed_in(browser, "manage@example.com"), SoftwareAuthenticator(LOCAL_ISSUER)
    )
    browser.get(NEW_RECOVERY_CODES)
    (passkey,) = _passkeys_of(database, user)
    page = browser.get("/account").text
    assert "Laptop" in page and f"/account/passkeys/{passkey.id}/remove" in page
    renamed = Browser(browser).submit(
        "/account", f"/account/passkeys/{passkey.id}/rename", name="Phone"
    )
    assert renamed.status_code == 303
    assert [p.name for p in _passkeys_of(database, user)] == ["Phone"]

    _age_sign_in(database, user)
    asked = Browser(browser).submit("/account", f"/account/passkeys/{passkey.id}/remove")
    assert asked.status_code == 200 and 'name="password"' in asked.text
    assert len(_passkeys_of(database, user)) == 1
    removed = Browser(browser).submit(
        "/account", f"/account/passkeys/{passkey.id}/remove", password=PASSWORD
    )
    assert removed.status_code == 303
    assert _passkeys_of(database, user) == []
    # The last factor gone, its recovery codes go with it.
    assert _unused_codes(database, user) == 0


def test_someone_elses_passkey_cannot_be_renamed_or_removed(
    start: Start, database: Database
) -> None:
    owner = start()
    ada = _account(owner, "owner@example.com")
    _add_passkey(owner, _signed_in(owner, "owner@example.com"), SoftwareAuthenticator(LOCAL_ISSUER))
    (passkey,) = _passkeys_of(database, ada)
    other = start()
    _account(other, "intruder@example.com")
    _signed_in(other, "intruder@example.com")
    Browser(other).submit("/account", f"/account/passkeys/{passkey.id}/rename", name="Mine")
    Browser(other).submit("/account", f"/account/passkeys/{passkey.id}/remove")
    assert [p.name for p in _passkeys_of(database, ada)] == ["Laptop"]


def test_a_password_sign_in_of_a_passkey_account_offers_the_passkey_as_second_step(
    start: Start, database: Database
) -> None:
    owner = start()
    user = _account(owner, "passkey-only@example.com")
    device = SoftwareAuthenticator(LOCAL_ISSUER)
    _add_passkey(owner, _signed_in(owner, "passkey-only@example.com"), device)

    browser = start()
    typed = Browser(browser).login("passkey-only@example.com")
    assert typed.status_code == 303 and typed.headers["location"] == "/login/two-factor"
    step = browser.get("/login/two-factor").text
    assert "data-passkey-login" in step and "data-passkey-second-factor" in step
    assert 'name="code"' not in step  # no authenticator app on this account
    answer = _passkey_sign_in(browser, _meta_csrf(step), device, second_factor=True)
    assert answer.status_code == 200, answer.text
    row = _session_of(browser)
    assert row.user_id == user.id and row.amr == ["pwd", "hwk", "mfa"]


def test_the_login_page_offers_passkeys_only_on_a_named_host(start: Start) -> None:
    named = start().get("/login").text
    assert "data-passkey-login" in named and 'autocomplete="username webauthn"' in named
    assert '<meta name="csrf-token"' in named
    on_address = start("http://127.0.0.1:8000").get("/login").text
    assert "data-passkey-login" not in on_address and "passkeys.js" not in on_address
    assert 'autocomplete="username"' in on_address


def test_an_issuer_on_an_ip_address_warns_once_at_start(
    settings_for: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="identity.config"):
        settings_for(issuer="http://127.0.0.1:8000").log_unsafe_defaults()
    assert sum("passkeys" in record.getMessage() for record in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="identity.config"):
        settings_for(issuer="http://localhost:8000").log_unsafe_defaults()
    assert not any("passkeys" in record.getMessage() for record in caplog.records)
