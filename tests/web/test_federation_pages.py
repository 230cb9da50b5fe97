"""Signing in with another provider through the hosted pages, against the fake upstreams of
tests/fake_upstreams.py: the start, the callback, linking an account that exists, identity's
own second step after a federated sign-in, an app's waiting request, and /account."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from identity import repositories
from identity.accounts import factors, operators
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, BrowserSession, FederatedIdentity, OutboxMessage, User
from tests import fake_upstreams
from tests.conftest import MailSink
from tests.fake_upstreams import FakeGitHub, FakeOidcProvider
from tests.web_helpers import (
    PASSWORD,
    Browser,
    code_from,
    csrf_of,
    id_token_of_callback,
    link_from,
    totp_code,
)

EMAIL = "ada@example.com"
CALLBACK = "https://app.example.com/callback"
_CONTEXT = RequestContext(ip="203.0.113.9", user_agent="pytest")
# The fake upstreams' fixtures, for this module's tests.
fake_oidc = fake_upstreams.fake_oidc
fake_github = fake_upstreams.fake_github


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> TestClient:
    """A browser on an app that accepts plain-http upstreams (the fakes), sees a provider
    change at once, and mails to the sink (its outbox sender blanks a sent mail's body)."""
    return app_for(settings_for(insecure_http=True, cache_check_seconds=0, smtp_url=mail_sink.url))


def _add_provider(
    http: TestClient, database: Database, name: str, fake: Any, **options: Any
) -> None:
    with database.transaction() as session:
        http.app.state.providers.add(  # type: ignore[attr-defined]
            session,
            name=name,
            issuer=fake.issuer,
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            **options,
        )


@pytest.fixture
def corp(http: TestClient, database: Database, fake_oidc: FakeOidcProvider) -> FakeOidcProvider:
    """The fake OpenID Connect provider, added as "corp"."""
    _add_provider(http, database, "corp", fake_oidc, label="Continue with Corp")
    return fake_oidc


def _start(http: TestClient, name: str, next: str = "") -> str:
    """The callback URL the upstream sends the browser back to (the fakes answer at once)."""
    query = "?" + urlencode({"next": next}) if next else ""
    started = http.get(f"/login/with/{name}{query}", follow_redirects=False)
    assert started.status_code == 303, started.text
    # The TestClient never leaves the app: the upstream's leg goes over the loopback.
    upstream = httpx.get(started.headers["location"], follow_redirects=False)
    assert upstream.status_code == 302, upstream.text
    return str(upstream.headers["location"])


def _sign_in_with(http: TestClient, name: str, next: str = "") -> Any:
    return http.get(_start(http, name, next), follow_redirects=False)


def _user(database: Database, email: str = EMAIL) -> User | None:
    with database.transaction() as session:
        return repositories.get_user_by_email(session, email)


def _users(database: Database) -> int:
    with database.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


def _session_of(database: Database, user: User) -> BrowserSession:
    with database.transaction() as session:
        query = select(BrowserSession).where(BrowserSession.user_id == user.id)
        return session.scalars(query.order_by(BrowserSession.created_at.desc())).first()  # type: ignore[return-value]


def _sessions_of(database: Database, user: User) -> list[BrowserSession]:
    with database.transaction() as session:
        query = select(BrowserSession).where(BrowserSession.user_id == user.id)
        return list(session.scalars(query).all())


def _links(database: Database) -> list[FederatedIdentity]:
    with database.transaction() as session:
        return list(session.scalars(select(FederatedIdentity)).all())


def _audit(database: Database, kind: str) -> list[AuditEvent]:
    with database.transaction() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.type == kind)).all())


def _local_user(http: TestClient, database: Database, email: str = EMAIL) -> User:
    with database.transaction() as session:
        return operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=email,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )


def _row(session: Session, user: User) -> User:
    row = session.get(User, user.id)
    assert row is not None
    return row


def _enrol(http: TestClient, database: Database, user: User) -> pyotp.TOTP:
    accounts = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, _row(session, user))
    totp = pyotp.TOTP(setup.secret)
    with database.transaction() as session:
        factors.confirm_totp(
            accounts,
            session,
            _row(session, user),
            totp_code(totp, -1),
            _CONTEXT,
            authenticated_at=accounts.now(),
        )
    return totp


# -- the login page and the start ---------------------------------------------------------------


def test_the_login_page_offers_each_enabled_provider_with_next(
    http: TestClient,
    database: Database,
    corp: FakeOidcProvider,
    fake_github: FakeGitHub,
) -> None:
    _add_provider(http, database, "hub", fake_github, preset="github")
    with database.transaction() as session:
        http.app.state.providers.disable(session, "hub")  # type: ignore[attr-defined]
    page = http.get("/login?next=/account/x")
    assert page.status_code == 200
    assert (
        'href="/login/with/corp?next=/account/x"' in page.text and "Continue with Corp" in page.text
    )
    assert "/login/with/hub" not in page.text


@pytest.mark.parametrize("name", ["nobody", "hub"])
def test_an_unknown_or_disabled_provider_is_a_friendly_404(
    http: TestClient,
    database: Database,
    fake_github: FakeGitHub,
    name: str,
) -> None:
    _add_provider(http, database, "hub", fake_github, preset="github")
    with database.transaction() as session:
        http.app.state.providers.disable(session, "hub")  # type: ignore[attr-defined]
    response = http.get(f"/login/with/{name}", follow_redirects=False)
    assert response.status_code == 404 and "not available" in response.text


# -- first sign-in, the next one ------------------------------------------------------------


def test_a_first_sign_in_creates_the_account_and_signs_it_in(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.next_login(sub="ada-at-corp", email=EMAIL, amr=[])
    response = _sign_in_with(http, "corp")
    assert response.status_code == 303 and response.headers["location"] == "/account"
    user = _user(database)
    assert user is not None and user.email_verified and user.password_hash is None
    browser_session = _session_of(database, user)
    assert browser_session.amr == ["fed"] and browser_session.idp == "corp"
    account = http.get("/account")
    assert account.status_code == 200
    assert "Sign-in providers" in account.text and "Corp" in account.text
    assert len(_audit(database, "federation.account_created")) == 1


def test_an_account_made_through_a_provider_sets_a_password_with_a_reset(
    http: TestClient, mail_sink: MailSink, corp: FakeOidcProvider
) -> None:
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    assert _sign_in_with(http, "corp").headers["location"] == "/account"
    browser = Browser(TestClient(http.app, base_url=str(http.base_url)))
    assert browser.submit("/forgot-password", email=EMAIL).status_code == 303
    token = link_from(mail_sink, EMAIL, "/reset-password").split("token=")[1]
    page = f"/reset-password?token={token}"
    assert browser.submit(page, token=token, password=PASSWORD).status_code == 200
    signed_in = browser.login(EMAIL, PASSWORD)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/account"


def test_a_second_sign_in_finds_the_same_account(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    assert _sign_in_with(http, "corp").status_code == 303
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    again = _sign_in_with(http, "corp")
    assert again.status_code == 303 and again.headers["location"] == "/account"
    assert _users(database) == 1 and len(_links(database)) == 1
    assert len(_audit(database, "federation.signed_in")) == 2


def test_an_unverified_email_creates_nothing_and_offers_the_other_ways(
    http: TestClient,
    database: Database,
    corp: FakeOidcProvider,
    fake_github: FakeGitHub,
) -> None:
    _add_provider(http, database, "hub", fake_github, preset="github")
    corp.next_login(sub="someone", email=EMAIL, email_verified=False)
    response = _sign_in_with(http, "corp")
    assert response.status_code == 403
    assert "Corp did not confirm your email" in response.text
    assert 'href="/login"' in response.text and 'href="/login/with/hub"' in response.text
    assert _users(database) == 0 and _links(database) == []
    assert [e.detail["reason"] for e in _audit(database, "federation.refused")] == [
        "unverified_email"
    ]


# -- callbacks that must not work -------------------------------------------------------------


def test_a_forged_state_is_refused(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    http.get("/login/with/corp", follow_redirects=False)  # a real sign-in waits in this browser
    response = http.get("/login/with/corp/callback?code=abc&state=forged", follow_redirects=False)
    assert response.status_code == 400 and "not started in this browser" in response.text
    assert _users(database) == 0


def test_a_callback_from_another_browser_is_refused(
    http: TestClient,
    database: Database,
    corp: FakeOidcProvider,
) -> None:
    callback = _start(http, "corp")
    other = TestClient(http.app, base_url=str(http.base_url))
    assert other.get(callback, follow_redirects=False).status_code == 400
    assert _users(database) == 0


def test_a_replayed_callback_is_refused(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    callback = _start(http, "corp")
    assert http.get(callback, follow_redirects=False).status_code == 303
    replayed = http.get(callback, follow_redirects=False)
    assert replayed.status_code == 400 and "expired" in replayed.text


def test_an_upstream_error_is_a_friendly_page_and_an_audit_row(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.id_token_nonce = "not-this-sign-ins-nonce"
    response = _sign_in_with(http, "corp")
    assert response.status_code == 400
    assert "does not belong to this sign-in" in response.text and 'href="/login"' in response.text
    assert _users(database) == 0
    [event] = _audit(database, "federation.upstream_error")
    assert event.detail == {"provider": "corp", "reason": "nonce"}


def test_a_denial_at_the_upstream_shows_our_words_not_theirs(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.deny = True
    response = _sign_in_with(http, "corp")
    assert response.status_code == 400 and "cancelled at the provider" in response.text
    assert "go away" not in response.text
    assert [e.detail["reason"] for e in _audit(database, "federation.upstream_error")] == ["denied"]


# -- an account that exists: prove it, then link ----------------------------------------------


def _proof_page(
    http: TestClient, database: Database, corp: FakeOidcProvider, next: str = ""
) -> str:
    corp.next_login(sub="ada-at-corp", email=EMAIL, amr=["pwd"])
    response = _sign_in_with(http, "corp", next)
    assert response.status_code == 303 and response.headers["location"] == "/login/with/link"
    page = http.get("/login/with/link")
    assert page.status_code == 200
    assert f'An account with <strong class="break">{EMAIL}</strong> already exists' in page.text
    assert "link Corp" in page.text
    return page.text


def test_an_existing_account_is_linked_only_with_its_password(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    local = _local_user(http, database)
    page = _proof_page(http, database, corp)
    assert _links(database) == []
    wrong = http.post(
        "/login/with/link",
        data={"csrf_token": csrf_of(page), "password": "not-the-password"},
        follow_redirects=False,
    )
    assert wrong.status_code == 400 and _links(database) == []
    assert http.get("/account", follow_redirects=False).status_code == 303  # not signed in
    right = http.post(
        "/login/with/link",
        data={"csrf_token": csrf_of(page), "password": PASSWORD},
        follow_redirects=False,
    )
    assert right.status_code == 303 and right.headers["location"] == "/account"
    [link] = _links(database)
    assert link.user_id == local.id and link.subject == "ada-at-corp"
    browser_session = _session_of(database, local)
    assert browser_session.idp == "corp" and browser_session.amr == ["fed", "pwd"]
    with database.transaction() as session:
        notices = session.scalars(
            select(OutboxMessage).where(OutboxMessage.template == "provider_linked")
        ).all()
        assert [n.to_address for n in notices] == [EMAIL]
    # The next sign-in with it needs no password.
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    fresh = TestClient(http.app, base_url=str(http.base_url))
    assert _sign_in_with(fresh, "corp").headers["location"] == "/account"


def test_an_account_without_a_password_is_linked_with_a_code_mailed_to_it(
    http: TestClient,
    mail_sink: MailSink,
    database: Database,
    corp: FakeOidcProvider,
    fake_github: FakeGitHub,
) -> None:
    # An account made through GitHub has no password; Corp vouches for the same address.
    _add_provider(http, database, "github", fake_github, preset="github")
    fake_github.next_login(id=7, email=EMAIL)
    assert _sign_in_with(http, "github").headers["location"] == "/account"
    owner = _user(database)
    assert owner is not None and owner.password_hash is None
    browser = TestClient(http.app, base_url=str(http.base_url))
    page = _proof_page(browser, database, corp)
    assert 'name="code"' in page and 'name="password"' not in page
    code = code_from(mail_sink, EMAIL)
    # Reloading the page sends no second mail.
    browser.get("/login/with/link")
    with database.transaction() as session:
        query = select(func.count()).where(OutboxMessage.template == "link_code")
        assert session.scalar(query) == 1
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
    wrong = browser.post(
        "/login/with/link",
        data={"csrf_token": csrf_of(page), "code": wrong_code},
        follow_redirects=False,
    )
    assert wrong.status_code == 400 and [link.provider for link in _links(database)] == ["github"]
    right = browser.post(
        "/login/with/link",
        data={"csrf_token": csrf_of(page), "code": code},
        follow_redirects=False,
    )
    assert right.status_code == 303 and right.headers["location"] == "/account"
    assert sorted(link.provider for link in _links(database)) == ["corp", "github"]
    # The mailbox proved the account, not a way of signing in: the upstream's methods only.
    rows = [row for row in _sessions_of(database, owner) if row.idp == "corp"]
    assert rows and rows[-1].amr == ["fed", "pwd"]


def test_the_link_page_without_a_waiting_link_has_expired(http: TestClient) -> None:
    response = http.get("/login/with/link")
    assert response.status_code == 400 and "expired" in response.text


def test_an_account_with_a_second_factor_links_only_after_it(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    local = _local_user(http, database)
    totp = _enrol(http, database, local)
    page = _proof_page(http, database, corp)
    proven = http.post(
        "/login/with/link",
        data={"csrf_token": csrf_of(page), "password": PASSWORD},
        follow_redirects=False,
    )
    assert proven.status_code == 303 and proven.headers["location"] == "/login/two-factor"
    assert _links(database) == []
    step = Browser(http).submit("/login/two-factor", code=totp_code(totp))
    assert step.status_code == 303 and step.headers["location"] == "/login/with/corp/finish"
    assert _links(database) == []
    finished = http.get(step.headers["location"], follow_redirects=False)
    assert finished.status_code == 303 and finished.headers["location"] == "/account"
    [link] = _links(database)
    assert link.user_id == local.id
    browser_session = _session_of(database, local)
    assert browser_session.idp == "corp"
    assert browser_session.amr == ["fed", "pwd", "otp", "mfa"]


def test_the_finish_page_links_nothing_before_the_second_step(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    local = _local_user(http, database)
    _enrol(http, database, local)
    page = _proof_page(http, database, corp)
    http.post("/login/with/link", data={"csrf_token": csrf_of(page), "password": PASSWORD})
    skipped = http.get("/login/with/corp/finish", follow_redirects=False)
    assert skipped.status_code == 400 and _links(database) == []
    assert http.get("/account", follow_redirects=False).status_code == 303  # not signed in


def test_a_federated_sign_in_asks_for_the_accounts_own_second_factor(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    assert _sign_in_with(http, "corp").status_code == 303
    user = _user(database)
    assert user is not None
    totp = _enrol(http, database, user)
    fresh = TestClient(http.app, base_url=str(http.base_url))
    corp.next_login(sub="ada-at-corp", email=EMAIL, amr=["pwd", "mfa"])  # corp is not trusted
    response = _sign_in_with(fresh, "corp")
    assert response.status_code == 303 and response.headers["location"] == "/login/two-factor"
    assert fresh.get("/account", follow_redirects=False).status_code == 303  # not yet
    step = Browser(fresh).submit("/login/two-factor", code=totp_code(totp))
    assert step.status_code == 303 and step.headers["location"] == "/account"
    browser_session = _session_of(database, user)
    assert browser_session.idp == "corp" and browser_session.amr == ["fed", "pwd", "otp", "mfa"]


# -- an app's request waiting before the federated sign-in ------------------------------------


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _app_request(
    http: TestClient, make_client: Callable[..., tuple[str, str | None]], challenge: str
) -> tuple[str, str, Any]:
    """An app's authorization request, waiting for a sign-in: (client id, secret, the
    redirect to the login page)."""
    client_id, secret = make_client(
        name="Payroll", redirect_uris=[CALLBACK], scope="openid email", first_party=True
    )
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid email",
        "state": "xyz",
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    login = http.get(f"/oauth2/authorize?{urlencode(query)}", follow_redirects=False)
    assert login.status_code == 303
    return client_id, secret or "", login


def test_a_waiting_authorization_request_continues_after_the_federated_sign_in(
    http: TestClient,
    database: Database,
    corp: FakeOidcProvider,
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    verifier, challenge = _pkce()
    client_id, secret, login = _app_request(http, make_client, challenge)
    next_path = parse_qs(urlsplit(login.headers["location"]).query)["next"][0]
    page = http.get(login.headers["location"]).text
    button = re.search(r'href="(/login/with/corp\?next=[^"]+)"', page)
    assert button is not None  # the button takes the waiting request along
    assert parse_qs(urlsplit(html.unescape(button.group(1))).query)["next"] == [next_path]
    corp.next_login(sub="ada-at-corp", email=EMAIL, amr=["pwd"])
    signed_in = _sign_in_with(http, "corp", next_path)
    assert signed_in.headers["location"] == next_path
    back = http.get(next_path, follow_redirects=False)
    assert back.headers["location"].startswith(CALLBACK + "?")
    claims = id_token_of_callback(
        http, back.headers["location"], (client_id, secret), verifier, CALLBACK
    )
    assert claims["amr"] == ["fed", "pwd"] and claims["idp"] == "corp"


def test_a_sign_in_without_next_goes_on_to_the_waiting_request(
    http: TestClient,
    database: Database,
    corp: FakeOidcProvider,
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    _, _, login = _app_request(http, make_client, _pkce()[1])
    next_path = parse_qs(urlsplit(login.headers["location"]).query)["next"][0]
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    assert _sign_in_with(http, "corp").headers["location"] == next_path


# -- GitHub -----------------------------------------------------------------------------------


def test_a_github_provider_signs_in_with_its_numeric_id(
    http: TestClient,
    database: Database,
    fake_github: FakeGitHub,
) -> None:
    _add_provider(http, database, "github", fake_github, preset="github")
    fake_github.next_login(id=4242, email="octo@example.com")
    response = _sign_in_with(http, "github")
    assert response.status_code == 303 and response.headers["location"] == "/account"
    [link] = _links(database)
    assert (link.provider, link.subject, link.email) == ("github", "4242", "octo@example.com")
    user = _user(database, "octo@example.com")
    assert user is not None and _session_of(database, user).idp == "github"


# -- /account: the links and unlinking --------------------------------------------------------


def _unlink(http: TestClient, name: str) -> Any:
    page = http.get("/account")
    return http.post(
        f"/account/providers/{name}/unlink",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )


def test_the_only_way_in_cannot_be_unlinked_from_the_account_page(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    _sign_in_with(http, "corp")
    refused = _unlink(http, "corp")
    assert refused.status_code == 400 and "only way to sign in" in refused.text
    assert len(_links(database)) == 1


def test_a_link_beside_a_password_can_be_unlinked(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    _local_user(http, database)
    page = _proof_page(http, database, corp)
    http.post("/login/with/link", data={"csrf_token": csrf_of(page), "password": PASSWORD})
    account = http.get("/account").text
    assert 'action="/account/providers/corp/unlink"' in account and EMAIL in account
    response = _unlink(http, "corp")
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert _links(database) == [] and len(_audit(database, "federation.unlinked")) == 1
    assert _unlink(http, "corp").status_code == 404


def test_unlinking_needs_the_forms_csrf_token(
    http: TestClient, database: Database, corp: FakeOidcProvider
) -> None:
    corp.next_login(sub="ada-at-corp", email=EMAIL)
    _sign_in_with(http, "corp")
    response = http.post("/account/providers/corp/unlink", data={}, follow_redirects=False)
    assert response.status_code == 403 and len(_links(database)) == 1
