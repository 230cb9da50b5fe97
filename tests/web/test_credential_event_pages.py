"""Credential events through the hosted pages and the API: the chains an attacker used, each
ending with the old link or token refused (SECURITY.md "Accounts"; README "Security")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from tests.conftest import MailSink, remember_secret
from tests.web_helpers import PASSWORD, Browser, csrf_of, link_from, registered

NEW_PASSWORD = "violet-harbor-compass-31"
NEWER_PASSWORD = "amber-glacier-pylon-64"
remember_secret(NEW_PASSWORD)
remember_secret(NEWER_PASSWORD)
MakeClient = Callable[..., tuple[str, str | None]]


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> TestClient:
    return app_for(settings_for(smtp_url=mail_sink.url, password_grant=True))


@pytest.fixture
def app_client(make_client: MakeClient) -> str:
    """A first-party public app with the password and refresh grants."""
    client_id, _ = make_client(
        public=True,
        first_party=True,
        grant_types=["password", "refresh_token"],
        scope="openid account offline_access",
    )
    return client_id


def _tokens(http: TestClient, client_id: str, email: str, password: str) -> dict[str, Any]:
    response = http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": email,
            "password": password,
            "scope": "openid account offline_access",
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _refreshes(http: TestClient, client_id: str, tokens: dict[str, Any]) -> bool:
    response = http.post(
        "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": tokens["refresh_token"],
        },
    )
    return response.status_code == 200


def _reset(browser: Browser, token: str, password: str) -> Any:
    page = browser.http.get("/forgot-password")  # any form of this session has its token
    return browser.http.post(
        "/reset-password",
        data={"csrf_token": csrf_of(page.text), "token": token, "password": password},
    )


def _confirm_email(browser: Browser, link: str) -> Any:
    page = browser.http.get(link.replace("http://127.0.0.1:8000", ""))
    token = link.split("token=")[1]
    return browser.http.post(
        "/account/email/confirm", data={"csrf_token": csrf_of(page.text), "token": token}
    )


def test_a_pending_email_change_does_not_survive_the_owners_recovery(
    http: TestClient, mail_sink: MailSink
) -> None:
    owner, attacker = Browser(http), Browser(TestClient(http.app, base_url=str(http.base_url)))
    registered(owner, mail_sink, "owner@example.com")
    # The attacker knows the password and asks to move the account to their address.
    assert attacker.login("owner@example.com").status_code == 303
    attacker.submit(
        "/account",
        "/account/email",
        new_email="attacker@example.net",
        email_password=PASSWORD,
    )
    stolen = link_from(mail_sink, "attacker@example.net", "/account/email/confirm")
    # The owner resets the password, signs out everywhere, changes the password again.
    owner.submit("/forgot-password", email="owner@example.com")
    reset = link_from(mail_sink, "owner@example.com", "/reset-password").split("token=")[1]
    assert _reset(owner, reset, NEW_PASSWORD).status_code == 200
    assert owner.login("owner@example.com", NEW_PASSWORD).status_code == 303
    owner.submit("/account", "/account/sessions/revoke-all")
    assert owner.login("owner@example.com", NEW_PASSWORD).status_code == 303
    owner.submit(
        "/account",
        "/account/password",
        current_password=NEW_PASSWORD,
        new_password=NEWER_PASSWORD,
    )
    # The old link is dead, and the account keeps its address.
    assert _confirm_email(attacker, stolen).status_code == 400
    assert Browser(http).login("owner@example.com", NEWER_PASSWORD).status_code == 303


def test_a_password_change_on_the_page_signs_every_app_out(
    http: TestClient, mail_sink: MailSink, app_client: str
) -> None:
    browser = Browser(http)
    registered(browser, mail_sink, "apps@example.com")
    tokens = _tokens(http, app_client, "apps@example.com", PASSWORD)
    browser.login("apps@example.com")
    changed = browser.submit(
        "/account", "/account/password", current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    assert changed.status_code == 303
    assert "apps you had signed in to must sign in again" in browser.http.get("/account").text
    assert not _refreshes(http, app_client, tokens)
    me = http.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 401


def test_a_password_change_through_the_api_keeps_only_the_calling_app(
    http: TestClient, mail_sink: MailSink, app_client: str, make_client: MakeClient
) -> None:
    other_app, _ = make_client(
        public=True,
        first_party=True,
        grant_types=["password", "refresh_token"],
        scope="openid account offline_access",
        name="other app",
    )
    registered(Browser(http), mail_sink, "api@example.com")
    mine = _tokens(http, app_client, "api@example.com", PASSWORD)
    theirs = _tokens(http, other_app, "api@example.com", PASSWORD)
    response = http.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"Authorization": f"Bearer {mine['access_token']}"},
    )
    assert response.status_code == 204, response.text
    assert not _refreshes(http, other_app, theirs)
    me = http.get("/api/v1/me", headers={"Authorization": f"Bearer {theirs['access_token']}"})
    assert me.status_code == 401
    assert _refreshes(http, app_client, mine)


def test_a_reset_link_dies_when_the_password_is_changed(
    http: TestClient, mail_sink: MailSink
) -> None:
    browser = Browser(http)
    registered(browser, mail_sink, "links@example.com")
    browser.submit("/forgot-password", email="links@example.com")
    reset = link_from(mail_sink, "links@example.com", "/reset-password").split("token=")[1]
    browser.login("links@example.com")
    browser.submit(
        "/account", "/account/password", current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    assert _reset(Browser(http), reset, NEWER_PASSWORD).status_code == 400
    assert Browser(http).login("links@example.com", NEW_PASSWORD).status_code == 303


def test_a_reset_link_sent_to_the_old_address_dies_with_an_email_change(
    http: TestClient, mail_sink: MailSink
) -> None:
    browser = Browser(http)
    registered(browser, mail_sink, "before@example.com")
    browser.submit("/forgot-password", email="before@example.com")
    reset = link_from(mail_sink, "before@example.com", "/reset-password").split("token=")[1]
    browser.login("before@example.com")
    browser.submit(
        "/account", "/account/email", new_email="after@example.com", email_password=PASSWORD
    )
    _confirm_email(browser, link_from(mail_sink, "after@example.com", "/account/email/confirm"))
    assert _reset(Browser(http), reset, NEWER_PASSWORD).status_code == 400
    assert Browser(http).login("after@example.com", PASSWORD).status_code == 303


def test_the_account_page_shows_a_pending_email_change_and_cancels_it(
    http: TestClient, mail_sink: MailSink
) -> None:
    browser = Browser(http)
    registered(browser, mail_sink, "pending@example.com")
    browser.login("pending@example.com")
    browser.submit(
        "/account", "/account/email", new_email="later@example.com", email_password=PASSWORD
    )
    link = link_from(mail_sink, "later@example.com", "/account/email/confirm")
    page = browser.http.get("/account").text
    assert "Waiting for confirmation of later@example.com" in page
    assert 'action="/account/email/cancel"' in page
    # Entering one's own address is refused, and the pending change is still there.
    own = browser.submit(
        "/account", "/account/email", new_email="pending@example.com", email_password=PASSWORD
    )
    assert own.status_code == 400
    assert "later@example.com" in browser.http.get("/account").text
    assert browser.submit("/account", "/account/email/cancel").status_code == 303
    assert "later@example.com" not in browser.http.get("/account").text
    assert _confirm_email(Browser(http), link).status_code == 400
