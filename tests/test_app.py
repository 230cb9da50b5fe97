"""Health, readiness, discovery, headers and CORS of the whole application."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from identity.config import Settings

from .conftest import free_port


def test_healthz_answers_ok(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_ready_when_dependencies_answer(http: TestClient) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200
    assert set(response.json()["checks"].values()) == {"ok"}


def test_readyz_is_503_when_the_database_is_unreachable(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    http = app_for(settings_for(database_url=dead))
    response = http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "down"


def test_database_down_makes_the_token_endpoint_503_not_500(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    http = app_for(settings_for(database_url=dead))
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("a", "b")
    )
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "retry-after" in response.headers


def test_readyz_is_degraded_but_200_when_redis_is_unreachable(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    # Without Redis the service still works (in-process limits, denylist from the database).
    http = app_for(settings_for(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["redis"] == "down"
    assert response.json()["checks"]["database"] == "ok"


def test_discovery_lists_only_what_is_supported(http: TestClient) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        document = http.get(path).json()
        assert document["issuer"] == "http://127.0.0.1:8000"
        assert document["grant_types_supported"][:2] == ["authorization_code", "client_credentials"]
        assert "password" not in document["grant_types_supported"]
        assert document["jwks_uri"] == "http://127.0.0.1:8000/.well-known/jwks.json"
        assert set(document["token_endpoint_auth_methods_supported"]) == {
            "client_secret_basic",
            "client_secret_post",
            "none",
        }


def test_security_headers_are_on_every_response(http: TestClient) -> None:
    for response in (
        http.get("/healthz"),
        http.get("/.well-known/jwks.json"),
        http.post("/oauth2/token", data={}),
        http.get("/no/such/page"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # http issuer


def test_hsts_is_sent_for_an_https_issuer(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    http = app_for(settings_for(issuer="https://id.example.com"))
    assert "max-age=" in http.get("/healthz").headers["strict-transport-security"]


def test_cors_only_for_configured_origins(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    http = app_for(settings_for(cors_origins=("https://app.example.com",)))
    allowed = http.get("/.well-known/jwks.json", headers={"origin": "https://app.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-credentials" not in allowed.headers
    other = http.get("/.well-known/jwks.json", headers={"origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers
    preflight = http.options(
        "/oauth2/token",
        headers={"origin": "https://app.example.com", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200
    introspect = http.options(
        "/oauth2/introspect",
        headers={"origin": "https://app.example.com", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in introspect.headers


def test_no_cors_headers_without_configured_origins(http: TestClient) -> None:
    response = http.get("/.well-known/jwks.json", headers={"origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers


def test_unknown_protocol_path_is_a_json_404(http: TestClient) -> None:
    response = http.get("/oauth2/no-such-endpoint")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_unknown_page_is_a_friendly_html_404(http: TestClient) -> None:
    response = http.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text
