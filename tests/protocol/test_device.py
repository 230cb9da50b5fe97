"""RFC 8628: the device authorization endpoint, the /device page and the device code grant."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, DeviceAuthorization, User, secret_digest, utcnow

from ..web_helpers import PASSWORD, Browser, csrf_of

MakeClient = Callable[..., tuple[str, str | None]]
GRANT = "urn:ietf:params:oauth:grant-type:device_code"
EMAIL = "ada@example.com"


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return app_for(settings)


@pytest.fixture
def device_client(make_client: MakeClient) -> str:
    client_id, _ = make_client(public=True, grant_types=[GRANT], scope="openid profile")
    return client_id


@pytest.fixture
def user(http: TestClient, database: Database) -> User:
    accounts: Any = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        return operators.create_user(
            accounts, session, email=EMAIL, name="Ada", password=PASSWORD, verified=True
        )


def _start(http: TestClient, client_id: str, **form: str) -> dict[str, Any]:
    response = http.post("/oauth2/device_authorization", data={"client_id": client_id, **form})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def _poll(http: TestClient, client_id: str, device_code: str) -> Any:
    return http.post(
        "/oauth2/token",
        data={"grant_type": GRANT, "device_code": device_code, "client_id": client_id},
    )


def _row(database: Database, device_code: str) -> DeviceAuthorization:
    with database.transaction() as session:
        row = session.get(DeviceAuthorization, secret_digest(device_code))
        assert row is not None
        return row


def _update(database: Database, device_code: str, **values: Any) -> None:
    with database.transaction() as session:
        row = session.get(DeviceAuthorization, secret_digest(device_code))
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


def _signed_in(http: TestClient) -> Browser:
    browser = Browser(http)
    assert browser.login(EMAIL).status_code == 303
    return browser


def _decide(browser: Browser, user_code: str, decision: str) -> Any:
    consent = browser.submit(f"/device?user_code={user_code}", "/device", user_code=user_code)
    assert consent.status_code == 200, consent.text
    return browser.http.post(
        "/device/decision",
        data={"csrf_token": csrf_of(consent.text), "user_code": user_code, "decision": decision},
        follow_redirects=False,
    )


def test_start_answers_codes_and_stores_only_a_digest(
    http: TestClient, device_client: str, database: Database
) -> None:
    body = _start(http, device_client, scope="openid")
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", body["user_code"])
    assert body["verification_uri"] == "http://127.0.0.1:8000/device"
    assert body["verification_uri_complete"] == (
        f"http://127.0.0.1:8000/device?user_code={body['user_code']}"
    )
    assert body["expires_in"] == 600 and body["interval"] == 5
    row = _row(database, body["device_code"])
    assert row.user_code == body["user_code"].replace("-", "")
    assert row.client_id == device_client and row.scope == "openid"
    assert row.status == "pending" and row.interval == 5
    with database.transaction() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.type == "device.authorization_started")
        ).one()
        assert event.client_id == device_client
        assert body["device_code"] not in str(event.detail)


def test_full_grant_issues_a_token_for_the_approving_user(
    http: TestClient, device_client: str, user: User, database: Database
) -> None:
    body = _start(http, device_client, scope="openid profile")
    pending = _poll(http, device_client, body["device_code"])
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending"
    assert _row(database, body["device_code"]).last_polled_at is not None

    done = _decide(_signed_in(http), body["user_code"], "allow")
    assert done.status_code == 200 and "You can return to your device" in done.text
    row = _row(database, body["device_code"])
    assert row.status == "approved" and row.user_id == user.id and row.auth_time is not None

    granted = _poll(http, device_client, body["device_code"])
    assert granted.status_code == 200, granted.text
    assert granted.headers["cache-control"] == "no-store"
    claims = pyjwt.decode(granted.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(user.id) and claims["client_id"] == device_client
    assert claims["scope"] == "openid profile"
    assert claims["auth_time"] == int(row.auth_time.timestamp())
    assert _row(database, body["device_code"]).status == "used"
    with database.transaction() as session:
        types = set(session.scalars(select(AuditEvent.type)))
        assert {"device.approved", "token.issued"} <= types


def test_used_device_code_is_invalid_grant(
    http: TestClient, device_client: str, user: User, database: Database
) -> None:
    body = _start(http, device_client)
    _decide(_signed_in(http), body["user_code"], "allow")
    assert _poll(http, device_client, body["device_code"]).status_code == 200
    again = _poll(http, device_client, body["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert _row(database, body["device_code"]).status == "used"


def test_polling_too_fast_is_slow_down_and_the_interval_grows(
    http: TestClient, device_client: str, database: Database
) -> None:
    body = _start(http, device_client)
    assert _poll(http, device_client, body["device_code"]).json()["error"] == (
        "authorization_pending"
    )
    second = _poll(http, device_client, body["device_code"])
    assert second.status_code == 400 and second.json()["error"] == "slow_down"
    assert _row(database, body["device_code"]).interval == 10
    assert _poll(http, device_client, body["device_code"]).json()["error"] == "slow_down"
    assert _row(database, body["device_code"]).interval == 15


def test_polling_after_the_interval_is_still_pending(
    http: TestClient, device_client: str, database: Database
) -> None:
    body = _start(http, device_client)
    _poll(http, device_client, body["device_code"])
    _update(database, body["device_code"], last_polled_at=utcnow() - timedelta(seconds=6))
    assert _poll(http, device_client, body["device_code"]).json()["error"] == (
        "authorization_pending"
    )
    assert _row(database, body["device_code"]).interval == 5


def test_deny_gives_access_denied(
    http: TestClient, device_client: str, user: User, database: Database
) -> None:
    body = _start(http, device_client)
    done = _decide(_signed_in(http), body["user_code"], "deny")
    assert done.status_code == 200 and "return to your device" in done.text
    row = _row(database, body["device_code"])
    assert row.status == "denied" and row.user_id == user.id
    denied = _poll(http, device_client, body["device_code"])
    assert denied.status_code == 400 and denied.json()["error"] == "access_denied"
    with database.transaction() as session:
        assert session.scalars(select(AuditEvent).where(AuditEvent.type == "device.denied")).one()


def test_expired_device_code_is_expired_token(
    http: TestClient, device_client: str, database: Database
) -> None:
    body = _start(http, device_client)
    _update(database, body["device_code"], expires_at=utcnow() - timedelta(seconds=1))
    expired = _poll(http, device_client, body["device_code"])
    assert expired.status_code == 400 and expired.json()["error"] == "expired_token"
    assert _row(database, body["device_code"]).status == "pending"


def test_another_clients_device_code_is_invalid_grant(
    http: TestClient, device_client: str, make_client: MakeClient, database: Database
) -> None:
    other, _ = make_client(public=True, grant_types=[GRANT])
    body = _start(http, device_client)
    stolen = _poll(http, other, body["device_code"])
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert _row(database, body["device_code"]).last_polled_at is None


def test_client_without_the_device_grant_is_unauthorized_client(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    client_id, secret = make_client(grant_types=["client_credentials"])
    response = http.post(
        "/oauth2/device_authorization",
        data={"client_id": client_id},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    with database.transaction() as session:
        assert session.scalars(select(DeviceAuthorization)).all() == []


def test_confidential_client_must_authenticate(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    client_id, secret = make_client(grant_types=[GRANT])
    refused = http.post("/oauth2/device_authorization", data={"client_id": client_id})
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    accepted = http.post(
        "/oauth2/device_authorization",
        data={"client_id": client_id},
        auth=(client_id, secret or ""),
    )
    assert accepted.status_code == 200, accepted.text
    assert _poll(http, client_id, accepted.json()["device_code"]).status_code == 401


def test_unregistered_scope_is_invalid_scope(http: TestClient, device_client: str) -> None:
    response = http.post(
        "/oauth2/device_authorization", data={"client_id": device_client, "scope": "admin"}
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_device_page_sends_anonymous_visitors_to_login_keeping_the_code(
    http: TestClient, device_client: str, user: User
) -> None:
    code = _start(http, device_client)["user_code"]
    response = http.get(f"/device?user_code={code}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=/device%3Fuser_code%3D{code}"
    back = Browser(http).login(EMAIL, next=f"/device?user_code={code}")
    assert back.headers["location"] == f"/device?user_code={code}"
    assert f'value="{code}"' in http.get(back.headers["location"]).text


def test_device_forms_need_the_csrf_token(
    http: TestClient, device_client: str, user: User, database: Database
) -> None:
    body = _start(http, device_client)
    _signed_in(http)
    typed = http.post("/device", data={"user_code": body["user_code"]})
    assert typed.status_code == 403
    decided = http.post(
        "/device/decision",
        data={"user_code": body["user_code"], "decision": "allow", "csrf_token": "forged"},
    )
    assert decided.status_code == 403
    assert _row(database, body["device_code"]).status == "pending"


def test_wrong_user_code_shows_an_error_and_approves_nothing(
    http: TestClient, device_client: str, user: User, database: Database
) -> None:
    body = _start(http, device_client)
    browser = _signed_in(http)
    wrong = "BBBB-BBBB" if body["user_code"] != "BBBB-BBBB" else "CCCC-CCCC"
    response = browser.submit("/device", user_code=wrong)
    assert response.status_code == 400
    assert 'id="user_code-error"' in response.text and "wrong or has expired" in response.text
    decided = browser.submit("/device", "/device/decision", user_code=wrong, decision="allow")
    assert decided.status_code == 400
    row = _row(database, body["device_code"])
    assert row.status == "pending" and row.user_id is None


def test_typed_code_is_normalised(
    http: TestClient, device_client: str, user: User, database: Database
) -> None:
    body = _start(http, device_client, scope="openid")
    browser = _signed_in(http)
    typed = body["user_code"].lower().replace("-", " ")
    response = browser.submit("/device", user_code=typed)
    assert response.status_code == 200 and body["user_code"] in response.text
    assert "Know who you are" in response.text and "test client" in response.text


def test_wrong_codes_are_limited_per_ip(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    device_client: str,
    user: User,
) -> None:
    http = app_for(settings_for(rate_limits=("verify.account=2/600",)))
    browser = _signed_in(http)
    statuses = [browser.submit("/device", user_code="BBBB-CCCC").status_code for _ in range(4)]
    assert statuses[:2] == [400, 400] and statuses[-1] == 429
