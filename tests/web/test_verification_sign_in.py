"""Verifying an email in the browser that typed the password signs that browser in and goes
on where it was going (an app's authorization request): the code proves the mailbox, and
the password was just proven in that same browser. Any other browser verifies only."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from tests.conftest import ISSUER, MailSink, remember_secret
from tests.web_helpers import PASSWORD, Browser, code_from, csrf_of, link_from

MakeClient = Callable[..., tuple[str, str | None]]
CALLBACK = "https://app.example.com/callback"
COOKIE = "identity_session"
OTHER_PASSWORD = "velvet-canyon-piano-31"
remember_secret(OTHER_PASSWORD)


@pytest.fixture
def new_browser(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> Callable[[], Browser]:
    """Browsers of their own (each its own cookies) on one app setup."""
    settings = settings_for(smtp_url=mail_sink.url)
    return lambda: Browser(app_for(settings))


@pytest.fixture
def app_client(make_client: MakeClient) -> str:
    client_id, _ = make_client(
        name="Billing Dashboard",
        public=True,
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code"],
        scope="openid email",
    )
    return client_id


def _authorize(browser: Browser, client_id: str, **params: str) -> Any:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid email",
        "state": "xyz",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        **params,
    }
    return browser.http.get(f"/oauth2/authorize?{urlencode(query)}", follow_redirects=False)


def _next_of(response: Any) -> str:
    return parse_qs(urlsplit(response.headers["location"]).query)["next"][0]


def _signed_in(browser: Browser) -> bool:
    return browser.http.get("/account", follow_redirects=False).status_code == 200


def _consent_page(browser: Browser, response: Any) -> Any:
    """Follow the redirects on this site; the app's consent page is where they end."""
    while response.status_code in (302, 303) and response.headers["location"].startswith("/"):
        response = browser.http.get(response.headers["location"], follow_redirects=False)
    return response


def test_an_unverified_sign_in_for_an_app_is_told_why_then_verifying_goes_on_to_the_app(
    new_browser: Callable[[], Browser], mail_sink: MailSink, app_client: str
) -> None:
    new_browser().signup("late@example.com")  # signed up earlier, somewhere else
    code = code_from(mail_sink, "late@example.com")
    browser = new_browser()
    to_login = _authorize(browser, app_client)
    sent = browser.login("late@example.com", next=_next_of(to_login))
    assert sent.headers["location"].startswith("/verify-email?email=")
    code_page = browser.http.get(sent.headers["location"]).text
    assert "verify your email address before you can continue to Billing Dashboard" in code_page
    anonymous = browser.http.cookies.get(COOKIE)

    verified = browser.verify("late@example.com", code)
    assert verified.status_code == 303
    assert verified.headers["location"].startswith("/oauth2/authorize/resume?rid=")
    assert browser.http.cookies.get(COOKIE) not in (None, anonymous)  # a new session id
    consent = _consent_page(browser, verified)
    assert consent.status_code == 200 and "Billing Dashboard" in consent.text
    assert 'name="rid"' in consent.text  # signed in: asked to allow, not to sign in


def test_signing_up_for_an_app_then_verifying_goes_on_to_the_app(
    new_browser: Callable[[], Browser], mail_sink: MailSink, app_client: str
) -> None:
    browser = new_browser()
    to_signup = _authorize(browser, app_client, prompt="create")
    assert to_signup.headers["location"].startswith("/signup?")
    page = browser.http.get(to_signup.headers["location"])
    browser.http.post(
        "/signup",
        data={
            "csrf_token": csrf_of(page.text),
            "email": "new@example.com",
            "name": "Ada",
            "password": PASSWORD,
            "next": _next_of(to_signup),
        },
    )
    verified = browser.verify("new@example.com", code_from(mail_sink, "new@example.com"))
    assert verified.headers["location"].startswith("/oauth2/authorize/resume?rid=")
    assert 'name="rid"' in _consent_page(browser, verified).text


def test_verifying_in_another_browser_signs_no_browser_in(
    new_browser: Callable[[], Browser], mail_sink: MailSink
) -> None:
    typed, other = new_browser(), new_browser()
    typed.signup("apart@example.com")
    verified = other.verify("apart@example.com", code_from(mail_sink, "apart@example.com"))
    assert verified.status_code == 200 and "Email verified" in verified.text
    assert not _signed_in(other) and not _signed_in(typed)


def test_the_code_of_someone_elses_signup_signs_this_browser_not_in(
    new_browser: Callable[[], Browser], mail_sink: MailSink
) -> None:
    """This browser typed the first password; the second signup's code gives the account
    the second password, which this browser never typed."""
    owner, other = new_browser(), new_browser()
    owner.signup("shared@example.com")
    # Delivered before the next signup: each app has its own sender, and they race.
    code_from(mail_sink, "shared@example.com", count=1)
    other.signup("shared@example.com", OTHER_PASSWORD)
    second = code_from(mail_sink, "shared@example.com", count=2)
    assert owner.verify("shared@example.com", second).status_code == 200
    assert not _signed_in(owner)


def test_the_emailed_link_signs_in_the_browser_that_typed_the_password(
    new_browser: Callable[[], Browser], mail_sink: MailSink
) -> None:
    browser = new_browser()
    browser.signup("linked@example.com")
    path = link_from(mail_sink, "linked@example.com", "/verify-email").replace(ISSUER, "")
    page = browser.http.get(path)
    confirmed = browser.http.post(
        "/verify-email/confirm",
        data={"csrf_token": csrf_of(page.text), "token": path.split("token=")[1]},
        follow_redirects=False,
    )
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/account"
    assert _signed_in(browser)


def test_the_emailed_link_in_another_browser_only_verifies(
    new_browser: Callable[[], Browser], mail_sink: MailSink
) -> None:
    typed, other = new_browser(), new_browser()
    typed.signup("elsewhere@example.com")
    path = link_from(mail_sink, "elsewhere@example.com", "/verify-email").replace(ISSUER, "")
    page = other.http.get(path)
    confirmed = other.http.post(
        "/verify-email/confirm",
        data={"csrf_token": csrf_of(page.text), "token": path.split("token=")[1]},
        follow_redirects=False,
    )
    assert confirmed.status_code == 200 and "Email verified" in confirmed.text
    assert not _signed_in(other) and not _signed_in(typed)
