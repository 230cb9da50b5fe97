"""The token endpoint with client_credentials (RFC 6749 §4.4) and RFC 9068 access tokens."""

from __future__ import annotations

from collections.abc import Callable

import jwt as pyjwt
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent

MakeClient = Callable[..., tuple[str, str | None]]


def _token(http: TestClient, client_id: str, secret: str | None, **form: str) -> dict:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", **form},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_token_has_rfc9068_header_and_claims(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client(scope="read write", audience=["https://api.example.com"])
    body = _token(http, client_id, secret, scope="read")
    header = pyjwt.get_unverified_header(body["access_token"])
    claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    jwks_kids = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt"
    assert header["kid"] in jwks_kids
    assert claims["iss"] == "http://127.0.0.1:8000"
    assert claims["sub"] == client_id and claims["client_id"] == client_id
    assert claims["aud"] == "https://api.example.com"
    assert claims["scope"] == "read"
    assert claims["exp"] - claims["iat"] == body["expires_in"] == 600
    assert len(claims["jti"]) >= 16
    assert body["token_type"] == "Bearer" and body["scope"] == "read"


def test_token_response_is_not_cacheable(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client()
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    assert response.headers["cache-control"] == "no-store"


def test_client_secret_post_is_accepted(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client()
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 200
    assert response.json()["access_token"].count(".") == 2


def test_no_scope_asked_grants_the_registered_scope(
    http: TestClient, make_client: MakeClient
) -> None:
    client_id, secret = make_client(scope="read write")
    assert _token(http, client_id, secret)["scope"] == "read write"


def test_wrong_secret_is_401_invalid_client_with_www_authenticate(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    client_id, _ = make_client()
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    with database.transaction() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.type == "client.auth_failed")
        ).one()
        assert event.client_id == client_id and event.outcome == "failure"
        assert "wrong" not in str(event.detail)


def test_unknown_client_is_401_invalid_client(http: TestClient) -> None:
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("nobody", "x")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_unknown_grant_type_is_unsupported_grant_type(
    http: TestClient, make_client: MakeClient
) -> None:
    client_id, secret = make_client()
    response = http.post(
        "/oauth2/token", data={"grant_type": "urn:example:magic"}, auth=(client_id, secret or "")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_grant_type_not_registered_is_unauthorized_client(
    http: TestClient, make_client: MakeClient
) -> None:
    client_id, secret = make_client(
        grant_types=["authorization_code"], redirect_uris=["https://app.example.com/cb"]
    )
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_scope_not_registered_is_invalid_scope(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client(scope="read")
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "read admin"},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_resource_parameter_sets_the_audience(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client(audience=["https://a.example.com", "https://b.example.com"])
    body = _token(http, client_id, secret, resource="https://b.example.com")
    claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://b.example.com"


def test_unregistered_resource_is_invalid_target(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client(audience=["https://a.example.com"])
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "resource": "https://evil.example.com"},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


def test_repeated_parameter_is_invalid_request(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client(scope="read write")
    response = http.post(
        "/oauth2/token",
        content="grant_type=client_credentials&scope=read&scope=write",
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_oversized_parameter_is_400(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client()
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "x" * 9000},
        auth=(client_id, secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_oversized_body_is_refused_in_oauth_format(http: TestClient) -> None:
    response = http.post(
        "/oauth2/token",
        content=b"grant_type=client_credentials&x=" + b"a" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


def test_json_body_is_invalid_request(http: TestClient, make_client: MakeClient) -> None:
    client_id, secret = make_client()
    response = http.post(
        "/oauth2/token", json={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_malformed_inputs_never_cause_a_500(http: TestClient, make_client: MakeClient) -> None:
    make_client()  # a real client exists, so lookups do run
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (b"%%%=%%%&grant_type", {}),
        (b"grant_type=client_credentials\x00", {}),
        (b"\xff\xfe\xfd", {}),
        (b"grant_type=client_credentials", {"authorization": "Basic !!!notbase64"}),
        (b"grant_type=client_credentials", {"authorization": "Basic " + "QQ==" * 5000}),
        (b"grant_type=client_credentials&client_id=" + b"a" * 5000 + b"&client_secret=x", {}),
    ]
    for body, headers in bodies:
        response = http.post(
            "/oauth2/token",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded", **headers},
        )
        assert 400 <= response.status_code < 500, (body[:40], response.status_code)
        assert "error" in response.json()


def test_get_on_token_endpoint_is_405_json(http: TestClient) -> None:
    response = http.get("/oauth2/token")
    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"


def test_issuance_is_audited_without_the_token(
    http: TestClient, make_client: MakeClient, database: Database
) -> None:
    client_id, secret = make_client()
    body = _token(http, client_id, secret)
    with database.transaction() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.type == "token.issued")).one()
        assert event.client_id == client_id
        assert event.detail["grant_type"] == "client_credentials"
        assert body["access_token"] not in str(event.detail)
        assert secret not in str(event.detail)


def test_token_endpoint_limit_answers_429_with_retry_after(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    make_client: MakeClient,
) -> None:
    http = app_for(settings_for(rate_limits=("token.client=3/60",)))
    client_id, secret = make_client()
    statuses = [
        http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret or ""),
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    refused = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")
    )
    assert refused.json()["error"] == "slow_down" and int(refused.headers["retry-after"]) > 0
