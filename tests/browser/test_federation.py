"""Signing in with another provider (issue #16) in a real browser.

The upstream is a second, independent identity instance (``upstream_server``: its issuer at
``http://localhost:PORT``, its own SQLite database) where the identity under test
(``federating_server``, at ``http://127.0.0.1:PORT``) is registered as an ordinary client, so
Chromium goes through the upstream's real login and consent pages. The misbehaving upstreams
(a wrong nonce, an ID token from another issuer, an address the provider did not confirm) and
GitHub are the fakes of tests/fake_upstreams.py, whose authorization endpoint answers at once.
Providers and accounts are set up through the ``identity`` command, as an operator would.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import uuid
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Page, Request, expect
from sqlalchemy import select

from identity.db import Database
from identity.models import BrowserSession

from ..conftest import remember_secret, run_cli
from ..fake_upstreams import FakeGitHub, FakeOidcProvider
from ..fake_upstreams import fake_github as fake_github_fixture  # noqa: F401 - the fixture
from ..fake_upstreams import fake_oidc as fake_oidc_fixture  # noqa: F401 - the fixture
from .conftest import LiveServer, Screenshot, SmtpSink, six_digit_code, text_body
from .test_strong_authentication import expect_signed_out, sign_out

UPSTREAM_PASSWORD = "cobalt-meadow-sparrow-31"
LOCAL_PASSWORD = "harbor-lilac-quill-64"
WRONG_PASSWORD = "not-the-password-at-all"
CORP = "Continue with Corp"
CLIENT_NAME = "Downstream"
EXPIRED = "This sign-in expired"
NOT_SIGNED_IN = "We couldn't sign you in"


def new_email(who: str) -> str:
    return f"{who}+{secrets.token_hex(4)}@example.com"


# -- setting up, as an operator does ------------------------------------------------------------


def connect_corp(downstream: LiveServer, upstream: LiveServer) -> None:
    """Register the downstream as a client of the upstream, then add the upstream to the
    downstream as the provider "corp"."""
    callback = f"{downstream.url}/login/with/corp/callback"
    client = run_cli(
        upstream.env,
        "clients", "create", "--name", CLIENT_NAME, "--redirect-uri", callback,
        "--grant-type", "authorization_code", "--scope", "openid email profile",
    )  # fmt: skip
    assert client["client_secret"]
    remember_secret(client["client_secret"])
    provider = run_cli(
        downstream.env,
        "providers", "add", "--name", "corp", "--issuer", upstream.url,
        # "=": a secret may start with "-", which argparse would take for an option.
        "--client-id", client["client_id"], f"--client-secret={client['client_secret']}",
        "--label", CORP,
    )  # fmt: skip
    assert provider["redirect_uri"] == callback
    assert provider["kind"] == "oidc" and provider["enabled"] is True


def add_fake(downstream: LiveServer, name: str, fake: FakeOidcProvider | FakeGitHub) -> None:
    preset = ["--preset", "github"] if isinstance(fake, FakeGitHub) else []
    run_cli(
        downstream.env,
        "providers", "add", "--name", name, *preset, "--issuer", fake.issuer,
        "--client-id", fake.client_id, f"--client-secret={fake.client_secret}",
    )  # fmt: skip


def create_user(server: LiveServer, address: str, password: str, *, verified: bool = True) -> str:
    """An account made with ``identity users create``; its id."""
    remember_secret(password)
    user = run_cli(
        server.env,
        "users", "create", "--email", address, "--name", "Grace Hopper", "--password", password,
        *(["--verified"] if verified else []),
    )  # fmt: skip
    return str(user["id"])


def emails_of(server: LiveServer) -> list[str]:
    return [str(user["email"]) for user in run_cli(server.env, "users", "list")["items"]]


def signed_in_users(database: Database) -> set[tuple[uuid.UUID | None, str | None]]:
    """(user, provider) of every signed-in browser session of the downstream."""
    with database.transaction() as session:
        query = select(BrowserSession.user_id, BrowserSession.idp).where(
            BrowserSession.user_id.is_not(None)
        )
        return {(row.user_id, row.idp) for row in session.execute(query)}


def has_no_account(server: LiveServer, address: str) -> bool:
    """``identity users show`` finds no account with this address."""
    shown = subprocess.run(
        [sys.executable, "-m", "identity", "users", "show", address, "--json"],
        env=server.env,
        capture_output=True,
        timeout=60,
    )
    return shown.returncode != 0 and b"no user" in shown.stderr


# -- the pages, as a person uses them ---------------------------------------------------------


def continue_with(page: Page, server: LiveServer, label: str) -> None:
    """The sign-in page's button for a provider."""
    page.goto(server.url + "/login")
    page.get_by_role("link", name=label, exact=True).click()


def upstream_log_in(page: Page, upstream: LiveServer, address: str, password: str) -> None:
    """The upstream's own login page, which the downstream's button led to."""
    expect(page).to_have_url(re.compile("^" + re.escape(upstream.url + "/login?next=")))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email", exact=True).fill(address)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def upstream_allow(page: Page, upstream: LiveServer, address: str) -> None:
    """The upstream's consent page for the downstream: Allow."""
    expect(page).to_have_url(re.compile("^" + re.escape(upstream.url + "/oauth2/authorize")))
    expect(
        page.get_by_role("heading", name=f"{CLIENT_NAME} wants to access your account")
    ).to_be_visible()
    expect(page.get_by_text(f"Signed in as {address}")).to_be_visible()
    page.get_by_role("button", name="Allow").click()


def upstream_sign_out(page: Page, upstream: LiveServer) -> None:
    """End the session at the upstream too, so the next sign-in there asks who it is."""
    page.goto(upstream.url + "/logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You're signed out")).to_be_visible()


def expect_account(page: Page, server: LiveServer, address: str) -> None:
    expect(page).to_have_url(server.url + "/account")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    expect(page.get_by_role("region", name="Profile")).to_contain_text(address)


def expect_dead_end(page: Page, server: LiveServer, heading: str, text: str) -> None:
    """A friendly error page whose one way on is back to the sign-in page."""
    expect(page.get_by_role("heading", name=heading)).to_be_visible()
    expect(page.get_by_text(text)).to_be_visible()
    back = page.get_by_role("link", name="Back to sign in")
    expect(back).to_have_attribute("href", "/login")
    expect_signed_out(page, server)


# -- 1. another identity instance as the provider ------------------------------------------


def test_sign_in_with_another_identity_instance_creates_links_and_unlinks(
    page: Page,
    federating_server: LiveServer,
    upstream_server: LiveServer,
    database: Database,
    smtp_sink: SmtpSink,
    screenshot: Screenshot,
    page_problems: list[str],
) -> None:
    downstream, upstream = federating_server, upstream_server
    connect_corp(downstream, upstream)
    grace = new_email("grace")
    create_user(upstream, grace, UPSTREAM_PASSWORD)
    # Every callback the browser brings to the downstream, and every upstream login page.
    callbacks: list[str] = []
    upstream_logins: list[str] = []

    def on_request(request: Request) -> None:
        if not request.is_navigation_request():
            return
        if request.url.startswith(downstream.url + "/login/with/corp/callback?"):
            callbacks.append(request.url)
        elif request.url.startswith(upstream.url + "/login?"):
            upstream_logins.append(request.url)

    page.on("request", on_request)

    # (a) First sign-in: the upstream's login and consent pages, then an account here.
    page.goto(downstream.url + "/login")
    expect(page.get_by_role("link", name=CORP)).to_have_attribute("href", "/login/with/corp")
    screenshot(page, "login-with-corp")
    page.get_by_role("link", name=CORP).click()
    upstream_log_in(page, upstream, grace, UPSTREAM_PASSWORD)
    screenshot(page, "upstream-consent")
    upstream_allow(page, upstream, grace)
    expect_account(page, downstream, grace)
    profile = page.get_by_role("region", name="Profile")
    expect(profile).to_contain_text("Grace Hopper")  # the upstream's profile scope
    expect(profile).to_contain_text("verified")
    providers = page.get_by_role("region", name="Sign-in providers")
    expect(providers.get_by_role("listitem")).to_have_count(1)
    expect(providers).to_contain_text("Corp")
    expect(providers).to_contain_text(grace)
    expect(providers.get_by_role("button", name="Unlink Corp")).to_be_visible()
    screenshot(page, "signed-in-with-corp")
    created = run_cli(downstream.env, "users", "show", grace)
    assert created["email_verified"] is True and created["is_active"] is True
    grace_id = uuid.UUID(str(created["id"]))
    assert signed_in_users(database) == {(grace_id, "corp")}
    assert len(callbacks) == 1 and len(upstream_logins) == 1
    answer = parse_qs(urlsplit(callbacks[0]).query)
    assert set(answer) == {"code", "state", "iss"} and answer["iss"] == [upstream.url]

    # (b) Signed out here only: the upstream session answers at once, no login or consent
    # page, and the same account signs in again.
    sign_out(page, downstream)
    continue_with(page, downstream, CORP)
    expect_account(page, downstream, grace)
    assert len(callbacks) == 2 and len(upstream_logins) == 1
    assert emails_of(downstream) == [grace]
    assert signed_in_users(database) == {(grace_id, "corp")}

    # (f) The provider is this account's only way in: it cannot be unlinked.
    providers.get_by_role("button", name="Unlink Corp").click()
    expect(page.get_by_role("heading", name="This is your only way to sign in")).to_be_visible()
    expect(page.get_by_text("Set a password first")).to_be_visible()
    screenshot(page, "unlink-refused")
    page.get_by_role("link", name="Back to your account").click()
    expect(page).to_have_url(downstream.url + "/account")
    expect(providers).to_contain_text(grace)

    # (e) A replayed callback, once signed out, signs nobody in: a callback works once.
    sign_out(page, downstream)
    page.goto(callbacks[0])
    expect_dead_end(page, downstream, EXPIRED, "was not started in this browser")
    screenshot(page, "callback-replayed")
    page.goto(callbacks[1])
    expect_dead_end(page, downstream, EXPIRED, "was not started in this browser")

    # (e) A forged state: the same friendly page, and its button leads back to sign in.
    page.goto(downstream.url + "/login/with/corp/callback?code=x&state=forged")
    expect_dead_end(page, downstream, EXPIRED, "was not started in this browser")
    page.get_by_role("link", name="Back to sign in").click()
    expect(page).to_have_url(downstream.url + "/login")
    assert signed_in_users(database) == set()

    # (c) Someone else at the upstream whose address has a local account with a password:
    # nothing links until the local password is typed.
    upstream_sign_out(page, upstream)
    alan = new_email("alan")
    create_user(upstream, alan, UPSTREAM_PASSWORD)
    alan_id = create_user(downstream, alan, LOCAL_PASSWORD)
    continue_with(page, downstream, CORP)
    upstream_log_in(page, upstream, alan, UPSTREAM_PASSWORD)
    upstream_allow(page, upstream, alan)
    expect(page).to_have_url(downstream.url + "/login/with/link")
    expect(page.get_by_role("heading", name="Link Corp to your account")).to_be_visible()
    expect(page.get_by_text("already exists")).to_contain_text(alan)
    expect_signed_out(page, downstream)
    screenshot(page, "link-asks-password")

    password = page.get_by_label("Password", exact=True)
    password.fill(WRONG_PASSWORD)
    page.get_by_role("button", name="Link and continue").click()
    expect(page).to_have_url(downstream.url + "/login/with/link")
    summary = page.get_by_role("alert")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("don't match")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect_signed_out(page, downstream)
    screenshot(page, "link-wrong-password")

    password.fill(LOCAL_PASSWORD)
    page.get_by_role("button", name="Link and continue").click()
    expect_account(page, downstream, alan)
    expect(page.get_by_role("status")).to_contain_text("Corp is now linked to your account")
    expect(providers).to_contain_text("Corp")
    expect(providers).to_contain_text(alan)
    screenshot(page, "linked")
    assert signed_in_users(database) == {(uuid.UUID(alan_id), "corp")}
    assert sorted(emails_of(downstream)) == sorted([grace, alan])  # no new account
    linked = smtp_sink.wait_for(alan, subject="Corp was linked to your account")
    assert "Corp was just linked to your account" in text_body(linked[0])

    # (f) An account with a password can unlink the provider.
    providers.get_by_role("button", name="Unlink Corp").click()
    expect(page).to_have_url(downstream.url + "/account")
    expect(page.get_by_role("status")).to_contain_text("The provider is unlinked")
    expect(providers).to_contain_text("You haven't linked another provider.")
    expect(providers.get_by_role("listitem")).to_have_count(0)
    screenshot(page, "unlinked")

    # (d) An upstream account whose address is not verified: the upstream itself refuses to
    # sign it in (it sends the person to verify first), so nothing reaches the downstream.
    sign_out(page, downstream)
    upstream_sign_out(page, upstream)
    eve = new_email("eve")
    create_user(upstream, eve, UPSTREAM_PASSWORD, verified=False)
    calls_before = len(callbacks)
    continue_with(page, downstream, CORP)
    upstream_log_in(page, upstream, eve, UPSTREAM_PASSWORD)
    expect(page).to_have_url(re.compile("^" + re.escape(upstream.url + "/verify-email?")))
    expect(page.get_by_role("status")).to_contain_text(
        f"You need to verify your email address before you can continue to {CLIENT_NAME}"
    )
    screenshot(page, "upstream-asks-to-verify")
    assert len(callbacks) == calls_before
    assert has_no_account(downstream, eve)
    assert signed_in_users(database) == set()

    # Once the upstream has confirmed the address (the code it mailed), the sign-in goes
    # straight on and the downstream account is made, verified.
    code = six_digit_code(smtp_sink.wait_for(eve, subject="Confirm your email address")[0])
    expect(page.get_by_label("Email", exact=True)).to_have_value(eve)
    page.get_by_label("6-digit code", exact=True).fill(code)
    page.get_by_role("button", name="Verify").click()
    upstream_allow(page, upstream, eve)
    expect_account(page, downstream, eve)
    assert run_cli(downstream.env, "users", "show", eve)["email_verified"] is True

    assert page_problems == []


# -- 2. providers that misbehave, and GitHub ------------------------------------------------


def test_refused_upstream_answers_sign_nobody_in(
    page: Page,
    federating_server: LiveServer,
    fake_oidc: FakeOidcProvider,
    fake_github: FakeGitHub,
    database: Database,
    screenshot: Screenshot,
    page_problems: list[str],
) -> None:
    server = federating_server
    add_fake(server, "fake", fake_oidc)
    add_fake(server, "gh", fake_github)
    page.goto(server.url + "/login")
    expect(page.get_by_role("link", name="Continue with Fake")).to_be_visible()
    expect(page.get_by_role("link", name="Continue with GitHub")).to_be_visible()

    # (d) The provider does not vouch for the address: nothing is created or signed in.
    unconfirmed = new_email("mallory")
    fake_oidc.next_login(sub="mallory", email=unconfirmed, email_verified=False)
    continue_with(page, server, "Continue with Fake")
    expect(page).to_have_url(re.compile("^" + re.escape(server.url + "/login/with/fake/callback?")))
    expect(page.get_by_role("heading", name="Fake did not confirm your email")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in with your email")).to_have_attribute(
        "href", "/login"
    )
    # The other providers are offered instead.
    expect(page.get_by_role("link", name="Continue with GitHub")).to_have_attribute(
        "href", "/login/with/gh"
    )
    expect(page.get_by_role("link", name="Continue with Fake")).to_have_count(0)
    expect_signed_out(page, server)
    screenshot(page, "unconfirmed-address")
    assert has_no_account(server, unconfirmed)

    # (e) An ID token with another sign-in's nonce.
    fake_oidc.id_token_nonce = "another-sign-ins-nonce"
    fake_oidc.next_login(sub="ada", email=new_email("ada"))
    continue_with(page, server, "Continue with Fake")
    expect_dead_end(
        page, server, NOT_SIGNED_IN, "The provider's answer does not belong to this sign-in."
    )
    screenshot(page, "wrong-nonce")
    fake_oidc.id_token_nonce = None

    # (e) An ID token another issuer signed for.
    fake_oidc.id_token_issuer = "http://127.0.0.1:9/another-issuer"
    fake_oidc.next_login(sub="ada", email=new_email("ada"))
    continue_with(page, server, "Continue with Fake")
    expect_dead_end(page, server, NOT_SIGNED_IN, "did not come from the provider you chose")
    screenshot(page, "wrong-issuer")
    fake_oidc.id_token_issuer = None
    assert signed_in_users(database) == set()
    assert emails_of(server) == []

    # The same provider, answering properly, signs in: the refusals were the answers'.
    ada = new_email("ada")
    fake_oidc.next_login(sub="ada", email=ada)
    continue_with(page, server, "Continue with Fake")
    expect_account(page, server, ada)
    assert emails_of(server) == [ada]

    assert page_problems == []


def test_continue_with_github_creates_the_account_from_the_primary_verified_email(
    page: Page,
    federating_server: LiveServer,
    fake_github: FakeGitHub,
    database: Database,
    screenshot: Screenshot,
    page_problems: list[str],
) -> None:
    server = federating_server
    add_fake(server, "gh", fake_github)
    octo = new_email("octo")
    fake_github.next_login(id=4242, login="octo", name="Mona Octocat", email=octo, verified=True)

    continue_with(page, server, "Continue with GitHub")
    expect_account(page, server, octo)
    expect(page.get_by_role("region", name="Profile")).to_contain_text("Mona Octocat")
    providers = page.get_by_role("region", name="Sign-in providers")
    expect(providers).to_contain_text("GitHub")
    expect(providers).to_contain_text(octo)
    screenshot(page, "signed-in-with-github")

    # The primary address, not the verified no-reply one GitHub lists first.
    assert emails_of(server) == [octo]
    created = run_cli(server.env, "users", "show", octo)
    assert created["email_verified"] is True
    assert signed_in_users(database) == {(uuid.UUID(str(created["id"])), "gh")}
    # PKCE and the client secret went to GitHub's token endpoint.
    [token_request] = fake_github.token_requests
    assert {"client_id", "client_secret", "code", "code_verifier"} <= set(token_request["fields"])

    assert page_problems == []
