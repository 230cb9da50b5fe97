"""The account rules of SECURITY.md, through the hosted pages."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, BrowserSession, OneTimeToken, OutboxMessage, User
from tests.conftest import MailSink
from tests.web_helpers import PASSWORD, Browser, code_from, csrf_of, link_from, registered


@pytest.fixture
def app_settings(settings_for: Callable[..., Settings], mail_sink: MailSink) -> Settings:
    return settings_for(smtp_url=mail_sink.url)


@pytest.fixture
def visitor(app_for: Callable[[Settings], TestClient], app_settings: Settings) -> Browser:
    return Browser(app_for(app_settings))


def _user(database: Database, email: str) -> User | None:
    with database.transaction() as session:
        return session.scalars(select(User).where(User.email == email)).one_or_none()


def _scrub(html: str, *secrets: str) -> str:
    """Remove what legitimately differs between two answers: tokens and typed addresses."""
    html = re.sub(r'value="[^"]{30,}"', 'value=""', html)
    for secret in secrets:
        html = html.replace(secret, "EMAIL").replace(secret.replace("@", "%40"), "EMAIL")
    return html


# -- signup and verification ------------------------------------------------------------


def test_signup_then_verify_then_login_reaches_the_account(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    registered(visitor, mail_sink, "ada@example.com")
    assert visitor.login("ADA@example.com ").headers["location"] == "/account"
    page = visitor.http.get("/account")
    assert page.status_code == 200 and "ada@example.com" in page.text
    user = _user(database, "ada@example.com")
    assert user is not None and user.email_verified


def test_email_is_normalised_and_unique(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    registered(visitor, mail_sink, "Grace@Example.COM")
    visitor.signup("  grace@example.com  ")
    with database.transaction() as session:
        assert session.scalars(select(User)).all()[0].email == "grace@example.com"
        assert len(session.scalars(select(User)).all()) == 1


def test_signup_answers_the_same_for_a_taken_and_a_free_address(
    visitor: Browser, mail_sink: MailSink
) -> None:
    registered(visitor, mail_sink, "taken@example.com")
    taken = visitor.signup("taken@example.com")
    free = visitor.signup("free@example.com")
    assert taken.status_code == free.status_code == 303
    assert taken.headers["location"].replace("taken", "X") == free.headers["location"].replace(
        "free", "X"
    )
    # The owner is told someone tried; the new address gets its code.
    assert "already" in MailSink.text(mail_sink.wait_for("taken@example.com", 2)[1]).lower()
    assert code_from(mail_sink, "free@example.com")


def test_after_five_wrong_codes_this_ip_waits_even_with_the_right_one(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    visitor.signup("brute@example.com")
    code = code_from(mail_sink, "brute@example.com")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert visitor.verify("brute@example.com", wrong).status_code == 400
    refused = visitor.verify("brute@example.com", code)
    # Wrong codes count per address and client IP (tests/web/test_verification_pages.py).
    assert refused.status_code == 429 and "Too many attempts" in refused.text
    user = _user(database, "brute@example.com")
    assert user is not None and not user.email_verified


def test_code_is_single_use_and_bound_to_its_account(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    visitor.signup("one@example.com")
    visitor.signup("two@example.com")
    code_one = code_from(mail_sink, "one@example.com")
    assert visitor.verify("two@example.com", code_one).status_code == 400
    assert visitor.verify("one@example.com", code_one).status_code == 200
    assert visitor.verify("one@example.com", code_one).status_code == 400


def test_unverified_login_gets_no_session_and_keeps_the_live_code(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    visitor.signup("late@example.com")
    first = code_from(mail_sink, "late@example.com")
    response = visitor.login("late@example.com")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/verify-email?email=")
    assert (
        visitor.http.get("/account", follow_redirects=False)
        .headers["location"]
        .startswith("/login")
    )
    # A new code never voids a live one, and with one live no mail goes out.
    with database.transaction() as session:
        sent = session.scalars(
            select(OutboxMessage).where(OutboxMessage.to_address == "late@example.com")
        ).all()
    assert len(sent) == 1
    assert visitor.verify("late@example.com", first).headers["location"] == "/account"


def test_verification_link_needs_a_confirming_post(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    visitor.signup("link@example.com")
    link = link_from(mail_sink, "link@example.com", "/verify-email").replace(
        "http://127.0.0.1:8000", ""
    )
    page = visitor.http.get(link)
    user = _user(database, "link@example.com")
    assert user is not None and not user.email_verified  # a mail scanner's GET changes nothing
    response = visitor.http.post(
        "/verify-email/confirm",
        data={"csrf_token": csrf_of(page.text), "token": link.split("token=")[1]},
    )
    assert response.status_code == 200
    user = _user(database, "link@example.com")
    assert user is not None and user.email_verified


# -- login ----------------------------------------------------------------------------------


def test_wrong_password_and_unknown_email_answer_the_same(
    visitor: Browser, mail_sink: MailSink
) -> None:
    registered(visitor, mail_sink, "known@example.com")
    known = visitor.login("known@example.com", "wrong-password-1")
    unknown = visitor.login("nobody@example.com", "wrong-password-1")
    assert known.status_code == unknown.status_code == 400
    assert _scrub(known.text, "known@example.com") == _scrub(unknown.text, "nobody@example.com")


def test_login_timing_does_not_reveal_accounts(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> None:
    # argon2 parameters big enough to dominate, so a missing dummy verify would show.
    settings = settings_for(
        smtp_url=mail_sink.url,
        argon2_memory_kib=4096,
        argon2_time_cost=2,
        rate_limits=("login.ip=1000/60", "login.account=1000/60"),
    )
    visitor = Browser(app_for(settings))
    registered(visitor, mail_sink, "timing@example.com")
    token = csrf_of(visitor.http.get("/login").text)

    def median_seconds(email: str) -> float:
        times = []
        for _ in range(30):
            started = time.perf_counter()
            visitor.http.post(
                "/login", data={"csrf_token": token, "email": email, "password": "not-it-at-all"}
            )
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    known, unknown = median_seconds("timing@example.com"), median_seconds("ghost@example.com")
    assert 0.6 < known / unknown < 1.6, (known, unknown)


def test_login_limit_answers_429_with_retry_after(visitor: Browser, mail_sink: MailSink) -> None:
    registered(visitor, mail_sink, "target@example.com")
    statuses = [
        visitor.login("target@example.com", "guess-number-x").status_code for _ in range(20)
    ]
    assert statuses[:10] == [400] * 10
    assert 429 in statuses
    throttled = visitor.login("target@example.com")  # even the right password waits now
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many attempts" in throttled.text


def test_other_accounts_logging_in_does_not_reset_the_counter(
    visitor: Browser, mail_sink: MailSink
) -> None:
    registered(visitor, mail_sink, "victim@example.com")
    registered(visitor, mail_sink, "other@example.com")
    for _ in range(9):
        visitor.login("victim@example.com", "guess-number-x")
    assert visitor.login("other@example.com").status_code == 303
    assert visitor.login("victim@example.com", "guess-number-x").status_code == 400
    assert visitor.login("victim@example.com", "guess-number-x").status_code == 429


def test_login_issues_a_new_session_id_with_safe_cookie_flags(
    visitor: Browser, mail_sink: MailSink
) -> None:
    registered(visitor, mail_sink, "cookie@example.com")
    visitor.http.get("/login")
    anonymous = visitor.http.cookies.get("identity_session")
    response = visitor.login("cookie@example.com")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert visitor.http.cookies.get("identity_session") != anonymous


def test_https_issuer_uses_a_host_prefixed_secure_cookie(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    http = app_for(settings_for(issuer="https://id.example.com"))
    cookie = http.get("/login").headers["set-cookie"]
    assert cookie.startswith("__Host-identity_session=") and "Secure" in cookie


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example.com/",
        "//evil.example.com/x",
        "/\\evil.example.com",
        "javascript:alert(1)",
    ],
)
def test_next_never_leaves_the_site(visitor: Browser, mail_sink: MailSink, target: str) -> None:
    registered(visitor, mail_sink, "next@example.com")
    assert visitor.login("next@example.com", next=target).headers["location"] == "/account"


def test_next_keeps_a_local_path(visitor: Browser, mail_sink: MailSink) -> None:
    registered(visitor, mail_sink, "local@example.com")
    assert visitor.login("local@example.com", next="/account?tab=1").headers["location"] == (
        "/account?tab=1"
    )


def test_logout_ends_the_session_on_the_server(visitor: Browser, mail_sink: MailSink) -> None:
    registered(visitor, mail_sink, "bye@example.com")
    visitor.login("bye@example.com")
    stolen = visitor.http.cookies.get("identity_session")
    assert visitor.submit("/logout").status_code == 200
    visitor.http.cookies.set("identity_session", stolen or "")
    assert visitor.http.get("/account", follow_redirects=False).status_code == 303


def test_logout_by_get_only_asks(visitor: Browser, mail_sink: MailSink) -> None:
    registered(visitor, mail_sink, "ask@example.com")
    visitor.login("ask@example.com")
    assert "Sign out" in visitor.http.get("/logout").text
    assert visitor.http.get("/account").status_code == 200


# -- CSRF and headers ---------------------------------------------------------------------


def test_missing_or_wrong_csrf_is_403_and_changes_nothing(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    registered(visitor, mail_sink, "csrf@example.com")
    visitor.login("csrf@example.com")
    for token in (None, "forged-token"):
        data = {"name": "Mallory"} | ({"csrf_token": token} if token else {})
        assert visitor.http.post("/account/name", data=data).status_code == 403
    fresh = Browser(visitor.http)
    assert (
        fresh.http.post(
            "/signup", data={"email": "x@example.com", "name": "X", "password": PASSWORD}
        ).status_code
        == 403
    )
    user = _user(database, "csrf@example.com")
    assert user is not None and user.name == "Ada"
    assert _user(database, "x@example.com") is None


@pytest.mark.parametrize(
    "path", ["/signup", "/login", "/verify-email", "/forgot-password", "/logout", "/nope"]
)
def test_every_page_sends_the_security_headers(visitor: Browser, path: str) -> None:
    response = visitor.http.get(path)
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "base-uri 'none'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in response.text and " onclick=" not in response.text


# -- passwords ------------------------------------------------------------------------------


def test_oversized_password_is_refused_before_any_hashing(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
) -> None:
    # A hash at these parameters would take seconds; the refusal must not.
    visitor = Browser(app_for(settings_for(argon2_memory_kib=262144, argon2_time_cost=8)))
    started = time.perf_counter()
    response = visitor.signup("long@example.com", password="x" * 1025)
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 400 and "1024" in response.text
    assert _user(database, "long@example.com") is None


def test_common_password_is_refused_at_signup(visitor: Browser, database: Database) -> None:
    response = visitor.signup("weak@example.com", password="password123")
    assert response.status_code == 400 and 'aria-invalid="true"' in response.text
    assert _user(database, "weak@example.com") is None


# -- password reset ---------------------------------------------------------------------------


def _reset_token(sink: MailSink, email: str, count: int = 1) -> str:
    return link_from(sink, email, "/reset-password", count).split("token=")[1]


def _reset(visitor: Browser, token: str, password: str) -> object:
    page = visitor.http.get("/forgot-password")  # any form of this session has its token
    return visitor.http.post(
        "/reset-password",
        data={"csrf_token": csrf_of(page.text), "token": token, "password": password},
    )


def test_reset_request_answers_the_same_for_known_and_unknown(
    visitor: Browser, mail_sink: MailSink
) -> None:
    registered(visitor, mail_sink, "reset@example.com")
    known = visitor.submit("/forgot-password", email="reset@example.com")
    unknown = visitor.submit("/forgot-password", email="ghost@example.com")
    assert known.status_code == unknown.status_code == 303
    assert _scrub(visitor.http.get(known.headers["location"]).text, "reset@example.com") == _scrub(
        visitor.http.get(unknown.headers["location"]).text, "ghost@example.com"
    )


def test_resend_answers_the_same_for_known_and_unknown(visitor: Browser) -> None:
    visitor.signup("pending@example.com")
    known = visitor.submit("/verify-email", "/verify-email/resend", email="pending@example.com")
    unknown = visitor.submit("/verify-email", "/verify-email/resend", email="ghost@example.com")
    assert known.status_code == unknown.status_code == 303


def test_reset_link_get_does_not_consume_it_and_a_used_token_is_refused(
    visitor: Browser, mail_sink: MailSink
) -> None:
    registered(visitor, mail_sink, "r@example.com")
    visitor.submit("/forgot-password", email="r@example.com")
    token = _reset_token(mail_sink, "r@example.com")
    for _ in range(3):
        assert visitor.http.get(f"/reset-password?token={token}").status_code == 200
    assert _reset(visitor, token, "brand-new-secret-77").status_code == 200  # type: ignore[attr-defined]
    assert _reset(visitor, token, "another-secret-88").status_code == 400  # type: ignore[attr-defined]
    assert visitor.login("r@example.com", "brand-new-secret-77").status_code == 303
    assert visitor.login("r@example.com", PASSWORD).status_code == 400


def test_expired_or_superseded_reset_token_is_refused(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    registered(visitor, mail_sink, "old@example.com")
    visitor.submit("/forgot-password", email="old@example.com")
    first = _reset_token(mail_sink, "old@example.com")
    visitor.submit("/forgot-password", email="old@example.com")
    second = _reset_token(mail_sink, "old@example.com", count=2)
    assert visitor.http.get(f"/reset-password?token={first}").status_code == 400  # newest wins
    with database.transaction() as session:
        session.execute(
            update(OneTimeToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert _reset(visitor, second, "brand-new-secret-77").status_code == 400  # type: ignore[attr-defined]


def test_reset_signs_out_every_session_and_sends_a_notice(
    app_for: Callable[[Settings], TestClient],
    app_settings: Settings,
    visitor: Browser,
    mail_sink: MailSink,
    database: Database,
) -> None:
    registered(visitor, mail_sink, "sessions@example.com")
    other_device = Browser(app_for(app_settings))
    assert other_device.login("sessions@example.com").status_code == 303
    visitor.submit("/forgot-password", email="sessions@example.com")
    _reset(visitor, _reset_token(mail_sink, "sessions@example.com"), "brand-new-secret-77")
    assert other_device.http.get("/account", follow_redirects=False).status_code == 303
    with database.transaction() as session:
        assert (
            session.scalars(select(BrowserSession).where(BrowserSession.user_id.is_not(None))).all()
            == []
        )
    notices = mail_sink.wait_for("sessions@example.com", 3)
    assert "changed" in str(notices[-1]["Subject"]).lower()


def test_pre_hijacked_account_loses_the_attackers_password(
    app_for: Callable[[Settings], TestClient],
    app_settings: Settings,
    visitor: Browser,
    mail_sink: MailSink,
) -> None:
    attacker = Browser(app_for(app_settings))
    attacker.signup("victim@example.com", password="attacker-chosen-99")
    # Delivered before the next signup: each app has its own sender, and they race.
    code_from(mail_sink, "victim@example.com", count=1)
    # The real owner signs up too, and verifies with the code sent for that signup.
    visitor.signup("victim@example.com", password=PASSWORD)
    code = code_from(mail_sink, "victim@example.com", count=2)
    # The owner's browser typed the password of the attempt it verifies: it is signed in.
    assert visitor.verify("victim@example.com", code).status_code == 303
    assert attacker.login("victim@example.com", "attacker-chosen-99").status_code == 400
    assert visitor.login("victim@example.com", PASSWORD).status_code == 303


def test_reset_of_a_pre_hijacked_account_kills_the_attackers_password(
    app_for: Callable[[Settings], TestClient],
    app_settings: Settings,
    visitor: Browser,
    mail_sink: MailSink,
) -> None:
    attacker = Browser(app_for(app_settings))
    attacker.signup("owner@example.com", password="attacker-chosen-99")
    visitor.submit("/forgot-password", email="owner@example.com")
    token = _reset_token(mail_sink, "owner@example.com")
    done = _reset(visitor, token, "maple-river-lantern-55")
    assert done.status_code == 200, done.text  # type: ignore[attr-defined]
    assert attacker.login("owner@example.com", "attacker-chosen-99").status_code == 400
    assert visitor.login("owner@example.com", "maple-river-lantern-55").status_code == 303


# -- the account page -------------------------------------------------------------------------


def test_change_password_needs_the_current_one(visitor: Browser, mail_sink: MailSink) -> None:
    registered(visitor, mail_sink, "change@example.com")
    visitor.login("change@example.com")
    wrong = visitor.submit(
        "/account",
        "/account/password",
        current_password="nope-nope-nope",
        new_password="fresh-basil-tower-9",
    )
    assert wrong.status_code == 400
    right = visitor.submit(
        "/account",
        "/account/password",
        current_password=PASSWORD,
        new_password="fresh-basil-tower-9",
    )
    assert right.status_code == 303
    assert "password is changed" in visitor.http.get("/account").text
    assert visitor.login("change@example.com", "fresh-basil-tower-9").status_code == 303


def test_email_change_is_confirmed_from_the_new_inbox(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    registered(visitor, mail_sink, "before@example.com")
    visitor.login("before@example.com")
    response = visitor.submit(
        "/account", "/account/email", new_email="after@example.com", email_password=PASSWORD
    )
    assert response.status_code == 303
    assert "after@example.com" in MailSink.text(mail_sink.wait_for("before@example.com", 2)[1])
    link = link_from(mail_sink, "after@example.com", "/account/email/confirm").replace(
        "http://127.0.0.1:8000", ""
    )
    page = visitor.http.get(link)
    visitor.http.post(
        "/account/email/confirm",
        data={"csrf_token": csrf_of(page.text), "token": link.split("token=")[1]},
    )
    assert _user(database, "after@example.com") is not None
    assert visitor.login("after@example.com").status_code == 303


def test_sign_out_one_session_from_the_account_page(
    app_for: Callable[[Settings], TestClient],
    app_settings: Settings,
    visitor: Browser,
    mail_sink: MailSink,
    database: Database,
) -> None:
    registered(visitor, mail_sink, "many@example.com")
    visitor.login("many@example.com")
    laptop = Browser(app_for(app_settings))
    laptop.login("many@example.com")
    with database.transaction() as session:
        rows = session.scalars(
            select(BrowserSession).where(BrowserSession.user_id.is_not(None))
        ).all()
        ids = [r.public_id for r in rows]
    page = visitor.http.get("/account").text
    other = next(i for i in ids if f"/account/sessions/{i}/revoke" in page)
    visitor.http.post(f"/account/sessions/{other}/revoke", data={"csrf_token": csrf_of(page)})
    assert laptop.http.get("/account", follow_redirects=False).status_code == 303
    assert visitor.http.get("/account").status_code == 200
    with database.transaction() as session:
        kinds = session.scalars(select(AuditEvent.type)).all()
        assert "session.revoked" in kinds


def test_sign_out_everywhere_ends_this_session_too(visitor: Browser, mail_sink: MailSink) -> None:
    registered(visitor, mail_sink, "all@example.com")
    visitor.login("all@example.com")
    assert visitor.submit("/account", "/account/sessions/revoke-all").status_code == 200
    assert visitor.http.get("/account", follow_redirects=False).status_code == 303


def test_session_ends_after_its_idle_timeout(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> None:
    visitor = Browser(app_for(settings_for(smtp_url=mail_sink.url, session_idle_seconds=1)))
    registered(visitor, mail_sink, "idle@example.com")
    visitor.login("idle@example.com")
    assert visitor.http.get("/account", follow_redirects=False).status_code == 200
    time.sleep(1.3)
    assert visitor.http.get("/account", follow_redirects=False).status_code == 303


def test_session_ends_at_its_absolute_timeout_even_when_used(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
    database: Database,
) -> None:
    settings = settings_for(smtp_url=mail_sink.url, session_max_seconds=3)
    visitor = Browser(app_for(settings))
    registered(visitor, mail_sink, "max@example.com")
    logged_in = time.monotonic()
    visitor.login("max@example.com")
    kept = visitor.http.cookies.get("identity_session")
    # Used all along (only the absolute limit can end it), while well inside that limit
    # however slow a loaded machine makes each request.
    uses = 0
    while time.monotonic() - logged_in < 1.5 or uses < 2:
        assert visitor.http.get("/account", follow_redirects=False).status_code == 200
        uses += 1
        time.sleep(0.3)
    time.sleep(max(0.0, logged_in + 3.3 - time.monotonic()))
    # The browser drops the cookie at its Max-Age; a kept copy must not work either.
    visitor.http.cookies.set("identity_session", kept or "")
    assert visitor.http.get("/account", follow_redirects=False).status_code == 303
    with database.transaction() as session:
        live = session.scalars(select(BrowserSession).where(BrowserSession.user_id.is_not(None)))
        assert live.all() == []  # deleted on sight


def test_mail_links_come_from_the_issuer_not_the_host_header(
    visitor: Browser, mail_sink: MailSink
) -> None:
    token = csrf_of(visitor.http.get("/signup").text)
    visitor.http.post(
        "/signup",
        data={"csrf_token": token, "email": "host@example.com", "name": "H", "password": PASSWORD},
        headers={"host": "evil.example.com"},
    )
    text = MailSink.text(mail_sink.wait_for("host@example.com")[0])
    assert "evil.example.com" not in text
    assert "http://127.0.0.1:8000/verify-email?token=" in text
