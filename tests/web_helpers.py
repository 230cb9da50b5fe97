"""A small browser stand-in for page tests: keeps cookies, fills in the CSRF token."""

from __future__ import annotations

import re
import time
from typing import Any

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
