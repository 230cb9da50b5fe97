"""The admin console in a real browser, on a phone-sized screen: an administrator (made with
``identity users roles add EMAIL admin``) signs in with password and authenticator app,
adds a webhook for ``user.*`` pointing at a local receiver and reads its secret (shown once),
finds a user with the search field (typed and sent from the keyboard), disables them and
sees their access token die, rotates a client's secret and sees the new one once, and at
last sees the ``user.disabled`` delivery, which the receiver verified with the secret, as
delivered on the endpoint's page."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import standardwebhooks
from playwright.sync_api import Page, expect

from identity.db import Database

from ..conftest import remember_secret, run_cli
from .conftest import LiveServer, Screenshot, SmtpSink, _serve
from .test_journey import FIRST_PASSWORD as PASSWORD
from .test_journey import new_email, sign_up_and_verify
from .test_strong_authentication import next_code, set_up_authenticator, sign_out

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def server(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> Iterator[LiveServer]:
    """``identity serve`` with the password grant on (the test's first-party app gets the
    person's access token with it, the shortest way to a token to watch die) and webhooks
    allowed to plain-http loopback receivers."""
    yield from _serve(
        database_url,
        redis_url,
        redis_prefix,
        smtp_sink,
        tmp_path,
        "127.0.0.1",
        extra_env={"IDENTITY_PASSWORD_GRANT": "1", "IDENTITY_WEBHOOKS_ALLOW_PRIVATE": "1"},
    )


class VerifyingReceiver:
    """A webhook receiver on 127.0.0.1, in a thread, as a real one is written: it checks each
    request's signature with ``standardwebhooks`` and the secret it was given, keeps the
    events that pass and answers them 204; any other request gets 401 (so the server marks
    the delivery failed, not delivered)."""

    def __init__(self) -> None:
        self.secret: str | None = None  # given once the console has shown it
        self.events: list[dict[str, Any]] = []
        self.refused = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(204 if receiver.accept(body, dict(self.headers)) else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/identity"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def accept(self, body: bytes, headers: dict[str, str]) -> bool:
        with self._lock:
            try:
                if self.secret is None:
                    raise standardwebhooks.webhooks.WebhookVerificationError("no secret yet")
                event = standardwebhooks.Webhook(self.secret).verify(body, headers)
            except standardwebhooks.webhooks.WebhookVerificationError:
                self.refused += 1
                return False
            self.events.append(dict(event))
            return True

    def received(self, type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.events if event["type"] == type]

    def __enter__(self) -> VerifyingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[VerifyingReceiver]:
    with VerifyingReceiver() as running:
        yield running


TARGET_PASSWORD = "velvet-canyon-orchid-53"
MakeClient = Callable[..., tuple[str, str | None]]


def _no_sideways_scroll(page: Page) -> None:
    """At the phone's width nothing makes the page wider than the screen."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width}px wide"


def _focus_is_visible(page: Page) -> None:
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline


def _token_of(server: LiveServer, client: tuple[str, str | None], email: str) -> str:
    """An access token of ``email``'s, from a first-party app's password grant."""
    client_id, secret = client
    response = httpx.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": TARGET_PASSWORD,
            "scope": "openid offline_access",  # a refresh token: an app session to see
        },
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 200, response.text
    token = str(response.json()["access_token"])
    remember_secret(token)
    remember_secret(response.json().get("refresh_token"))
    return token


def _introspect(server: LiveServer, client: tuple[str, str | None], token: str) -> dict[str, Any]:
    client_id, secret = client
    response = httpx.post(
        server.url + "/oauth2/introspect", data={"token": token}, auth=(client_id, secret or "")
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _token_status(server: LiveServer, client_id: str, secret: str) -> int:
    """The status of a client_credentials request with this secret, once the server's
    client cache (IDENTITY_CACHE_CHECK_SECONDS, 1 s) had time to see a rotation."""
    deadline = time.monotonic() + 5
    while True:
        status = httpx.post(
            server.url + "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        ).status_code
        if status == 200 or time.monotonic() > deadline:
            return status
        time.sleep(0.25)


def _delivered_row(page: Page, event_type: str, timeout: float = 20) -> str:
    """The text of the endpoint page's row for ``event_type`` once it says delivered,
    reloading the page meanwhile (the server's sender works every second)."""
    row = page.get_by_role("row").filter(has_text=event_type)
    deadline = time.monotonic() + timeout
    while True:
        text = row.first.inner_text() if row.count() else ""
        if "delivered" in text:
            return text
        assert time.monotonic() < deadline, f"no delivered {event_type} row: {text!r}"
        time.sleep(0.5)
        page.reload()


def test_an_administrator_adds_a_webhook_disables_a_user_and_sees_the_delivery_on_a_phone(
    page: Page,
    server: LiveServer,
    smtp_sink: SmtpSink,
    make_client: MakeClient,
    receiver: VerifyingReceiver,
    screenshot: Screenshot,
    page_problems: list[str],
) -> None:
    remember_secret(PASSWORD)
    remember_secret(TARGET_PASSWORD)
    page.set_viewport_size(PHONE)

    # 1. The administrator-to-be signs up and sets up an authenticator app; the CLI gives
    #    the role, as an operator on the server would for the first administrator.
    admin_email = new_email()
    sign_up_and_verify(page, server, smtp_sink, admin_email)
    totp, _ = set_up_authenticator(page, server)
    assert isinstance(totp, pyotp.TOTP)
    granted = run_cli(server.env, "users", "roles", "add", admin_email, "admin")
    assert granted["roles"] == ["admin"]
    sign_out(page, server)

    # 2. A person with an app session: their access token works now.
    target_email = new_email()
    target = run_cli(
        server.env,
        *("users", "create", "--email", target_email, "--name", "Bob Target"),
        *("--password", TARGET_PASSWORD, "--verified"),
    )
    app = make_client(
        name="First-party app",
        grant_types=["password", "refresh_token"],
        first_party=True,
        scope="openid offline_access",
    )
    token = _token_of(server, app, target_email)
    assert _introspect(server, app, token)["active"] is True

    # 3. The console asks a visitor to sign in, then needs both factors, then comes back.
    page.goto(server.url + "/admin/users")
    expect(page).to_have_url(server.url + "/login?next=%2Fadmin%2Fusers")
    page.locator("[autocomplete=username]").fill(admin_email)
    page.locator("[autocomplete=current-password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server.url + "/login/two-factor")
    page.get_by_label("6-digit code", exact=True).fill(next_code(totp))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(server.url + "/admin/users")
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    expect(
        page.get_by_role("navigation", name="Administration").get_by_role("link", name="Users")
    ).to_have_attribute("aria-current", "page")
    _no_sideways_scroll(page)
    screenshot(page, "users-on-a-phone")

    # 4. Add a webhook for user events, from the keyboard, pointing at the receiver; its
    #    secret shows once, and the receiver is given it.
    nav = page.get_by_role("navigation", name="Administration")
    nav.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    page.get_by_label("URL", exact=True).focus()
    _focus_is_visible(page)
    page.keyboard.type(receiver.url)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Events", exact=True)).to_be_focused()
    page.keyboard.type("user.*")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text(f"Added the webhook {receiver.url}")
    expect(page.get_by_role("heading", name=receiver.url)).to_be_visible()
    shown = page.get_by_label("Signing secret of this endpoint")
    secret = shown.input_value()
    remember_secret(secret)
    assert secret.startswith("whsec_")
    receiver.secret = secret
    endpoint_url = page.url
    _no_sideways_scroll(page)
    screenshot(page, "webhook-secret-shown-once")
    page.reload()
    expect(page.get_by_label("Signing secret of this endpoint")).to_have_count(0)
    assert secret not in page.content()
    nav.get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()

    # 5. Find the person from the keyboard: type in the search field, Tab through the
    #    status filter to the button, Enter.
    search = page.get_by_label("Email starts with")
    search.focus()
    page.keyboard.type(target_email.split("@")[0])
    page.keyboard.press("Tab")
    expect(page.get_by_label("Status")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Search")).to_be_focused()
    _focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/admin/users\?q=ada%2B[0-9a-f]+&status=$"))
    results = page.get_by_role("region", name="Accounts")
    expect(results.get_by_role("link")).to_have_count(1)
    _no_sideways_scroll(page)
    screenshot(page, "search-result")
    results.get_by_role("link", name=target_email).click()
    expect(page.get_by_role("heading", name=target_email)).to_be_visible()
    expect(page.get_by_role("region", name="App sessions")).to_contain_text("First-party app")
    _no_sideways_scroll(page)
    screenshot(page, "user-detail")

    # 6. Disable them, with the keyboard again: the confirmation shows, the token is dead.
    disable = page.get_by_role("button", name="Disable")
    disable.focus()
    _focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text(f"Disabled {target_email}")
    expect(page.get_by_role("button", name="Enable")).to_be_visible()
    screenshot(page, "disabled")
    assert _introspect(server, app, token) == {"active": False}

    # 7. Rotate a client's secret, the old one working an hour more; the new one shows once.
    service = make_client(name="Nightly reports", grant_types=["client_credentials"])
    client_id, old_secret = service
    assert old_secret is not None
    page.get_by_role("navigation", name="Administration").get_by_role(
        "link", name="Clients"
    ).click()
    page.get_by_role("link", name="Nightly reports").click()
    expect(page.get_by_role("heading", name="Nightly reports")).to_be_visible()
    page.get_by_label("The old secret works for").select_option(label="1 hour")
    page.get_by_role("button", name="Rotate the secret").click()
    expect(page.get_by_role("status")).to_have_text("Rotated the secret of Nightly reports")
    shown = page.get_by_label("Secret of Nightly reports")
    expect(shown).to_be_visible()
    new_secret = shown.input_value()
    remember_secret(new_secret)
    assert new_secret and new_secret != old_secret
    _no_sideways_scroll(page)
    screenshot(page, "secret-shown-once")
    page.reload()
    expect(page.get_by_role("heading", name="Nightly reports")).to_be_visible()
    expect(page.get_by_label("Secret of Nightly reports")).to_have_count(0)
    assert new_secret not in page.content()
    assert _token_status(server, client_id, new_secret) == 200
    assert _token_status(server, client_id, old_secret) == 200  # within its hour

    # 8. The disabling reached the receiver, signed with the secret it was given; the
    #    endpoint's page shows the delivery as delivered, with the receiver's answer.
    nav.get_by_role("link", name="Webhooks").click()
    page.get_by_role("link", name=receiver.url).click()
    expect(page).to_have_url(endpoint_url)
    row = _delivered_row(page, "user.disabled")
    assert "HTTP 204" in row
    (event,) = receiver.received("user.disabled")
    assert event["data"] == {"id": target["id"], "email": target_email}
    assert receiver.refused == 0
    _no_sideways_scroll(page)
    screenshot(page, "webhook-delivered")

    assert page_problems == []
