"""What the consent, device and account pages say about an app: the same words for the same
scope everywhere, and a sentence (never a redirect) for a request that names no known app."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.db import Database
from tests.web_helpers import PASSWORD, Browser, csrf_of

MakeClient = Callable[..., tuple[str, str | None]]
CALLBACK = "https://app.example.com/callback"
SCOPE = "openid profile email offline_access"
EMAIL = "ada@example.com"


@pytest.fixture
def signed_in(http: TestClient, database: Database) -> Browser:
    """A verified user, signed in."""
    with database.transaction() as session:
        operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=EMAIL,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
    browser = Browser(http)
    assert browser.login(EMAIL).status_code == 303
    return browser


@pytest.fixture
def app_client(make_client: MakeClient) -> str:
    """A third-party app that may use the browser flow and the device flow."""
    client_id, _ = make_client(
        name="Billing Dashboard",
        public=True,
        redirect_uris=[CALLBACK],
        grant_types=[
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
        ],
        scope=SCOPE,
    )
    return client_id


def _authorize(http: TestClient, client_id: str, **params: str) -> Any:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": SCOPE,
        "state": "xyz",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        **params,
    }
    return http.get(f"/oauth2/authorize?{urlencode(query)}", follow_redirects=False)


def _scope_lines(page: str) -> list[str]:
    listed = re.search(r'<ul class="scope-list">(.*?)</ul>', page, re.S)
    assert listed, page
    return [html.unescape(text) for text in re.findall(r"<span>(.*?)</span>", listed.group(1))]


def _device_consent(browser: Browser, client_id: str) -> str:
    started = browser.http.post(
        "/oauth2/device_authorization", data={"client_id": client_id, "scope": SCOPE}
    ).json()
    page = browser.submit("/device", user_code=started["user_code"])
    assert page.status_code == 200, page.text
    return str(page.text)


def test_consent_and_device_pages_describe_each_scope_in_the_same_words(
    signed_in: Browser, app_client: str
) -> None:
    browser = signed_in
    consent = _authorize(browser.http, app_client)
    assert consent.status_code == 200 and 'name="rid"' in consent.text
    on_the_web = _scope_lines(consent.text)
    on_the_device = _scope_lines(_device_consent(browser, app_client))
    assert on_the_web == on_the_device
    assert len(on_the_web) == 4 and not {"openid", "offline_access"} & set(on_the_web)


def test_the_account_page_lists_an_apps_scopes_in_the_consent_pages_words(
    signed_in: Browser, app_client: str
) -> None:
    browser = signed_in
    consent = _authorize(browser.http, app_client)
    words = _scope_lines(consent.text)
    rid = consent.text.split('name="rid" value="')[1].split('"')[0]
    allowed = browser.http.post(
        "/oauth2/authorize/consent",
        data={"csrf_token": csrf_of(consent.text), "rid": rid, "decision": "allow"},
        follow_redirects=False,
    )
    assert allowed.headers["location"].startswith(CALLBACK)
    account = browser.http.get("/account").text
    apps = account.split('id="apps-title"')[1]
    assert "Billing Dashboard" in apps
    assert all(html.escape(line, quote=False) in apps for line in words)
    assert 'class="chip"' not in apps and "offline_access" not in apps


@pytest.mark.parametrize(
    ("client_id", "redirect_uri"),
    [
        ("no-such-app", CALLBACK),
        (None, "https://evil.example.com/callback"),
    ],
    ids=["unknown-client", "unregistered-redirect"],
)
def test_a_request_for_no_known_app_gets_a_sentence_and_no_redirect(
    http: TestClient, app_client: str, client_id: str | None, redirect_uri: str
) -> None:
    response = _authorize(http, client_id or app_client, redirect_uri=redirect_uri)
    assert response.status_code == 400 and "location" not in response.headers
    lede = re.search(r'<p class="lede">(.*?)</p>', response.text, re.S)
    assert lede is not None
    sentence = html.unescape(lede.group(1))
    # Words a person reads, not the server's diagnostics (nor the address that was sent).
    assert "(" not in sentence and "client" not in sentence.lower()
    assert "evil.example.com" not in response.text
    assert sentence.endswith(".") and "go back" in sentence.lower()
    if client_id is None:
        assert "Billing Dashboard" in sentence
