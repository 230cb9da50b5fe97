"""Second factors through the hosted pages: the sign-in's second step, step-up for apps that
want two factors (authorization and device flows), and managing the authenticator app."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from identity.accounts import factors, operators
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, BrowserSession, Client, DeviceAuthorization, User
from tests.conftest import ISSUER, MailSink, remember_secret
from tests.web_helpers import (
    PASSWORD,
    Browser,
    authenticator_of,
    csrf_of,
    id_token_of_callback,
    link_from,
    recovery_codes_in,
    set_up_authenticator,
    totp_code,
)

EMAIL = "ada@example.com"
CALLBACK = "https://app.example.com/callback"
SCOPE = "openid email"
MakeClient = Callable[..., tuple[str, str | None]]
_CONTEXT = RequestContext(ip="203.0.113.9", user_agent="pytest")


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> TestClient:
    """The app, mailing to the sink: every app of a test runs an outbox sender on the same
    database, and one without SMTP would write a mail the test waits for to a file instead."""
    return app_for(settings_for(smtp_url=mail_sink.url))


@pytest.fixture
def new_browser(
    app_for: Callable[[Settings], TestClient], settings: Settings
) -> Callable[[], Browser]:
    """Another browser: an app of its own (same database), so no cookie is shared."""
    return lambda: Browser(app_for(settings))


@pytest.fixture
def user(http: TestClient, database: Database) -> User:
    with database.transaction() as session:
        return operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=EMAIL,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )


@pytest.fixture
def signed_in(http: TestClient, user: User) -> Browser:
    """A browser signed in with the password alone (the account has no factor yet)."""
    browser = Browser(http)
    assert browser.login(EMAIL).headers["location"] == "/account"
    return browser


@pytest.fixture
def enrolled(signed_in: Browser) -> tuple[pyotp.TOTP, list[str]]:
    """The account's authenticator app, set up from the account page."""
    return set_up_authenticator(signed_in)


def _enrol_behind_its_back(http: TestClient, database: Database, user: User) -> pyotp.TOTP:
    """An authenticator app added after the browser signed in, so its session has the
    password alone while the account has a second factor (as in another browser)."""
    accounts = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get(User, user.id))
    totp = pyotp.TOTP(setup.secret)
    with database.transaction() as session:
        factors.confirm_totp(
            accounts,
            session,
            session.get(User, user.id),
            totp_code(totp, -1),
            _CONTEXT,
            authenticated_at=accounts.now(),
        )
    return totp


def _sessions_of(database: Database, user: User) -> list[BrowserSession]:
    with database.transaction() as session:
        query = select(BrowserSession).where(BrowserSession.user_id == user.id)
        return list(session.scalars(query).all())


def _audit(database: Database, kind: str) -> int:
    with database.transaction() as session:
        return len(session.scalars(select(AuditEvent).where(AuditEvent.type == kind)).all())


def _second_step(browser: Browser, page: str, field: str, code: str, next: str = "") -> Any:
    query = "?" + urlencode({"next": next}) if next else ""
    return browser.submit(f"{page}{query}", **{field: code, "next": next})


def _signed_in_as(browser: Browser) -> bool:
    return browser.http.get("/account", follow_redirects=False).status_code == 200


# -- the second step of a sign-in ----------------------------------------------------------


def test_the_password_alone_does_not_sign_in_an_account_with_an_authenticator_app(
    enrolled: tuple[pyotp.TOTP, list[str]], new_browser: Callable[[], Browser]
) -> None:
    other = new_browser()
    response = other.login(EMAIL)
    assert response.status_code == 303 and response.headers["location"] == "/login/two-factor"
    assert not _signed_in_as(other)
    page = other.http.get("/login/two-factor")
    assert page.status_code == 200
    assert 'name="code"' in page.text and 'autocomplete="one-time-code"' in page.text
    assert 'inputmode="numeric"' in page.text and 'href="/login/recovery-code"' in page.text


def test_the_right_code_signs_in_with_two_factors(
    enrolled: tuple[pyotp.TOTP, list[str]],
    new_browser: Callable[[], Browser],
    database: Database,
    user: User,
) -> None:
    totp, _codes = enrolled
    other = new_browser()
    other.login(EMAIL)
    response = _second_step(other, "/login/two-factor", "code", totp_code(totp))
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert _signed_in_as(other)
    amrs = sorted(tuple(row.amr) for row in _sessions_of(database, user))
    # The enrolling browser's session and this one: both with two factors.
    assert amrs == [("pwd", "otp", "mfa"), ("pwd", "otp", "mfa")]


def test_a_wrong_code_is_refused_and_signs_nobody_in(
    enrolled: tuple[pyotp.TOTP, list[str]], new_browser: Callable[[], Browser]
) -> None:
    totp, _codes = enrolled
    other = new_browser()
    other.login(EMAIL)
    wrong = f"{(int(totp_code(totp)) + 1) % 1_000_000:06d}"
    response = _second_step(other, "/login/two-factor", "code", wrong)
    assert response.status_code == 400 and "That code is wrong" in response.text
    assert not _signed_in_as(other)


def test_wrong_codes_are_throttled_per_account(
    enrolled: tuple[pyotp.TOTP, list[str]], new_browser: Callable[[], Browser]
) -> None:
    totp, _codes = enrolled
    other = new_browser()
    other.login(EMAIL)
    wrong = f"{(int(totp_code(totp)) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert _second_step(other, "/login/two-factor", "code", wrong).status_code == 400
    refused = _second_step(other, "/login/two-factor", "code", totp_code(totp))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert not _signed_in_as(other)


def test_the_setup_page_sends_an_anonymous_visitor_to_sign_in_first(http: TestClient) -> None:
    response = http.get("/account/two-factor/setup?next=/device", follow_redirects=False)
    assert response.status_code == 303
    assert _next_of(response.headers["location"]) == "/account/two-factor/setup?next=/device"


def test_a_code_works_once(
    enrolled: tuple[pyotp.TOTP, list[str]], new_browser: Callable[[], Browser]
) -> None:
    totp, _codes = enrolled
    first, second = new_browser(), new_browser()
    first.login(EMAIL)
    second.login(EMAIL)
    code = totp_code(totp)
    assert _second_step(first, "/login/two-factor", "code", code).status_code == 303
    replayed = _second_step(second, "/login/two-factor", "code", code)
    assert replayed.status_code == 400 and not _signed_in_as(second)


def test_a_recovery_code_signs_in_once(
    enrolled: tuple[pyotp.TOTP, list[str]], new_browser: Callable[[], Browser], user: User
) -> None:
    _totp, codes = enrolled
    first, second = new_browser(), new_browser()
    first.login(EMAIL)
    page = first.http.get("/login/recovery-code")
    assert page.status_code == 200 and 'name="recovery_code"' in page.text
    used = _second_step(first, "/login/recovery-code", "recovery_code", codes[0])
    assert used.status_code == 303 and _signed_in_as(first)
    second.login(EMAIL)
    again = _second_step(second, "/login/recovery-code", "recovery_code", codes[0])
    assert again.status_code == 400 and not _signed_in_as(second)
    # Typed as people type them: no dash, upper case.
    other = codes[1].replace("-", "").upper()
    assert _second_step(second, "/login/recovery-code", "recovery_code", other).status_code == 303


def test_a_pending_sign_in_expires_after_five_minutes(
    enrolled: tuple[pyotp.TOTP, list[str]], new_browser: Callable[[], Browser], database: Database
) -> None:
    totp, _codes = enrolled
    other = new_browser()
    other.login(EMAIL)
    with database.transaction() as session:
        for row in session.scalars(select(BrowserSession)).all():
            if "second_factor" in row.data:
                record = dict(row.data["second_factor"])
                record["at"] -= timedelta(minutes=6).total_seconds()
                row.data = {**row.data, "second_factor": record}
    token = csrf_of(other.http.get("/login").text)
    response = other.http.post(
        "/login/two-factor",
        data={"csrf_token": token, "code": totp_code(totp)},
        follow_redirects=False,
    )
    assert response.status_code == 400 and "This sign-in expired" in response.text
    assert 'href="/login"' in response.text and not _signed_in_as(other)


def test_only_the_browser_that_typed_the_password_can_finish_the_sign_in(
    enrolled: tuple[pyotp.TOTP, list[str]], new_browser: Callable[[], Browser]
) -> None:
    totp, _codes = enrolled
    typed, stranger = new_browser(), new_browser()
    typed.login(EMAIL)
    assert stranger.http.get("/login/two-factor").status_code == 400
    code = totp_code(totp)
    token = csrf_of(stranger.http.get("/login").text)
    refused = stranger.http.post(
        "/login/two-factor", data={"csrf_token": token, "code": code}, follow_redirects=False
    )
    assert refused.status_code == 400 and not _signed_in_as(stranger)
    assert _second_step(typed, "/login/two-factor", "code", code).status_code == 303


def test_a_password_reset_never_skips_the_second_factor(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
    user: User,
    database: Database,
) -> None:
    browser = Browser(app_for(settings_for(smtp_url=mail_sink.url)))
    browser.login(EMAIL)
    set_up_authenticator(browser)
    stranger = Browser(app_for(settings_for(smtp_url=mail_sink.url)))
    assert stranger.submit("/forgot-password", email=EMAIL).status_code == 303
    link = link_from(mail_sink, EMAIL, "/reset-password")
    new_password = "copper-harbour-lantern-91"
    remember_secret(new_password)
    token = link.split("token=")[1]
    page = f"/reset-password?token={token}"
    assert stranger.submit(page, token=token, password=new_password).status_code == 200
    response = stranger.login(EMAIL, new_password)
    assert response.headers["location"] == "/login/two-factor" and not _signed_in_as(stranger)


def test_a_password_reset_ends_a_sign_in_waiting_for_its_second_factor(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
    user: User,
    database: Database,
) -> None:
    owner = Browser(app_for(settings_for(smtp_url=mail_sink.url)))
    owner.login(EMAIL)
    totp, _ = set_up_authenticator(owner)
    # Someone who knows the password and will learn a code is waiting at the second step.
    waiting = Browser(app_for(settings_for(smtp_url=mail_sink.url)))
    assert waiting.login(EMAIL).headers["location"] == "/login/two-factor"
    assert owner.submit("/forgot-password", email=EMAIL).status_code == 303
    token = link_from(mail_sink, EMAIL, "/reset-password").split("token=")[1]
    new_password = "copper-harbour-lantern-92"
    remember_secret(new_password)
    page = f"/reset-password?token={token}"
    assert owner.submit(page, token=token, password=new_password).status_code == 200
    token = csrf_of(waiting.http.get("/login").text)  # the waiting browser's own session
    finished = waiting.http.post(
        "/login/two-factor",
        data={"csrf_token": token, "code": totp_code(totp, 1)},
        follow_redirects=False,
    )
    assert finished.status_code == 400 and "expired" in finished.text
    assert not _signed_in_as(waiting)


# -- managing the authenticator app --------------------------------------------------------


def test_setting_up_an_app_needs_a_recent_sign_in_or_the_password(
    signed_in: Browser, database: Database, user: User
) -> None:
    _age_sign_in(database, user)
    asked = signed_in.http.get("/account/two-factor/setup")
    assert asked.status_code == 200 and 'name="password"' in asked.text
    assert "otpauth://" not in asked.text
    wrong = signed_in.submit("/account/two-factor/setup", password="not-the-password")
    assert wrong.status_code == 400 and "otpauth://" not in wrong.text
    confirmed = signed_in.submit("/account/two-factor/setup", password=PASSWORD)
    assert confirmed.status_code == 303
    page = signed_in.http.get(confirmed.headers["location"])
    assert "otpauth://" in page.text
    totp = authenticator_of(page.text)
    turned_on = signed_in.submit("/account/two-factor/setup", code=totp.now())
    assert turned_on.status_code == 200 and len(recovery_codes_in(turned_on.text)) == 10


def test_the_setup_page_shows_the_uri_and_a_qr_code_under_the_csp(signed_in: Browser) -> None:
    page = signed_in.http.get("/account/two-factor/setup")
    assert page.status_code == 200 and "otpauth://totp/" in page.text
    svg = page.text.split('<figure class="qr-code">')[1].split("</figure>")[0]
    assert "<svg" in svg and "style=" not in svg and "<script" not in svg
    assert 'autocomplete="one-time-code"' in page.text and 'name="csrf_token"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_confirming_shows_ten_codes_and_counts_as_this_sessions_second_factor(
    signed_in: Browser, database: Database, user: User
) -> None:
    before = signed_in.http.cookies.get("identity_session")
    _totp, codes = set_up_authenticator(signed_in)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert signed_in.http.cookies.get("identity_session") != before  # a new session id
    assert [row.amr for row in _sessions_of(database, user)] == [["pwd", "otp", "mfa"]]
    assert _audit(database, "mfa.step_up") == 1
    account = signed_in.http.get("/account").text
    section = account.split('id="two-factor-title"')[1].split("</section>")[0]
    assert "Authenticator app" in section and "10 recovery codes left" in section


def test_a_wrong_first_code_keeps_the_app_off(signed_in: Browser, database: Database) -> None:
    page = signed_in.http.get("/account/two-factor/setup")
    response = signed_in.http.post(
        "/account/two-factor/setup",
        data={"csrf_token": csrf_of(page.text), "code": "000000"},
        follow_redirects=False,
    )
    assert response.status_code == 400 and "otpauth://totp/" in response.text
    with database.transaction() as session:
        assert not factors.has_second_factor(session, session.scalars(select(User)).one())


def test_the_download_is_a_text_attachment_of_well_formed_codes_only(
    signed_in: Browser, enrolled: tuple[pyotp.TOTP, list[str]]
) -> None:
    _totp, codes = enrolled
    token = csrf_of(signed_in.http.get("/account").text)
    sent = " ".join([*codes, "<script>alert(1)</script>", "not-a-code"])
    response = signed_in.http.post(
        "/account/two-factor/recovery-codes/download",
        data={"csrf_token": token, "recovery_codes": sent},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="identity-recovery-codes.txt"'
    assert all(code in response.text for code in codes)
    assert "<script>" not in response.text and "not-a-code" not in response.text
    forged = signed_in.http.post(
        "/account/two-factor/recovery-codes/download", data={"recovery_codes": sent}
    )
    assert forged.status_code == 403


def _age_sign_in(database: Database, user: User) -> None:
    with database.transaction() as session:
        query = select(BrowserSession).where(BrowserSession.user_id == user.id)
        for row in session.scalars(query).all():
            assert row.auth_time is not None
            row.auth_time -= timedelta(minutes=10)


def test_removing_the_app_needs_a_recent_sign_in_or_the_password(
    signed_in: Browser, enrolled: tuple[pyotp.TOTP, list[str]], database: Database, user: User
) -> None:
    _age_sign_in(database, user)
    asked = signed_in.submit("/account", "/account/two-factor/remove")
    assert asked.status_code == 200 and 'name="password"' in asked.text
    assert 'action="/account/two-factor/remove"' in asked.text
    wrong = signed_in.submit("/account", "/account/two-factor/remove", password="not-it-at-all")
    assert wrong.status_code == 400 and "That password is wrong" in wrong.text
    with database.transaction() as session:
        assert factors.has_second_factor(session, session.get(User, user.id))
    done = signed_in.submit("/account", "/account/two-factor/remove", password=PASSWORD)
    assert done.status_code == 303 and done.headers["location"] == "/account"
    with database.transaction() as session:
        assert not factors.has_second_factor(session, session.get(User, user.id))
    assert "Set up an authenticator app" in signed_in.http.get("/account").text


def test_new_recovery_codes_replace_the_old_ones(
    signed_in: Browser,
    enrolled: tuple[pyotp.TOTP, list[str]],
    new_browser: Callable[[], Browser],
) -> None:
    _totp, old = enrolled
    # Just signed in (the setup counted as a sign-in): no password asked.
    page = signed_in.submit("/account", "/account/two-factor/recovery-codes")
    new = recovery_codes_in(page.text)
    assert page.status_code == 200 and len(new) == 10 and not set(new) & set(old)
    other = new_browser()
    other.login(EMAIL)
    assert _second_step(other, "/login/recovery-code", "recovery_code", old[0]).status_code == 400
    assert _second_step(other, "/login/recovery-code", "recovery_code", new[0]).status_code == 303


# -- step-up for apps that want two factors ------------------------------------------------


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _app(make_client: MakeClient, database: Database, *, require_mfa: bool) -> tuple[str, str]:
    client_id, secret = make_client(
        name="Payroll",
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
        scope=SCOPE,
    )
    assert secret is not None
    with database.transaction() as session:
        session.execute(
            update(Client).where(Client.client_id == client_id).values(require_mfa=require_mfa)
        )
    return client_id, secret


def _authorize(http: TestClient, client_id: str, verifier: str = "", **params: str) -> Any:
    challenge = _pkce()[1] if not verifier else _pkce_of(verifier)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": SCOPE,
        "state": "xyz",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    return http.get(f"/oauth2/authorize?{urlencode(query)}", follow_redirects=False)


def _pkce_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _next_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["next"][0]


def _allow(http: TestClient, consent_page: Any) -> Any:
    assert consent_page.status_code == 200 and 'name="rid"' in consent_page.text
    rid = consent_page.text.split('name="rid" value="')[1].split('"')[0]
    return http.post(
        "/oauth2/authorize/consent",
        data={"csrf_token": csrf_of(consent_page.text), "rid": rid, "decision": "allow"},
        follow_redirects=False,
    )


def test_an_app_that_requires_two_factors_steps_a_password_session_up(
    http: TestClient,
    signed_in: Browser,
    make_client: MakeClient,
    database: Database,
    user: User,
) -> None:
    client_id, secret = _app(make_client, database, require_mfa=True)
    totp = _enrol_behind_its_back(http, database, user)
    verifier, _ = _pkce()
    response = _authorize(http, client_id, verifier)
    location = response.headers["location"]
    assert response.status_code == 303 and location.startswith("/login/two-factor?next=")
    next_path = _next_of(location)
    assert next_path.startswith("/oauth2/authorize/resume?rid=")
    page = http.get(location)
    assert page.status_code == 200 and f'value="{next_path}"' in page.text
    stepped = _second_step(signed_in, "/login/two-factor", "code", totp_code(totp), next_path)
    assert stepped.status_code == 303 and stepped.headers["location"] == next_path
    assert _audit(database, "mfa.step_up") == 1
    callback = _allow(http, http.get(next_path, follow_redirects=False))
    claims = id_token_of_callback(
        http, callback.headers["location"], (client_id, secret), verifier, CALLBACK
    )
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["iss"] == ISSUER


def test_an_app_without_the_requirement_takes_the_password_alone(
    http: TestClient, signed_in: Browser, make_client: MakeClient, database: Database, user: User
) -> None:
    client_id, _ = _app(make_client, database, require_mfa=False)
    _enrol_behind_its_back(http, database, user)
    response = _authorize(http, client_id)
    assert response.status_code == 200 and 'name="rid"' in response.text  # the consent page


def test_asking_for_level_two_without_a_factor_sets_one_up_inside_the_flow(
    http: TestClient, signed_in: Browser, make_client: MakeClient, database: Database
) -> None:
    client_id, _ = _app(make_client, database, require_mfa=False)
    response = _authorize(http, client_id, acr_values=factors.LOA_MULTI_FACTOR)
    location = response.headers["location"]
    assert response.status_code == 303 and location.startswith("/account/two-factor/setup?next=")
    next_path = _next_of(location)
    page = http.get(location)
    assert f'value="{next_path}"' in page.text
    _totp, codes = set_up_authenticator(signed_in, next_path)
    assert len(codes) == 10
    # The codes page goes on to the app: "Continue" resumes the request, now with two factors.
    resumed = http.get(next_path, follow_redirects=False)
    assert resumed.status_code == 200 and 'name="rid"' in resumed.text


def test_the_codes_page_continues_to_the_flow(
    http: TestClient, signed_in: Browser, make_client: MakeClient, database: Database
) -> None:
    client_id, _ = _app(make_client, database, require_mfa=True)
    next_path = _next_of(_authorize(http, client_id).headers["location"])
    page = http.get("/account/two-factor/setup?" + urlencode({"next": next_path}))
    done = http.post(
        "/account/two-factor/setup",
        data={
            "csrf_token": csrf_of(page.text),
            "code": totp_code(authenticator_of(page.text), -1),
            "next": next_path,
        },
    )
    assert done.status_code == 200 and f'href="{next_path.replace("&", "&amp;")}"' in done.text
    assert ">Continue<" in done.text


def test_prompt_none_without_two_factors_is_interaction_required(
    http: TestClient, signed_in: Browser, make_client: MakeClient, database: Database, user: User
) -> None:
    client_id, _ = _app(make_client, database, require_mfa=True)
    _enrol_behind_its_back(http, database, user)
    response = _authorize(http, client_id, prompt="none")
    location = response.headers["location"]
    assert location.startswith(CALLBACK)
    params = parse_qs(urlsplit(location).query)
    assert params["error"] == ["interaction_required"] and params["state"] == ["xyz"]


def test_prompt_login_asks_the_password_and_then_the_code_again(
    http: TestClient,
    signed_in: Browser,
    enrolled: tuple[pyotp.TOTP, list[str]],
    make_client: MakeClient,
    database: Database,
) -> None:
    totp, _codes = enrolled
    client_id, _ = _app(make_client, database, require_mfa=True)
    response = _authorize(http, client_id, prompt="login")
    assert response.headers["location"].startswith("/login?")
    next_path = _next_of(response.headers["location"])
    logged = signed_in.login(EMAIL, next=next_path)
    assert logged.headers["location"] == "/login/two-factor"
    finished = _second_step(signed_in, "/login/two-factor", "code", totp_code(totp))
    assert finished.headers["location"] == next_path
    assert http.get(next_path, follow_redirects=False).status_code == 200  # consent, no loop


def test_approving_a_device_for_an_app_that_requires_two_factors_steps_up(
    http: TestClient, signed_in: Browser, make_client: MakeClient, database: Database, user: User
) -> None:
    client_id, secret = _app(make_client, database, require_mfa=True)
    totp = _enrol_behind_its_back(http, database, user)
    started = http.post(
        "/oauth2/device_authorization", data={"scope": SCOPE}, auth=(client_id, secret)
    ).json()
    remember_secret(started["device_code"])
    user_code = started["user_code"]
    asked = signed_in.submit("/device", user_code=user_code)
    assert asked.status_code == 303
    assert asked.headers["location"].startswith("/login/two-factor?next=")
    next_path = _next_of(asked.headers["location"])
    assert next_path == f"/device?user_code={user_code}"
    # Posting the decision straight away changes nothing either.
    direct = signed_in.submit("/device", "/device/decision", user_code=user_code, decision="allow")
    assert direct.status_code == 303 and direct.headers["location"].startswith("/login/two-factor")
    with database.transaction() as session:
        assert session.scalars(select(DeviceAuthorization)).one().status == "pending"
    stepped = _second_step(signed_in, "/login/two-factor", "code", totp_code(totp), next_path)
    assert stepped.headers["location"] == next_path
    allowed = signed_in.submit(next_path, "/device/decision", user_code=user_code, decision="allow")
    assert allowed.status_code == 200 and "Device connected" in allowed.text
    with database.transaction() as session:
        row = session.scalars(select(DeviceAuthorization)).one()
        assert row.status == "approved" and row.amr == ["pwd", "otp", "mfa"]
