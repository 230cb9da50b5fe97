"""A session's own upkeep (noting when it was last seen, deleting it once expired) is
written at the end of the request: on SQLite the first write of a transaction takes the one
write lock, and a refusal's audit row, written in a transaction of its own during the
request, must not wait for it (it did: a wrong password a minute after the login page
loaded waited for the lock and failed)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from starlette.testclient import TestClient

from identity.db import Database
from identity.models import AuditEvent, BrowserSession, User, utcnow
from tests.web.test_two_factor_pages import EMAIL, user  # noqa: F401 - the fixture
from tests.web_helpers import Browser, csrf_of, set_up_authenticator


def _idle(database: Database, minutes: int = 2) -> None:
    """Every session last seen ``minutes`` ago: the next request notes it again."""
    with database.transaction() as session:
        for row in session.scalars(select(BrowserSession)).all():
            row.last_seen_at -= timedelta(minutes=minutes)


def _audit_types(database: Database) -> list[str]:
    with database.transaction() as session:
        return list(session.scalars(select(AuditEvent.type).order_by(AuditEvent.id)).all())


def test_a_wrong_password_after_an_idle_minute_is_refused_and_audited(
    http: TestClient,
    user: User,  # noqa: F811 - the fixture
    database: Database,
) -> None:
    token = csrf_of(http.get("/login").text)
    _idle(database)
    answer = http.post(
        "/login",
        data={"csrf_token": token, "email": EMAIL, "password": "not-the-password-at-all"},
        follow_redirects=False,
    )
    assert answer.status_code == 400, answer.text
    assert _audit_types(database)[-1] == "login.failed"


def test_a_wrong_code_after_an_idle_minute_is_refused_and_audited(
    http: TestClient,
    user: User,  # noqa: F811 - the fixture
    database: Database,
) -> None:
    browser = Browser(http)
    browser.login(EMAIL)
    set_up_authenticator(browser)
    http.post("/logout", data={"csrf_token": csrf_of(http.get("/logout").text)})
    assert browser.login(EMAIL).headers["location"] == "/login/two-factor"
    token = csrf_of(http.get("/login/two-factor").text)
    _idle(database)
    answer = http.post(
        "/login/two-factor", data={"csrf_token": token, "code": "000000"}, follow_redirects=False
    )
    assert answer.status_code == 400, answer.text
    assert "mfa.failed" in _audit_types(database)


def test_a_request_notes_when_its_session_was_seen(http: TestClient, database: Database) -> None:
    http.get("/login")
    _idle(database, minutes=5)
    http.get("/login")
    with database.transaction() as session:
        (row,) = session.scalars(select(BrowserSession)).all()
        seen = row.last_seen_at
        assert seen is not None
    assert utcnow() - seen < timedelta(minutes=1)
