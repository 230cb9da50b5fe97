"""A small browser stand-in for page tests: keeps cookies, fills in the CSRF token."""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pyotp
from starlette.testclient import TestClient

from .conftest import MailSink, remember_secret

PASSWORD = "tidal-orbit-cactus-42"
remember_secret(PASSWORD)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


class Browser:
    """Submit forms the way a browser would: GET the page, then POST it with its token."""

    def __init__(self, http: TestClient) -> None:
        self.http = http

    def submit(self, page: str, action: str | None = None, **fields: str) -> Any:
        token = csrf_of(self.http.get(page).text)
        return self.http.post(
            action or page.split("?")[0],
            data={"csrf_token": token, **fields},
            follow_redirects=False,
        )

    def signup(self, email: str, password: str = PASSWORD, name: str = "Ada") -> Any:
        return self.submit("/signup", email=email, name=name, password=password)

    def login(self, email: str, password: str = PASSWORD, next: str = "") -> Any:
        return self.submit("/login", email=email, password=password, next=next)

    def verify(self, email: str, code: str) -> Any:
        return self.submit(f"/verify-email?email={email}", "/verify-email", email=email, code=code)


def code_from(sink: MailSink, email: str, count: int = 1) -> str:
    text = MailSink.text(sink.wait_for(email, count)[count - 1])
    match = re.search(r"\b(\d{6})\b", text)
    assert match, text
    return match.group(1)


def link_from(sink: MailSink, email: str, path: str, count: int = 1) -> str:
    """The link to ``path`` in the ``count``-th mail to ``email`` that has one."""
    pattern = re.compile(rf"(http://127\.0\.0\.1:8000{re.escape(path)}\?token=[\w-]+)")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        links = [
            match.group(1)
            for message in sink.messages
            if email.lower() in str(message["To"]).lower()
            and (match := pattern.search(MailSink.text(message)))
        ]
        if len(links) >= count:
            remember_secret(links[count - 1].split("token=")[1])
            return links[count - 1]
        time.sleep(0.05)
    raise AssertionError(f"no mail to {email} with a link to {path}")


def registered(browser: Browser, sink: MailSink, email: str, password: str = PASSWORD) -> None:
    """Sign up and verify ``email``; the browser that typed the password is then signed in."""
    assert browser.signup(email, password).status_code == 303
    verified = browser.verify(email, code_from(sink, email))
    assert verified.status_code == 303 and verified.headers["location"] == "/account"


# -- second factors ------------------------------------------------------------------------

_OTPAUTH = re.compile(r'value="(otpauth://totp/[^"]+)"')
_RECOVERY_CODE = re.compile(r"<code>([a-z0-9]{5}-[a-z0-9]{5})</code>")


def authenticator_of(page: str) -> pyotp.TOTP:
    """The authenticator app a setup page's ``otpauth://`` URI describes."""
    match = _OTPAUTH.search(page)
    assert match, "the page has no otpauth:// URI"
    totp = pyotp.parse_uri(html.unescape(match.group(1)))
    assert isinstance(totp, pyotp.TOTP)
    return totp


def totp_code(totp: pyotp.TOTP, steps: int = 0) -> str:
    """The app's code ``steps`` 30-second steps from now: each step's code works once, and
    the server accepts one step either side, so a test can use up to three (-1, 0, +1)."""
    return totp.at(time.time() + 30 * steps)


def recovery_codes_in(page: str) -> list[str]:
    codes = _RECOVERY_CODE.findall(page)
    for code in codes:
        remember_secret(code)
    return codes


def set_up_authenticator(browser: Browser, next: str = "") -> tuple[pyotp.TOTP, list[str]]:
    """Turn on an authenticator app from the setup page with the code of the step before
    this one (leaving this step's and the next one's for the test); returns the app and the
    recovery codes the page shows."""
    query = "?" + urlencode({"next": next}) if next else ""
    page = browser.http.get(f"/account/two-factor/setup{query}")
    assert page.status_code == 200, page.text
    totp = authenticator_of(page.text)
    done = browser.http.post(
        "/account/two-factor/setup",
        data={"csrf_token": csrf_of(page.text), "code": totp_code(totp, -1), "next": next},
        follow_redirects=False,
    )
    assert done.status_code == 200, done.text
    return totp, recovery_codes_in(done.text)


def id_token_of_callback(
    http: TestClient,
    callback: str,
    client: tuple[str, str | None],
    verifier: str,
    redirect_uri: str,
) -> dict[str, Any]:
    """Redeem the code of an authorization callback as the app would; the ID token's claims
    (read unchecked: these tests are about what it says)."""
    code = parse_qs(urlsplit(callback).query)["code"][0]
    remember_secret(code)
    client_id, secret = client
    tokens = http.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(client_id, secret or ""),
    )
    assert tokens.status_code == 200, tokens.text
    remember_secret(tokens.json()["access_token"])
    remember_secret(tokens.json()["id_token"])
    claims: dict[str, Any] = pyjwt.decode(
        tokens.json()["id_token"], options={"verify_signature": False}
    )
    return claims
