"""Passkeys in Chromium, with its virtual authenticator over the DevTools protocol (a CTAP2
platform authenticator with resident keys and user verification, RECIPES.md §7).

The server's issuer is ``http://localhost:PORT``: browsers refuse WebAuthn on an IP address.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from ..conftest import remember_secret, run_cli
from .conftest import LiveServer, Screenshot, SmtpSink
from .test_journey import FIRST_PASSWORD as PASSWORD
from .test_journey import sign_up_and_verify
from .test_oidc_relying_party import RelyingPartySite
from .test_strong_authentication import (
    CLIENT_NAME,
    SECOND_FACTOR_ADDED,
    id_token_claims,
    relying_party,  # noqa: F401 - the fixture
    sign_out,
    start_authorization,
)

LOA_TWO = "urn:identity:loa:2"


def add_virtual_authenticator(page: Page) -> Any:
    """A platform authenticator that holds discoverable credentials and verifies its user
    (Chromium answers for it: no dialog in headless mode)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp


def test_a_passkey_signs_in_alone_and_counts_as_two_factors(
    page: Page,
    localhost_server: LiveServer,
    smtp_sink: SmtpSink,
    screenshot: Screenshot,
    page_problems: list[str],
    relying_party: RelyingPartySite,  # noqa: F811 - the fixture
) -> None:
    server = localhost_server
    add_virtual_authenticator(page)
    address = f"passkey+{secrets.token_hex(4)}@example.com"
    remember_secret(PASSWORD)
    sign_up_and_verify(page, server, smtp_sink, address)

    # 1. Add a passkey from the account page (the sign-in is fresh: no password asked).
    page.get_by_role("region", name="Two-factor authentication").get_by_role(
        "link", name="Add a passkey"
    ).click()
    expect(page).to_have_url(server.url + "/account/passkeys/new")
    page.get_by_label("Name", exact=True).fill("Work laptop")
    screenshot(page, "add-passkey")
    page.get_by_role("button", name="Add a passkey").click()
    # The first second factor comes with recovery codes, shown once.
    expect(page.get_by_role("heading", name="Your passkey is added")).to_be_visible()
    expect(page.locator("ol.recovery-codes li")).to_have_count(10)
    screenshot(page, "recovery-codes")
    page.get_by_role("link", name="Done").click()
    expect(page).to_have_url(server.url + "/account")
    expect(page.get_by_text("Work laptop", exact=True)).to_be_visible()
    smtp_sink.wait_for(address, subject=SECOND_FACTOR_ADDED)

    # 2. Sign out; the login page signs in with the passkey alone (the browser offers it in
    # the email field's autofill, and the authenticator answers at once).
    sign_out(page, server)
    page.goto(server.url + "/login")
    expect(page).to_have_url(server.url + "/account")
    expect(page.get_by_role("navigation", name="Account")).to_be_visible()
    screenshot(page, "signed-in-with-passkey")

    # 3. An app that requires two factors takes that sign-in as it is: amr hwk, user, mfa.
    callback = f"{relying_party.url}/callback"
    registered = run_cli(
        server.env,
        "clients", "create", "--name", CLIENT_NAME, "--redirect-uri", callback,
        "--grant-type", "authorization_code", "--require-mfa",
    )  # fmt: skip
    client_id, client_secret = registered["client_id"], registered["client_secret"]
    remember_secret(client_secret)
    config: dict[str, Any] = httpx.get(
        f"{server.url}/.well-known/openid-configuration", timeout=10
    ).json()
    flow = start_authorization(config, client_id, client_secret, callback)
    page.goto(flow.uri)
    # Signed in already, with two factors: the consent page comes at once.
    expect(
        page.get_by_role("heading", name=f"{CLIENT_NAME} wants to access your account")
    ).to_be_visible()
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile("^" + re.escape(callback + "?")))
    callback_url = page.url
    claims = id_token_claims(config, flow, callback_url, client_id)
    assert claims["amr"] == ["hwk", "user", "mfa"]
    assert claims["acr"] == LOA_TWO

    # 4. Signed out, the app's next sign-in is the passkey again, from the login page.
    page.goto(server.url + "/logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You're signed out")).to_be_visible()
    flow = start_authorization(config, client_id, client_secret, callback)
    page.goto(flow.uri)  # to /login, which the passkey leaves at once
    # The browser's autofill signs in with the passkey by itself, and the flow goes on to the
    # app (its consent is remembered).
    expect(page).to_have_url(re.compile("^" + re.escape(callback + "?")))
    claims = id_token_claims(config, flow, page.url, client_id)
    assert claims["amr"] == ["hwk", "user", "mfa"]
    assert page_problems == []
