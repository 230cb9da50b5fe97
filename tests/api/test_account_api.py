"""The JSON account API (/api/v1): the rules of SECURITY.md through JSON, problem details."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity import repositories
from identity.accounts import operators
from identity.accounts.passwords import PasswordHasher
from identity.api.routes import OPERATIONS, Operation
from identity.config import Settings
from identity.db import Database
from identity.models import (
    AuditEvent,
    BrowserSession,
    Consent,
    OutboxMessage,
    RefreshToken,
    User,
    utcnow,
)
from identity.openapi.document import openapi_document
from tests.conftest import ISSUER, MailSink
from tests.web_helpers import PASSWORD, Browser, code_from, link_from

MakeClient = Callable[..., tuple[str, str | None]]
PROBLEM = "application/problem+json"
ACCOUNT_AUDIENCE = f"{ISSUER}/api/v1"
NEW_PASSWORD = "quartz-lantern-meadow-77"


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> TestClient:
    """The app with the password grant on, mail to the sink and one CORS origin."""
    settings = settings_for(
        password_grant=True, smtp_url=mail_sink.url, cors_origins=("https://app.example.com",)
    )
    return app_for(settings)


@pytest.fixture
def app_client(make_client: MakeClient) -> str:
    """A first-party public app with the password and refresh grants."""
    client_id, _ = make_client(
        public=True,
        first_party=True,
        grant_types=["password", "refresh_token"],
        scope="openid account offline_access",
    )
    return client_id


def _email(label: str) -> str:
    # Unique per test: Redis limiter counters outlive a test.
    return f"{label}-{uuid.uuid4().hex[:8]}@example.com"


def _user(http: TestClient, database: Database, email: str) -> uuid.UUID:
    with database.transaction() as session:
        user = operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=email,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
        return user.id


def _tokens(
    http: TestClient,
    client_id: str,
    email: str,
    scope: str = "openid account offline_access",
    password: str = PASSWORD,
) -> dict[str, Any]:
    response = http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": email,
            "password": password,
            "scope": scope,
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _signed_in(
    http: TestClient, database: Database, client_id: str, label: str
) -> tuple[uuid.UUID, dict[str, Any]]:
    email = _email(label)
    return _user(http, database, email), _tokens(http, client_id, email)


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def _refresh(http: TestClient, client_id: str, refresh_token: str) -> Any:
    return http.post(
        "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": refresh_token,
        },
    )


def _get_user(database: Database, user_id: uuid.UUID) -> User:
    with database.transaction() as session:
        user = session.get(User, user_id)
        assert user is not None
        return user


def _events(database: Database, kind: str, subject: uuid.UUID | None = None) -> list[AuditEvent]:
    with database.transaction() as session:
        query = select(AuditEvent).where(AuditEvent.type == kind).order_by(AuditEvent.id)
        if subject is not None:
            query = query.where(AuditEvent.subject == str(subject))
        return list(session.scalars(query))


def _outbox(database: Database, to: str) -> list[str]:
    with database.transaction() as session:
        query = select(OutboxMessage.template).where(OutboxMessage.to_address == to)
        return list(session.scalars(query.order_by(OutboxMessage.id)))


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = dict(response.json())
    assert body["status"] == status and body["title"] and body["type"]
    return body


def _fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


# -- signed-out flows -----------------------------------------------------------------------


def test_register_verify_login_me_and_logout_all(
    http: TestClient, mail_sink: MailSink, database: Database, app_client: str
) -> None:
    email = _email("happy")
    registered = http.post(
        "/api/v1/register", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert registered.status_code == 202 and registered.json() == {"status": "check_email"}
    verified = http.post(
        "/api/v1/verify-email", json={"email": email, "code": code_from(mail_sink, email)}
    )
    assert verified.status_code == 200 and verified.json() == {"status": "verified"}
    tokens = _tokens(http, app_client, email)
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert ACCOUNT_AUDIENCE in (
        [claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"]
    )

    me = http.get("/api/v1/me", headers=_bearer(tokens))
    assert me.status_code == 200 and me.headers["cache-control"].startswith("no-store")
    body = me.json()
    assert set(body) == {"id", "email", "name", "email_verified", "created_at"}
    assert body["email"] == email and body["name"] == "Ada" and body["email_verified"] is True
    user = _get_user(database, uuid.UUID(body["id"]))
    assert user.email_verified and user.email == email

    assert http.post("/api/v1/logout-all", headers=_bearer(tokens)).status_code == 204
    _problem(http.get("/api/v1/me", headers=_bearer(tokens)), 401)
    assert _refresh(http, app_client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert _events(database, "session.revoked_all", user.id)
    with database.transaction() as session:
        live = repositories.live_refresh_families(session, user.id, None, utcnow())
    assert live == []


def test_verify_email_with_the_link_token(
    http: TestClient, mail_sink: MailSink, database: Database
) -> None:
    email = _email("link")
    http.post("/api/v1/register", json={"email": email, "password": PASSWORD, "name": "Ada"})
    token = link_from(mail_sink, email, "/verify-email").split("token=", 1)[1]
    response = http.post("/api/v1/verify-email", json={"token": token})
    assert response.status_code == 200
    with database.transaction() as session:
        assert repositories.get_user_by_email(session, email).email_verified  # type: ignore[union-attr]
    again = _problem(http.post("/api/v1/verify-email", json={"token": token}), 400)
    assert again["type"] == "urn:identity:problem:invalid-link"


def test_register_answers_the_same_for_a_taken_address(
    http: TestClient, database: Database
) -> None:
    taken = _email("taken")
    _user(http, database, taken)
    answers = [
        http.post("/api/v1/register", json={"email": e, "password": PASSWORD, "name": "Bob"})
        for e in (taken, _email("free"))
    ]
    assert [(a.status_code, a.json()) for a in answers] == [(202, {"status": "check_email"})] * 2
    assert _outbox(database, taken) == ["signup_exists"]
    assert _get_user(database, _user_id(database, taken)).name == "Ada"  # nothing taken over


def _user_id(database: Database, email: str) -> uuid.UUID:
    with database.transaction() as session:
        user = repositories.get_user_by_email(session, email)
        assert user is not None
        return user.id


@pytest.mark.parametrize(
    "path", ["/api/v1/password/forgot", "/api/v1/verify-email/resend"], ids=["forgot", "resend"]
)
def test_mail_requests_answer_the_same_for_known_and_unknown_addresses(
    http: TestClient, database: Database, path: str
) -> None:
    known = _email("known")
    _user(http, database, known)
    with database.transaction() as session:  # resend only mails unverified accounts
        user = repositories.get_user_by_email(session, known)
        assert user is not None
        user.email_verified = path.endswith("forgot")
    answers = [http.post(path, json={"email": e}) for e in (known, _email("ghost"), "not-an-email")]
    assert {(a.status_code, a.text) for a in answers} == {(202, '{"status":"check_email"}')}
    assert _outbox(database, known) == [
        "password_reset" if path.endswith("forgot") else "verify_email"
    ]


def test_after_five_wrong_codes_this_ip_waits_even_with_the_right_one(
    http: TestClient, mail_sink: MailSink, database: Database
) -> None:
    email = _email("brute")
    http.post("/api/v1/register", json={"email": email, "password": PASSWORD, "name": "Ada"})
    code = code_from(mail_sink, email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        body = _problem(
            http.post("/api/v1/verify-email", json={"email": email, "code": wrong}), 400
        )
        assert body["type"] == "urn:identity:problem:invalid-code"
    right = http.post("/api/v1/verify-email", json={"email": email, "code": code})
    # Wrong codes count per address and client IP (tests/api/test_register_findings.py).
    assert "Too many attempts" in _problem(right, 429)["detail"]
    assert not _get_user(database, _user_id(database, email)).email_verified
    assert len(_events(database, "verify.failed")) == 5


def test_reset_token_works_once(
    http: TestClient, mail_sink: MailSink, database: Database, app_client: str
) -> None:
    email = _email("reset")
    user_id, tokens = _signed_in_as(http, database, app_client, email)
    assert http.post("/api/v1/password/forgot", json={"email": email}).status_code == 202
    token = link_from(mail_sink, email, "/reset-password").split("token=", 1)[1]
    before = _get_user(database, user_id).password_hash
    reset = http.post("/api/v1/password/reset", json={"token": token, "password": NEW_PASSWORD})
    assert reset.status_code == 200 and reset.json() == {"status": "password_reset"}
    assert _get_user(database, user_id).password_hash != before
    reused = http.post("/api/v1/password/reset", json={"token": token, "password": PASSWORD})
    assert _problem(reused, 400)["type"] == "urn:identity:problem:invalid-link"
    assert PasswordHasher(1, 8, 1).verify(
        _get_user(database, user_id).password_hash or "", NEW_PASSWORD
    )
    # A reset ends every app session.
    assert _refresh(http, app_client, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def _signed_in_as(
    http: TestClient, database: Database, client_id: str, email: str
) -> tuple[uuid.UUID, dict[str, Any]]:
    return _user(http, database, email), _tokens(http, client_id, email)


def test_reset_with_a_weak_password_names_the_field(
    http: TestClient, mail_sink: MailSink, database: Database
) -> None:
    email = _email("weak")
    _user(http, database, email)
    http.post("/api/v1/password/forgot", json={"email": email})
    token = link_from(mail_sink, email, "/reset-password").split("token=", 1)[1]
    response = http.post("/api/v1/password/reset", json={"token": token, "password": "short"})
    assert _fields(_problem(response, 400)) == {"password"}


def test_too_many_reset_requests_answer_429_with_retry_after(
    http: TestClient, database: Database
) -> None:
    email = _email("throttle")
    statuses = [
        http.post("/api/v1/password/forgot", json={"email": email}).status_code for _ in range(6)
    ]
    assert statuses == [202] * 5 + [429]  # reset.account allows 5 an hour
    response = http.post("/api/v1/password/forgot", json={"email": email})
    _problem(response, 429)
    assert int(response.headers["retry-after"]) > 0
    assert _events(database, "throttled")


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", [{"email_verified": True}, {"is_active": False}, {"id": str(uuid.uuid4())}]
)
def test_patch_me_refuses_mass_assignment(
    http: TestClient, database: Database, app_client: str, field: dict[str, Any]
) -> None:
    user_id, tokens = _signed_in(http, database, app_client, "mass")
    before = _get_user(database, user_id)
    response = http.patch("/api/v1/me", json={"name": "Mallory", **field}, headers=_bearer(tokens))
    body = _problem(response, 400)
    assert body["type"] == "urn:identity:problem:invalid-input"
    assert _fields(body) == set(field)
    after = _get_user(database, user_id)
    assert (after.name, after.email_verified, after.is_active, after.id) == (
        before.name,
        before.email_verified,
        before.is_active,
        before.id,
    )


def test_patch_me_changes_the_name(http: TestClient, database: Database, app_client: str) -> None:
    user_id, tokens = _signed_in(http, database, app_client, "rename")
    response = http.patch("/api/v1/me", json={"name": "  Grace "}, headers=_bearer(tokens))
    assert response.status_code == 200 and response.json()["name"] == "Grace"
    assert _get_user(database, user_id).name == "Grace"
    assert _events(database, "profile.updated", user_id)


def test_patch_me_email_change_needs_the_password_and_mails_a_confirmation(
    http: TestClient, database: Database, app_client: str
) -> None:
    user_id, tokens = _signed_in(http, database, app_client, "move")
    new_email = _email("moved")
    missing = http.patch("/api/v1/me", json={"email": new_email}, headers=_bearer(tokens))
    assert _fields(_problem(missing, 400)) == {"password"}
    wrong = http.patch(
        "/api/v1/me",
        json={"email": new_email, "password": "wrong-pass-99"},
        headers=_bearer(tokens),
    )
    assert _fields(_problem(wrong, 400)) == {"password"}
    started = http.patch(
        "/api/v1/me", json={"email": new_email, "password": PASSWORD}, headers=_bearer(tokens)
    )
    assert started.status_code == 202 and started.json() == {"status": "check_email"}
    assert _outbox(database, new_email) == ["email_change_confirm"]
    assert _get_user(database, user_id).email != new_email  # not before it is confirmed


def test_change_password_needs_the_current_one(
    http: TestClient, database: Database, app_client: str
) -> None:
    user_id, tokens = _signed_in(http, database, app_client, "pw")
    wrong = http.post(
        "/api/v1/me/password",
        json={"current_password": "nope-nope-nope", "new_password": NEW_PASSWORD},
        headers=_bearer(tokens),
    )
    assert _fields(_problem(wrong, 400)) == {"current_password"}
    changed = http.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=_bearer(tokens),
    )
    assert changed.status_code == 204 and changed.content == b""
    assert PasswordHasher(1, 8, 1).verify(
        _get_user(database, user_id).password_hash or "", NEW_PASSWORD
    )
    assert _events(database, "password.changed", user_id)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"email=a%40example.com"),
        ("text/plain", b'{"email": "a@example.com"}'),
        (None, b'{"email": "a@example.com"}'),
    ],
    ids=["form", "text", "none"],
)
def test_bodies_that_are_not_json_are_415(
    http: TestClient, database: Database, content_type: str | None, body: bytes
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post("/api/v1/password/forgot", content=body, headers=headers)
    _problem(response, 415)
    assert _events(database, "password.reset_requested") == []


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"null",
        b'"a@example.com"',
        b'{"email": 1}',
        b'{"email": null}',
        b'{"email": ["a@example.com"]}',
        b'{"email": 1e999}',
        b'{"email": ' + b"9" * 5000 + b"}",
        b"[" * 100_00 + b"]" * 100_00,
        b'{"email": "\xff\xfe"}',
        b'{"email": "' + b"a" * 400 + b'@example.com"}',
    ],
    ids=[
        "truncated",
        "array",
        "null",
        "string",
        "number",
        "null-field",
        "list-field",
        "infinite",
        "huge-int",
        "deep",
        "bad-utf8",
        "too-long",
    ],
)
def test_malformed_or_mistyped_json_is_400_problem(http: TestClient, body: bytes) -> None:
    response = http.post(
        "/api/v1/password/forgot", content=body, headers={"Content-Type": "application/json"}
    )
    assert _problem(response, 400)["type"] in {
        "urn:identity:problem:malformed-body",
        "urn:identity:problem:invalid-input",
    }


def test_verify_email_needs_a_token_or_an_email_and_a_code(http: TestClient) -> None:
    response = http.post("/api/v1/verify-email", json={"email": "a@example.com"})
    assert _fields(_problem(response, 400)) == {"code"}


def test_events_query_is_validated(http: TestClient, database: Database, app_client: str) -> None:
    _, tokens = _signed_in(http, database, app_client, "query")
    for query in ("limit=0", "limit=abc", "after=" + "9" * 30, "after=-1", "other=1"):
        _problem(http.get(f"/api/v1/me/events?{query}", headers=_bearer(tokens)), 400)


# -- bearer tokens ----------------------------------------------------------------------------


def test_missing_token_is_401_with_a_bearer_challenge(http: TestClient) -> None:
    response = http.get("/api/v1/me")
    _problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="identity"'
    garbage = http.get("/api/v1/me", headers={"Authorization": "Bearer not.a.jwt"})
    _problem(garbage, 401)
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]


def test_token_for_another_audience_is_401(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client(
        grant_types=["client_credentials"], scope="account", first_party=True
    )
    issued = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    assert issued.status_code == 200, issued.text
    response = http.get("/api/v1/me", headers=_bearer(issued.json()))
    _problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_token_without_the_account_scope_is_403(
    http: TestClient, database: Database, app_client: str
) -> None:
    email = _email("noscope")
    _user(http, database, email)
    tokens = _tokens(http, app_client, email, scope="openid offline_access")
    claims = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert ACCOUNT_AUDIENCE not in str(claims["aud"])  # no scope, no audience: 401
    _problem(http.get("/api/v1/me", headers=_bearer(tokens)), 401)
    # The right audience without the scope (a client registered for the API as a resource).
    forged = http.app.state.oauth.issuer.issue(  # type: ignore[attr-defined]
        client_id=app_client,
        subject=claims["sub"],
        audience=[ACCOUNT_AUDIENCE],
        scope="openid",
    )
    response = http.get("/api/v1/me", headers={"Authorization": f"Bearer {forged.value}"})
    _problem(response, 403)
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_non_first_party_client_asking_for_account_is_invalid_scope(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    from identity.models import Client
    from identity.protocol.clients import ClientRegistrationError

    with pytest.raises(ClientRegistrationError, match="first-party"):
        make_client(scope="openid account")
    client_id, secret = make_client(
        grant_types=["urn:ietf:params:oauth:grant-type:device_code"],
        scope="openid account",
        first_party=True,
    )
    with database.transaction() as session:  # demoted after registration
        row = session.get(Client, client_id)
        assert row is not None
        row.is_first_party = False
    response = http.post(
        "/oauth2/device_authorization",
        data={"scope": "openid account"},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_disabled_user_token_is_401(http: TestClient, database: Database, app_client: str) -> None:
    user_id, tokens = _signed_in(http, database, app_client, "disabled")
    with database.transaction() as session:
        user = session.get(User, user_id)
        assert user is not None
        user.is_active = False
    _problem(http.get("/api/v1/me", headers=_bearer(tokens)), 401)


# -- logout and sessions ----------------------------------------------------------------------


def test_logout_ends_the_access_token_and_the_refresh_family_at_once(
    http: TestClient, database: Database, app_client: str
) -> None:
    user_id, tokens = _signed_in(http, database, app_client, "logout")
    response = http.post(
        "/api/v1/logout", json={"refresh_token": tokens["refresh_token"]}, headers=_bearer(tokens)
    )
    assert response.status_code == 204
    _problem(http.get("/api/v1/me", headers=_bearer(tokens)), 401)
    assert _refresh(http, app_client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    [logout] = _events(database, "logout", user_id)
    assert logout.client_id == app_client and tokens["refresh_token"] not in str(logout.detail)


def test_logout_leaves_another_users_refresh_token_alone(
    http: TestClient, database: Database, app_client: str
) -> None:
    _, mine = _signed_in(http, database, app_client, "me")
    _, theirs = _signed_in(http, database, app_client, "them")
    response = http.post(
        "/api/v1/logout", json={"refresh_token": theirs["refresh_token"]}, headers=_bearer(mine)
    )
    assert response.status_code == 204
    assert _refresh(http, app_client, theirs["refresh_token"]).status_code == 200
    _problem(http.get("/api/v1/me", headers=_bearer(mine)), 401)


def test_logout_without_a_body_ends_the_access_token(
    http: TestClient, database: Database, app_client: str
) -> None:
    _, tokens = _signed_in(http, database, app_client, "nobody")
    assert http.post("/api/v1/logout", headers=_bearer(tokens)).status_code == 204
    _problem(http.get("/api/v1/me", headers=_bearer(tokens)), 401)
    assert _refresh(http, app_client, tokens["refresh_token"]).status_code == 200


def test_sessions_list_browser_and_app_sessions_and_end_one(
    http: TestClient, database: Database, app_client: str
) -> None:
    email = _email("sessions")
    user_id, tokens = _signed_in_as(http, database, app_client, email)
    assert Browser(http).login(email).status_code == 303
    http.cookies.clear()
    listed = http.get("/api/v1/me/sessions", headers=_bearer(tokens))
    assert listed.status_code == 200
    sessions = {s["type"]: s for s in listed.json()["sessions"]}
    assert set(sessions) == {"browser", "app"}
    assert sessions["app"]["client_id"] == app_client and "account" in sessions["app"]["scope"]
    assert sessions["browser"]["current"] is False and sessions["browser"]["device"]
    for session in sessions.values():
        deleted = http.delete(f"/api/v1/me/sessions/{session['id']}", headers=_bearer(tokens))
        assert deleted.status_code == 204
    with database.transaction() as db:
        assert (
            db.scalars(select(BrowserSession).where(BrowserSession.user_id == user_id)).all() == []
        )
    assert _refresh(http, app_client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert len(_events(database, "session.revoked", user_id)) == 2


def test_another_users_session_ids_are_404(
    http: TestClient, database: Database, app_client: str
) -> None:
    _, mine = _signed_in(http, database, app_client, "mine")
    their_email = _email("theirs")
    their_id, theirs = _signed_in_as(http, database, app_client, their_email)
    Browser(http).login(their_email)
    http.cookies.clear()
    their_sessions = http.get("/api/v1/me/sessions", headers=_bearer(theirs)).json()["sessions"]
    assert len(their_sessions) == 2
    for session in [*their_sessions, {"id": "nonexistent"}, {"id": str(uuid.uuid4())}]:
        response = http.delete(f"/api/v1/me/sessions/{session['id']}", headers=_bearer(mine))
        _problem(response, 404)
    with database.transaction() as db:
        assert db.scalars(select(BrowserSession).where(BrowserSession.user_id == their_id)).all()
        assert db.scalars(
            select(RefreshToken).where(
                RefreshToken.user_id == their_id, RefreshToken.revoked_at.is_(None)
            )
        ).all()


def test_consents_list_and_revoke_only_ones_own(
    http: TestClient, database: Database, app_client: str, make_client: MakeClient
) -> None:
    my_id, mine = _signed_in(http, database, app_client, "consent-me")
    their_id, _ = _signed_in(http, database, app_client, "consent-them")
    other_app, _ = make_client(name="Other app", scope="read")
    mine_only, _ = make_client(name="Mine only", scope="read")
    with database.transaction() as session:
        repositories.save_consent(session, their_id, other_app, "openid")
        repositories.save_consent(session, my_id, mine_only, "openid")
    listed = http.get("/api/v1/me/consents", headers=_bearer(mine)).json()["consents"]
    assert [(c["client_id"], c["client_name"]) for c in listed] == [(mine_only, "Mine only")]
    _problem(http.delete(f"/api/v1/me/consents/{other_app}", headers=_bearer(mine)), 404)
    assert http.delete(f"/api/v1/me/consents/{mine_only}", headers=_bearer(mine)).status_code == 204
    with database.transaction() as session:
        left = session.scalars(select(Consent.user_id)).all()
    assert left == [their_id]


def test_events_are_the_users_own_with_a_cursor(
    http: TestClient, database: Database, app_client: str
) -> None:
    email = _email("events")
    user_id = _user(http, database, email)
    http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": app_client,
            "username": email,
            "password": "x-wrong-1",
        },
    )
    tokens = _tokens(http, app_client, email)
    _signed_in(http, database, app_client, "stranger")  # someone else's login
    first = http.get("/api/v1/me/events?limit=2", headers=_bearer(tokens)).json()
    assert [e["type"] for e in first["events"]] == ["user.created", "login.failed"]
    assert first["next_after"] == first["events"][-1]["id"]
    rest = http.get(
        f"/api/v1/me/events?after={first['next_after']}", headers=_bearer(tokens)
    ).json()
    types = [e["type"] for e in rest["events"]]
    assert "login.succeeded" in types and rest["next_after"] is None
    with database.transaction() as session:
        mine = {e.id for e in repositories.list_audit_events(session, subject=str(user_id))}
    assert {e["id"] for e in first["events"] + rest["events"]} == mine


# -- the mount --------------------------------------------------------------------------------


def test_unknown_paths_and_methods_are_problems(http: TestClient) -> None:
    _problem(http.get("/api/v1/nothing-here"), 404)
    wrong_method = http.get("/api/v1/register")
    _problem(wrong_method, 405)
    assert wrong_method.headers["allow"] == "POST"


def test_cors_allows_the_configured_origin_only(http: TestClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = http.options(
        "/api/v1/register", headers={"Origin": "https://app.example.com", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-credentials" not in allowed.headers
    refused = http.options(
        "/api/v1/register", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in refused.headers


def test_operations_describe_every_route_and_build_the_openapi_document(
    http: TestClient,
) -> None:
    assert all(isinstance(operation, Operation) for operation in OPERATIONS)
    assert len({(o.method, o.path) for o in OPERATIONS}) == len(OPERATIONS)
    for operation in OPERATIONS:
        assert operation.auth == (401 in operation.errors)
        assert all(400 <= status < 600 for status in operation.errors)
        if operation.request is not None:
            assert operation.request.model_config.get("extra") == "forbid"
    document = openapi_document(http.app.state.settings, OPERATIONS)  # type: ignore[attr-defined]
    assert "/api/v1/me/sessions/{session_id}" in document["paths"]


@pytest.mark.parametrize("path", ["sessions/%00", "sessions/" + "a" * 300, "consents/%00x"])
def test_odd_ids_in_the_path_are_404(
    http: TestClient, database: Database, app_client: str, path: str
) -> None:
    _, tokens = _signed_in(http, database, app_client, "odd")
    _problem(http.delete(f"/api/v1/me/{path}", headers=_bearer(tokens)), 404)


def test_an_oversized_body_is_413_problem(http: TestClient) -> None:
    body = b'{"email": "' + b"a" * 70_000 + b'"}'
    response = http.post(
        "/api/v1/password/forgot", content=body, headers={"Content-Type": "application/json"}
    )
    _problem(response, 413)
