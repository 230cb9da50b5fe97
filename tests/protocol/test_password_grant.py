"""The password grant (RFC 6749 §4.3): first-party clients only, behind IDENTITY_PASSWORD_GRANT,
with every login rule of the hosted login page."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, Client, OutboxMessage
from identity.protocol.password import EMAIL_NOT_VERIFIED, WRONG_CREDENTIALS, PasswordGrant

from ..web_helpers import PASSWORD, Browser

MakeClient = Callable[..., tuple[str, str | None]]
App = Callable[[Settings], TestClient]


@pytest.fixture
def http(app_for: App, settings_for: Callable[..., Settings]) -> TestClient:
    """The app with the password grant switched on."""
    return app_for(settings_for(password_grant=True))


def _user(http: TestClient, database: Database, email: str, *, verified: bool = True) -> str:
    """Create an account; returns its id. Addresses are unique per test because Redis
    limiter counters outlive a test."""
    with database.transaction() as session:
        user = operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=email,
            name="Ada",
            password=PASSWORD,
            verified=verified,
        )
        return str(user.id)


def _email(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.com"


def _app_client(make_client: MakeClient, **options: Any) -> str:
    """A public first-party client with the password grant; returns its client_id."""
    options.setdefault("grant_types", ["password"])
    options.setdefault("scope", "read write")
    client_id, _ = make_client(public=True, first_party=True, **options)
    return client_id


def _password(http: TestClient, client_id: str, **form: str) -> Any:
    return http.post(
        "/oauth2/token", data={"grant_type": "password", "client_id": client_id, **form}
    )


def _events(database: Database, kind: str) -> list[AuditEvent]:
    with database.transaction() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.type == kind).order_by(AuditEvent.id)
            )
        )


def _login_events(database: Database) -> list[AuditEvent]:
    with database.transaction() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.type.like("login.%"))))


# -- success ----------------------------------------------------------------------------------


def test_first_party_public_client_gets_a_token_for_the_user(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("ada")
    user_id = _user(http, database, email)
    client_id = _app_client(make_client)
    before = int(time.time())
    response = _password(http, client_id, username=email, password=PASSWORD, scope="read")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user_id and claims["client_id"] == client_id
    assert claims["scope"] == "read" and body["scope"] == "read"
    assert before - 1 <= claims["auth_time"] <= int(time.time()) + 1
    assert body["token_type"] == "Bearer"
    [login] = _events(database, "login.succeeded")
    assert login.subject == user_id
    [issued] = _events(database, "token.issued")
    assert issued.subject == user_id and issued.client_id == client_id
    assert issued.detail["grant_type"] == "password" and issued.detail["jti"] == claims["jti"]
    assert PASSWORD not in str(issued.detail) and PASSWORD not in str(login.detail)


def test_email_is_matched_like_the_login_page(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("case")
    user_id = _user(http, database, email)
    client_id = _app_client(make_client)
    response = _password(http, client_id, username=f"  {email.upper()} ", password=PASSWORD)
    assert response.status_code == 200, response.text
    claims = pyjwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user_id


def test_confidential_first_party_client_without_scope_gets_its_registered_scope(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("conf")
    _user(http, database, email)
    client_id, secret = make_client(grant_types=["password"], scope="read write", first_party=True)
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": email, "password": PASSWORD},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read write"


# -- clients that may not use it --------------------------------------------------------------


def test_client_that_is_not_first_party_is_unauthorized_client(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("third")
    _user(http, database, email)
    # register_client refuses the grant without first_party, so the flag is flipped in the
    # database: the grant must check it itself.
    client_id = _app_client(make_client)
    with database.transaction() as session:
        session.execute(
            update(Client).where(Client.client_id == client_id).values(is_first_party=False)
        )
    response = _password(http, client_id, username=email, password=PASSWORD)
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert _login_events(database) == []  # refused before the password was looked at
    assert _events(database, "token.issued") == []


def test_client_without_the_password_grant_type_is_unauthorized_client(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("nogrant")
    _user(http, database, email)
    client_id, secret = make_client(grant_types=["client_credentials"], first_party=True)
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": email, "password": PASSWORD},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert _login_events(database) == []


def test_unauthenticated_confidential_client_is_invalid_client(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("nosecret")
    _user(http, database, email)
    client_id, _ = make_client(grant_types=["password"], first_party=True)
    response = _password(http, client_id, username=email, password=PASSWORD)
    assert response.status_code in {400, 401}
    assert response.json()["error"] == "invalid_client"
    assert _login_events(database) == []


# -- refusals of the user's credentials ------------------------------------------------------


def test_wrong_password_is_invalid_grant_and_audited(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("wrong")
    user_id = _user(http, database, email)
    client_id = _app_client(make_client)
    response = _password(http, client_id, username=email, password="not-the-password-1")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": WRONG_CREDENTIALS}
    [failed] = _events(database, "login.failed")
    assert failed.subject == user_id and failed.outcome == "failure"
    assert failed.detail["reason"] == "wrong_password"
    assert "not-the-password-1" not in str(failed.detail)
    assert _events(database, "token.issued") == []


def test_unknown_user_answers_exactly_like_a_wrong_password(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("known")
    _user(http, database, email)
    client_id = _app_client(make_client)
    wrong = _password(http, client_id, username=email, password="not-the-password-1")
    unknown = _password(http, client_id, username=_email("ghost"), password="not-the-password-1")
    assert (unknown.status_code, unknown.json()) == (wrong.status_code, wrong.json())
    assert unknown.headers.get("retry-after") is None
    reasons = [e.detail["reason"] for e in _events(database, "login.failed")]
    assert reasons == ["wrong_password", "unknown_account"]


def test_unverified_account_is_invalid_grant_with_the_documented_description(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("unverified")
    user_id = _user(http, database, email, verified=False)
    client_id = _app_client(make_client)
    response = _password(http, client_id, username=email, password=PASSWORD)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": EMAIL_NOT_VERIFIED}
    assert response.json()["error_description"].startswith("email_not_verified:")
    [unverified] = _events(database, "login.unverified")
    assert unverified.subject == user_id
    assert _events(database, "token.issued") == []
    with database.transaction() as session:  # the promised new code is in the outbox
        templates = session.scalars(
            select(OutboxMessage.template).where(OutboxMessage.to_address == email)
        ).all()
    assert templates == ["verify_email"]


def test_unverified_account_with_a_wrong_password_is_just_a_wrong_password(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("unverified-wrong")
    _user(http, database, email, verified=False)
    client_id = _app_client(make_client)
    response = _password(http, client_id, username=email, password="not-the-password-1")
    assert response.json() == {"error": "invalid_grant", "error_description": WRONG_CREDENTIALS}


def test_repeated_wrong_passwords_answer_429_with_retry_after_on_the_login_limiter(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("target")
    _user(http, database, email)
    client_id = _app_client(make_client)
    statuses = [
        _password(http, client_id, username=email, password="guess-number-x").status_code
        for _ in range(12)
    ]
    assert statuses[:10] == [400] * 10  # login.account allows 10 failures per window
    assert statuses[-1] == 429
    throttled = _password(http, client_id, username=email, password=PASSWORD)  # right one waits
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "slow_down"
    assert int(throttled.headers["retry-after"]) > 0
    assert throttled.headers["cache-control"] == "no-store"
    assert _events(database, "login.throttled")
    assert _events(database, "token.issued") == []
    # The very limiter of the hosted login page: it refuses this account too.
    assert Browser(http).login(email).status_code == 429


# -- malformed requests: refused before any login is counted ---------------------------------


@pytest.mark.parametrize(
    "form",
    [{"password": PASSWORD}, {"username": "x@example.com"}, {"username": "", "password": "x"}],
    ids=["no-username", "no-password", "empty-username"],
)
def test_missing_credentials_are_invalid_request(
    http: TestClient, make_client: MakeClient, database: Database, form: dict[str, str]
) -> None:
    client_id = _app_client(make_client)
    response = _password(http, client_id, **form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert _login_events(database) == []


def test_unregistered_scope_is_invalid_scope_before_the_password_is_checked(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("scope")
    _user(http, database, email)
    client_id = _app_client(make_client, scope="read")
    response = _password(http, client_id, username=email, password=PASSWORD, scope="read admin")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert _login_events(database) == []


def test_unregistered_resource_is_invalid_target_before_the_password_is_checked(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    email = _email("resource")
    _user(http, database, email)
    client_id = _app_client(make_client, audience=["https://api.example.com"])
    response = _password(
        http, client_id, username=email, password=PASSWORD, resource="https://evil.example.com"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    assert _login_events(database) == []


# -- the server-wide switch ------------------------------------------------------------------


def test_switched_off_the_grant_is_unsupported(
    app_for: App, settings_for: Callable[..., Settings], make_client: MakeClient
) -> None:
    http = app_for(settings_for(password_grant=False))
    client_id = _app_client(make_client)
    response = _password(http, client_id, username="a@example.com", password=PASSWORD)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_switched_off_the_grant_refuses_even_if_registered(
    app_for: App, settings_for: Callable[..., Settings], make_client: MakeClient, database: Database
) -> None:
    http = app_for(settings_for(password_grant=False))
    # A stray registration must not open the grant: it checks the switch itself.
    http.app.state.oauth.settings = http.app.state.settings  # type: ignore[attr-defined]
    http.app.state.oauth.accounts = http.app.state.accounts  # type: ignore[attr-defined]
    http.app.state.oauth.register_grant(PasswordGrant)  # type: ignore[attr-defined]
    email = _email("off")
    _user(http, database, email)
    client_id = _app_client(make_client)
    response = _password(http, client_id, username=email, password=PASSWORD)
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert _login_events(database) == []


def test_discovery_omits_password_when_switched_off(
    app_for: App, settings_for: Callable[..., Settings]
) -> None:
    http = app_for(settings_for(password_grant=False))
    document = http.get("/.well-known/oauth-authorization-server").json()
    assert "password" not in document["grant_types_supported"]


def test_discovery_lists_password_when_switched_on(
    app_for: App, settings_for: Callable[..., Settings]
) -> None:
    http = app_for(settings_for(password_grant=True))  # no test-side wiring: the app's own
    document = http.get("/.well-known/oauth-authorization-server").json()
    assert "password" in document["grant_types_supported"]
