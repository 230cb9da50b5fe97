"""The passkey endpoints that templates/static/passkeys.js calls, through the app with a
software authenticator (tests.software_authenticator) standing in for browser and device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.accounts import operators, sessions
from identity.db import Database
from identity.models import AuditEvent, BrowserSession, User, secret_digest
from tests.software_authenticator import SoftwareAuthenticator
from tests.web.conftest import LOCAL_ISSUER
from tests.web_helpers import PASSWORD, Browser, csrf_of


def _account(client: TestClient, email: str, verified: bool = True) -> User:
    accounts, database = client.app.state.accounts, client.app.state.database  # type: ignore[attr-defined]
    with database.transaction() as session:
        return operators.create_user(
            accounts, session, email=email, name="Ada", password=PASSWORD, verified=verified
        )


def _signed_in(client: TestClient, email: str) -> str:
    """Sign ``client`` in with the password; returns the CSRF token of its new session."""
    assert Browser(client).login(email).status_code == 303
    return csrf_of(client.get("/account").text)


def _anonymous(client: TestClient) -> str:
    """The CSRF token of the login page's session, as its meta tag would carry it."""
    return csrf_of(client.get("/login").text)


def _post(client: TestClient, path: str, token: str | None, body: Any = None) -> Any:
    headers = {"X-CSRF-Token": token} if token is not None else {}
    return client.post(path, json={} if body is None else body, headers=headers)


def _add_passkey(client: TestClient, token: str, device: SoftwareAuthenticator) -> Any:
    options = _post(client, "/passkeys/register/options", token)
    assert options.status_code == 200, options.text
    credential = device.create(options.text)
    return _post(client, "/passkeys/register", token, {"credential": credential, "name": "Laptop"})


def _passkey_sign_in(
    client: TestClient, token: str, device: SoftwareAuthenticator, **body: Any
) -> Any:
    second = {"second_factor": True} if body.pop("second_factor", False) else {}
    answer = body.pop("answer", {})
    options = _post(client, "/passkeys/login/options", token, second)
    assert options.status_code == 200, options.text
    credential = device.get(options.text, **answer)
    return _post(client, "/passkeys/login", token, {"credential": credential, **body})


def _session_of(client: TestClient) -> BrowserSession:
    database: Database = client.app.state.database  # type: ignore[attr-defined]
    cookie = client.cookies.get("identity_session")
    assert cookie
    with database.transaction() as session:
        row = session.get(BrowserSession, secret_digest(cookie))
        assert row is not None
        return row


def _enrolled(start: Callable[..., TestClient], email: str) -> tuple[User, SoftwareAuthenticator]:
    """An account with one passkey, added in a browser of its own."""
    owner = start()
    user = _account(owner, email)
    device = SoftwareAuthenticator(LOCAL_ISSUER)
    assert _add_passkey(owner, _signed_in(owner, email), device).status_code == 200
    return user, device


def test_a_passkey_added_in_one_browser_signs_in_another(
    start: Callable[..., TestClient], database: Database
) -> None:
    owner = start()
    user = _account(owner, "ada@example.com")
    token = _signed_in(owner, "ada@example.com")
    device = SoftwareAuthenticator(LOCAL_ISSUER)
    added = _add_passkey(owner, token, device)
    assert added.status_code == 200 and added.json()["name"] == "Laptop"
    assert added.headers["cache-control"] == "no-store"
    assert "Laptop" in owner.get("/account").text  # the notice after the script reloads

    other = start()
    answer = _passkey_sign_in(other, _anonymous(other), device, next="/account?tab=security")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"redirect": "/account?tab=security"}
    row = _session_of(other)
    assert row.user_id == user.id and row.amr == ["hwk", "user", "mfa"]
    assert other.get("/account", follow_redirects=False).status_code == 200


def test_a_passkey_sign_in_gets_a_new_session_id(start: Callable[..., TestClient]) -> None:
    _user, device = _enrolled(start, "fixation@example.com")
    browser = start()
    token = _anonymous(browser)
    before = browser.cookies.get("identity_session")
    assert _passkey_sign_in(browser, token, device).status_code == 200
    assert browser.cookies.get("identity_session") not in (None, before)


def test_a_sign_in_goes_only_to_a_same_origin_path(start: Callable[..., TestClient]) -> None:
    _user, device = _enrolled(start, "next@example.com")
    browser = start()
    answer = _passkey_sign_in(browser, _anonymous(browser), device, next="https://evil.example/")
    assert answer.json() == {"redirect": "/account"}


def test_the_second_step_after_a_password_adds_the_passkey(
    start: Callable[..., TestClient], database: Database
) -> None:
    user, device = _enrolled(start, "second@example.com")
    browser = start()
    token = _anonymous(browser)
    # What the login page does once the password was right and a second factor is due.
    with database.transaction() as session:
        row = session.get(BrowserSession, secret_digest(browser.cookies["identity_session"]))
        assert row is not None
        sessions.await_second_factor(
            row,
            user.id,
            browser.app.state.accounts.now(),
            ["pwd"],
            "/account",  # type: ignore[attr-defined]
        )
    answer = _passkey_sign_in(browser, token, device, second_factor=True)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"redirect": "/account"}
    session_row = _session_of(browser)
    assert session_row.amr == ["pwd", "hwk", "mfa"]
    assert "second_factor" not in session_row.data


def test_a_second_step_needs_a_pending_sign_in(start: Callable[..., TestClient]) -> None:
    browser = start()
    answer = _post(browser, "/passkeys/login/options", _anonymous(browser), {"second_factor": True})
    assert answer.status_code == 400 and answer.json()["error"] == "no_pending_sign_in"


def test_missing_or_wrong_csrf_is_refused(start: Callable[..., TestClient]) -> None:
    browser = start()
    token = _signed_in(browser, _account(browser, "csrf@example.com").email)
    for path in ("/passkeys/register/options", "/passkeys/login/options", "/passkeys/login"):
        for sent in (None, "", "not-the-token"):
            answer = _post(browser, path, sent)
            assert answer.status_code == 403, (path, sent)
            assert answer.json()["error"] == "csrf_rejected"
    assert _post(browser, "/passkeys/register/options", token).status_code == 200


def test_adding_a_passkey_needs_a_signed_in_browser(start: Callable[..., TestClient]) -> None:
    browser = start()
    answer = _post(browser, "/passkeys/register/options", _anonymous(browser))
    assert answer.status_code == 403 and answer.json()["error"] == "login_required"


def test_a_challenge_is_answered_once(start: Callable[..., TestClient]) -> None:
    _user, device = _enrolled(start, "replay@example.com")
    browser = start()
    token = _anonymous(browser)
    options = _post(browser, "/passkeys/login/options", token)
    credential = device.get(options.text)
    assert _post(browser, "/passkeys/login", token, {"credential": credential}).status_code == 200
    token = _anonymous(browser)  # the signed-in session's token (the login page still serves)
    replay = _post(browser, "/passkeys/login", token, {"credential": credential})
    assert replay.status_code == 400 and replay.json()["error"] == "passkey_refused"


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"credential": "a string"}',
        '{"credential": {"id": 5, "response": []}}',
        '{"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": '
        '{"clientDataJSON": "!!", "authenticatorData": "", "signature": ""}}}',
    ],
)
def test_malformed_answers_are_a_json_400(start: Callable[..., TestClient], body: str) -> None:
    browser = start()
    token = _anonymous(browser)
    assert _post(browser, "/passkeys/login/options", token).status_code == 200
    answer = browser.post(
        "/passkeys/login",
        content=body,
        headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert set(answer.json()) >= {"error", "message"}


def test_failed_passkeys_are_throttled_with_retry_after(
    start: Callable[..., TestClient], database: Database
) -> None:
    user, device = _enrolled(start, "throttle@example.com")
    browser = start()
    token = _anonymous(browser)
    for _ in range(5):
        refused = _passkey_sign_in(browser, token, device, answer={"user_verified": False})
        assert refused.status_code == 400 and refused.json()["error"] == "passkey_refused"
    throttled = _passkey_sign_in(browser, token, device)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    query = select(AuditEvent.type).where(AuditEvent.subject == str(user.id))
    with database.transaction() as session:
        assert "mfa.throttled" in session.scalars(query).all()


def test_passkeys_are_off_on_an_ip_literal_issuer(start: Callable[..., TestClient]) -> None:
    browser = start("http://127.0.0.1:8000")
    token = _anonymous(browser)
    for path in ("/passkeys/login/options", "/passkeys/login", "/passkeys/register/options"):
        answer = _post(browser, path, token)
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"
