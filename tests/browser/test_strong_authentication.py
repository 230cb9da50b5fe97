"""Second factors in a real browser: an authenticator app set up from the account page, the
code page and recovery codes at sign-in, and an app (Authlib's ``OAuth2Client``) whose client
requires two factors, for a person who has an authenticator app and for one who sets it up
inside the flow.

The tests read the ``otpauth://`` URI and the recovery codes from the pages, as a person
with an authenticator app would, and compute codes with pyotp. Each code works once (the
server remembers the last 30-second step used) and one step of drift either way is accepted,
so after the setup spent the current step's code, a sign-in uses the next step's.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Page, expect

from ..conftest import remember_secret, run_cli
from .conftest import LiveServer, Screenshot, SmtpSink, text_body
from .test_journey import FIRST_PASSWORD as PASSWORD
from .test_journey import log_in, new_email, sign_up_and_verify
from .test_oidc_relying_party import RelyingPartySite, _at_hash, _query

SECOND_FACTOR_ADDED = "A second factor was added to your account"
RECOVERY_CODE_USED = "A recovery code was used to sign in to your account"
LOA_TWO = "urn:identity:loa:2"
CLIENT_NAME = "Payroll"
SCOPE = "openid email profile"
RECOVERY_CODE = re.compile(r"[a-z0-9]{5}-[a-z0-9]{5}")


@pytest.fixture
def relying_party() -> Iterator[RelyingPartySite]:
    with RelyingPartySite() as site:
        yield site


# -- the pages, as a person uses them ------------------------------------------------------


def sign_out(page: Page, server: LiveServer) -> None:
    """The nav's "Sign out", then the confirmation page's button."""
    page.get_by_role("navigation", name="Account").get_by_role("link", name="Sign out").click()
    expect(page).to_have_url(server.url + "/logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You're signed out")).to_be_visible()


def expect_signed_out(page: Page, server: LiveServer) -> None:
    """No nav of a signed-in person, and the server agrees: /account asks for a login.
    (Asked through the context's request client, so the page stays where it is.)"""
    expect(page.get_by_role("navigation", name="Account")).to_have_count(0)
    account = page.request.get(server.url + "/account", max_redirects=0)
    assert account.status == 303, account.status
    assert account.headers["location"] == "/login?next=/account"


def read_authenticator(page: Page) -> pyotp.TOTP:
    """What an authenticator app would add: the setup page's ``otpauth://`` URI."""
    expect(page.get_by_role("heading", name="Set up an authenticator app")).to_be_visible()
    expect(page.locator("figure.qr-code svg")).to_be_visible()
    uri = page.get_by_label("Can't scan? Add this link or key in the app").input_value()
    assert uri.startswith("otpauth://totp/"), uri
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    remember_secret(totp.secret)
    # The key shown beside it is the one inside the URI.
    expect(page.locator("code.secret-key")).to_have_text(totp.secret)
    return totp


def confirm_authenticator(page: Page, totp: pyotp.TOTP) -> list[str]:
    """Type the app's current code and turn it on; the recovery codes it shows, once."""
    page.get_by_label("6-digit code", exact=True).fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", name="Your authenticator app is set up")).to_be_visible()
    listed = page.locator("ol.recovery-codes li")
    expect(listed).to_have_count(10)
    codes = [text.strip() for text in listed.all_inner_texts()]
    assert all(RECOVERY_CODE.fullmatch(code) for code in codes), codes
    assert len(set(codes)) == 10, codes
    for code in codes:
        remember_secret(code)
    return codes


def set_up_authenticator(page: Page, server: LiveServer) -> tuple[pyotp.TOTP, list[str]]:
    """From the account page of a signed-in person: the app and its recovery codes, back on
    the account page."""
    page.goto(server.url + "/account")
    page.get_by_role("region", name="Two-factor authentication").get_by_role(
        "link", name="Set up an authenticator app"
    ).click()
    expect(page).to_have_url(server.url + "/account/two-factor/setup")
    totp = read_authenticator(page)
    codes = confirm_authenticator(page, totp)
    page.get_by_role("link", name="Done").click()
    expect(page).to_have_url(server.url + "/account")
    return totp, codes


def next_code(totp: pyotp.TOTP) -> str:
    """The code of the next 30-second step: the current step's may be spent already."""
    return totp.at(time.time() + 30)


def expect_code_page(page: Page, server: LiveServer) -> None:
    expect(page).to_have_url(server.url + "/login/two-factor")
    expect(page.get_by_role("heading", name="Two-step verification")).to_be_visible()
    expect(page.get_by_label("6-digit code", exact=True)).to_be_focused()


def enter_recovery_code(page: Page, code: str) -> None:
    page.get_by_label("Recovery code", exact=True).fill(code)
    page.get_by_role("button", name="Verify").click()


# -- 1. the account page, the code page and recovery codes ---------------------------------


def test_authenticator_app_and_recovery_codes_guard_the_sign_in(
    page: Page,
    live_server: LiveServer,
    smtp_sink: SmtpSink,
    screenshot: Screenshot,
    page_problems: list[str],
) -> None:
    server = live_server
    address = new_email()
    remember_secret(PASSWORD)

    # 1. Sign up; the code from the mail verifies and signs this browser in.
    sign_up_and_verify(page, server, smtp_sink, address)
    two_factor = page.get_by_role("region", name="Two-factor authentication")
    expect(two_factor).to_contain_text("Two-factor authentication is off.")
    screenshot(page, "account-without-factor")

    # 2. Set up an authenticator app: the QR code and the URI, then its first code.
    two_factor.get_by_role("link", name="Set up an authenticator app").click()
    expect(page).to_have_url(server.url + "/account/two-factor/setup")
    totp = read_authenticator(page)
    assert totp.digits == 6 and totp.interval == 30
    screenshot(page, "setup")
    codes = confirm_authenticator(page, totp)
    expect(page.get_by_role("button", name="Download")).to_be_visible()
    screenshot(page, "recovery-codes")

    # The owner is told by mail.
    added = smtp_sink.wait_for(address, subject=SECOND_FACTOR_ADDED)
    assert len(added) == 1
    assert "an authenticator app" in text_body(added[0])

    page.get_by_role("link", name="Done").click()
    expect(page).to_have_url(server.url + "/account")
    expect(two_factor).to_contain_text("Authenticator app")
    expect(two_factor).to_contain_text("10 recovery codes left")
    screenshot(page, "account-with-factor")

    # 3. The password alone no longer signs in: the code page asks for the app's code.
    sign_out(page, server)
    log_in(page, server, address, PASSWORD)
    expect_code_page(page, server)
    expect_signed_out(page, server)
    screenshot(page, "code-asked")
    page.get_by_label("6-digit code", exact=True).fill(next_code(totp))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(server.url + "/account")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    screenshot(page, "signed-in-with-code")

    # 4. Without the phone: a recovery code instead, which the owner hears about.
    sign_out(page, server)
    log_in(page, server, address, PASSWORD)
    expect_code_page(page, server)
    page.get_by_role("link", name="Use a recovery code").click()
    expect(page).to_have_url(server.url + "/login/recovery-code")
    expect(page.get_by_role("heading", name="Use a recovery code")).to_be_visible()
    enter_recovery_code(page, codes[0])
    expect(page).to_have_url(server.url + "/account")
    expect(two_factor).to_contain_text("9 recovery codes left")
    screenshot(page, "signed-in-with-recovery-code")
    used = smtp_sink.wait_for(address, subject=RECOVERY_CODE_USED)
    assert len(used) == 1
    assert "9 unused codes left" in text_body(used[0])

    # 5. The same recovery code again is refused, and signs nobody in; another one works.
    sign_out(page, server)
    log_in(page, server, address, PASSWORD)
    expect_code_page(page, server)
    page.get_by_role("link", name="Use a recovery code").click()
    enter_recovery_code(page, codes[0])
    expect(page).to_have_url(server.url + "/login/recovery-code")
    summary = page.get_by_role("alert")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("Check the code")
    expect(summary).to_contain_text("That code is wrong or was already used.")
    field = page.get_by_label("Recovery code", exact=True)
    expect(field).to_have_attribute("aria-invalid", "true")
    expect_signed_out(page, server)
    screenshot(page, "recovery-code-reused")

    enter_recovery_code(page, codes[1])
    expect(page).to_have_url(server.url + "/account")
    expect(two_factor).to_contain_text("8 recovery codes left")
    screenshot(page, "signed-in-with-another-recovery-code")
    used = smtp_sink.wait_for(address, count=2, subject=RECOVERY_CODE_USED)
    assert len(used) == 2
    assert "8 unused codes left" in text_body(used[1])

    assert page_problems == []


# -- 2. an app that requires two factors ---------------------------------------------------


@dataclass
class Authorization:
    """One run of the code flow by the relying party: what it sent and must check."""

    client: OAuth2Client
    uri: str
    state: str
    verifier: str
    nonce: str


def start_authorization(
    config: dict[str, Any], client_id: str, client_secret: str, callback: str
) -> Authorization:
    client = OAuth2Client(
        client_id,
        client_secret,
        scope=SCOPE,
        redirect_uri=callback,
        code_challenge_method="S256",
        timeout=10,
    )
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    uri, state = client.create_authorization_url(
        config["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    return Authorization(client, uri, state, verifier, nonce)


def allow_and_return(
    page: Page,
    relying_party: RelyingPartySite,
    callback: str,
    address: str,
    screenshot: Screenshot,
    step: str,
) -> str:
    """The consent page: allow, and land on the relying party's callback; its URL."""
    expect(page).to_have_url(re.compile(r"/oauth2/authorize/resume\?rid="))
    expect(
        page.get_by_role("heading", name=f"{CLIENT_NAME} wants to access your account")
    ).to_be_visible()
    expect(page.get_by_text(f"Signed in as {address}")).to_be_visible()
    screenshot(page, f"{step}-consent")
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile("^" + re.escape(callback + "?")))
    expect(page.get_by_role("heading", name="Back at Example RP")).to_be_visible()
    screenshot(page, f"{step}-callback")
    arrived = [url for url in relying_party.arrived if urlsplit(url).path == "/callback"]
    assert arrived and arrived[-1] == page.url, relying_party.arrived
    return page.url


def id_token_claims(
    config: dict[str, Any], flow: Authorization, callback_url: str, client_id: str
) -> dict[str, Any]:
    """Exchange the code as the relying party does, and check the ID token against the
    published keys; its claims."""
    answer = _query(callback_url)
    assert set(answer) == {"code", "state", "iss"}, answer
    assert answer["state"] == flow.state and answer["iss"] == config["issuer"]
    with flow.client:
        token = flow.client.fetch_token(
            config["token_endpoint"],
            authorization_response=callback_url,
            state=flow.state,
            code_verifier=flow.verifier,
        )
    remember_secret(token["access_token"])
    remember_secret(token["id_token"])
    jwks = httpx.get(config["jwks_uri"], timeout=10)
    assert jwks.status_code == 200
    decoded = jwt.decode(
        token["id_token"], KeySet.import_key_set(jwks.json()), algorithms=["RS256"]
    )
    assert decoded.header["kid"] in {key["kid"] for key in jwks.json()["keys"]}
    claims = dict(decoded.claims)
    jwt.JWTClaimsRegistry(
        leeway=5,
        iss={"essential": True, "value": config["issuer"]},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(claims)
    assert claims["aud"] in (client_id, [client_id])
    assert claims["nonce"] == flow.nonce
    assert claims["at_hash"] == _at_hash(token["access_token"])
    now = time.time()
    assert now - 300 <= claims["auth_time"] <= now + 5
    return claims


def test_an_app_that_requires_two_factors_gets_them_in_the_code_flow(
    page: Page,
    live_server: LiveServer,
    smtp_sink: SmtpSink,
    screenshot: Screenshot,
    page_problems: list[str],
    relying_party: RelyingPartySite,
) -> None:
    server = live_server
    callback = f"{relying_party.url}/callback"
    remember_secret(PASSWORD)
    registered = run_cli(
        server.env,
        "clients", "create", "--name", CLIENT_NAME, "--redirect-uri", callback,
        "--grant-type", "authorization_code", "--require-mfa",
    )  # fmt: skip
    client_id, client_secret = registered["client_id"], registered["client_secret"]
    assert client_secret
    remember_secret(client_secret)
    config: dict[str, Any] = httpx.get(
        f"{server.url}/.well-known/openid-configuration", timeout=10
    ).json()
    assert config["issuer"] == server.url
    assert LOA_TWO in config["acr_values_supported"]

    # A person who set up an authenticator app earlier, and signed out.
    with_app = f"grace+{secrets.token_hex(4)}@example.com"
    user = run_cli(
        server.env,
        "users", "create", "--email", with_app, "--name", "Grace Hopper",
        "--password", PASSWORD, "--verified",
    )  # fmt: skip
    log_in(page, server, with_app, PASSWORD)
    expect(page).to_have_url(server.url + "/account")
    totp, _codes = set_up_authenticator(page, server)
    sign_out(page, server)

    # 1. The app sends them to sign in: the password, then the code page, then consent.
    flow = start_authorization(config, client_id, client_secret, callback)
    page.goto(flow.uri)
    expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth2%2Fauthorize%2Fresume"))
    page.locator("[autocomplete=username]").fill(with_app)
    page.locator("[autocomplete=current-password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect_code_page(page, server)
    screenshot(page, "with-app-code-page")
    page.get_by_label("6-digit code", exact=True).fill(next_code(totp))
    page.get_by_role("button", name="Verify").click()
    callback_url = allow_and_return(page, relying_party, callback, with_app, screenshot, "with-app")

    claims = id_token_claims(config, flow, callback_url, client_id)
    assert claims["sub"] == str(user["id"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == LOA_TWO

    # 2. A person without a second factor sets one up inside the flow, then goes on.
    page.goto(server.url + "/logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You're signed out")).to_be_visible()

    without_app = f"alan+{secrets.token_hex(4)}@example.com"
    other = run_cli(
        server.env,
        "users", "create", "--email", without_app, "--name", "Alan Turing",
        "--password", PASSWORD, "--verified",
    )  # fmt: skip
    flow = start_authorization(config, client_id, client_secret, callback)
    page.goto(flow.uri)
    expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth2%2Fauthorize%2Fresume"))
    page.locator("[autocomplete=username]").fill(without_app)
    page.locator("[autocomplete=current-password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(
        re.compile(r"/account/two-factor/setup\?next=%2Foauth2%2Fauthorize%2Fresume%3Frid%3D")
    )
    new_totp = read_authenticator(page)
    screenshot(page, "without-app-setup")
    confirm_authenticator(page, new_totp)
    expect(page.get_by_role("link", name="Done")).to_have_count(0)
    screenshot(page, "without-app-recovery-codes")
    page.get_by_role("link", name="Continue").click()
    callback_url = allow_and_return(
        page, relying_party, callback, without_app, screenshot, "after-setup"
    )
    smtp_sink.wait_for(without_app, subject=SECOND_FACTOR_ADDED)

    claims = id_token_claims(config, flow, callback_url, client_id)
    assert claims["sub"] == str(other["id"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == LOA_TWO

    assert page_problems == []
