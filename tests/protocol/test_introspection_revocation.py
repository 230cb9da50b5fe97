"""RFC 7662 introspection and RFC 7009 revocation of access tokens."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, RevokedToken

MakeClient = Callable[..., tuple[str, str | None]]


@pytest.fixture
def api(make_client: MakeClient) -> tuple[str, str]:
    client_id, secret = make_client(scope="read", audience=["https://api.example.com"])
    assert secret is not None
    return client_id, secret


def _token(http: TestClient, api: tuple[str, str]) -> str:
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=api)
    return str(response.json()["access_token"])


def _introspect(http: TestClient, auth: tuple[str, str], token: str) -> dict:
    response = http.post("/oauth2/introspect", data={"token": token}, auth=auth)
    assert response.status_code == 200, response.text
    return response.json()


def test_live_token_introspects_active_with_its_claims(
    http: TestClient, api: tuple[str, str]
) -> None:
    body = _introspect(http, api, _token(http, api))
    assert body["active"] is True
    assert body["client_id"] == api[0] and body["sub"] == api[0]
    assert body["scope"] == "read" and body["aud"] == "https://api.example.com"
    assert body["iss"] == "http://127.0.0.1:8000" and body["token_type"] == "Bearer"


def test_another_confidential_client_learns_nothing(
    http: TestClient, api: tuple[str, str], make_client: MakeClient
) -> None:
    resource_server = make_client(name="resource server")
    assert _introspect(http, resource_server, _token(http, api)) == {"active": False}  # type: ignore[arg-type]


def test_introspection_without_client_authentication_is_401(
    http: TestClient, api: tuple[str, str]
) -> None:
    response = http.post("/oauth2/introspect", data={"token": _token(http, api)})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "www-authenticate" in response.headers


def test_introspection_with_wrong_secret_is_401(http: TestClient, api: tuple[str, str]) -> None:
    response = http.post(
        "/oauth2/introspect", data={"token": _token(http, api)}, auth=(api[0], "nope")
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "ä" * 50, "." * 9000],
)
def test_garbage_introspects_exactly_inactive(
    http: TestClient, api: tuple[str, str], garbage: str
) -> None:
    response = http.post("/oauth2/introspect", data={"token": garbage}, auth=api)
    if len(garbage) > 8192:
        assert response.status_code == 400  # an oversized parameter
    else:
        assert response.json() == {"active": False}


def test_revoked_token_is_inactive_on_the_next_request(
    http: TestClient, api: tuple[str, str], database: Database
) -> None:
    token = _token(http, api)
    assert http.post("/oauth2/revoke", data={"token": token}, auth=api).status_code == 200
    assert _introspect(http, api, token) == {"active": False}
    with database.transaction() as session:
        assert session.scalars(select(RevokedToken)).one().expires_at.timestamp() > time.time()
        event = session.scalars(select(AuditEvent).where(AuditEvent.type == "token.revoked")).one()
        assert event.client_id == api[0] and token not in str(event.detail)


def test_revoked_token_stays_revoked_for_a_fresh_app(
    app_for: Callable[[Settings], TestClient], settings: Settings, api: tuple[str, str]
) -> None:
    first = app_for(settings)
    token = _token(first, api)
    first.post("/oauth2/revoke", data={"token": token}, auth=api)
    assert _introspect(app_for(settings), api, token) == {"active": False}


def test_revoking_unknown_token_answers_200(http: TestClient, api: tuple[str, str]) -> None:
    response = http.post("/oauth2/revoke", data={"token": "not-a-token"}, auth=api)
    assert response.status_code == 200


def test_revoking_another_clients_token_changes_nothing(
    http: TestClient, api: tuple[str, str], make_client: MakeClient
) -> None:
    token = _token(http, api)
    other = make_client(name="other")
    response = http.post("/oauth2/revoke", data={"token": token}, auth=other)  # type: ignore[arg-type]
    assert response.status_code == 200  # as for an unknown token (RFC 7009 §2.2)
    assert _introspect(http, api, token)["active"] is True


def test_revocation_needs_client_authentication(http: TestClient, api: tuple[str, str]) -> None:
    token = _token(http, api)
    assert http.post("/oauth2/revoke", data={"token": token}).status_code == 401
    assert _introspect(http, api, token)["active"] is True


def test_expired_token_introspects_inactive(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    api: tuple[str, str],
) -> None:
    http = app_for(settings_for(access_token_ttl=1))
    token = _token(http, api)
    time.sleep(2.1)
    assert _introspect(http, api, token) == {"active": False}


def test_token_signed_by_a_foreign_key_with_our_kid_is_inactive(
    http: TestClient, api: tuple[str, str]
) -> None:
    genuine = _token(http, api)
    header = jwt.decode(genuine, http.app.state.oauth.issuer.keys.ring().verification_keys).header
    claims = jwt.decode(genuine, http.app.state.oauth.issuer.keys.ring().verification_keys).claims
    forged = jwt.encode(header, claims, RSAKey.generate_key(2048))
    assert _introspect(http, api, forged) == {"active": False}
