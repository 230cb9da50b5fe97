"""The OpenAPI document at /openapi.json: valid OpenAPI 3.1, complete, and true to the API
(schemathesis fuzzes /api/v1 in-process; a scripted sign-up walks the main flow)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, cast

import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from identity import repositories
from identity.accounts import operators
from identity.api.routes import OPERATIONS, api_routes
from identity.app import create_app
from identity.config import Settings
from identity.db import Database
from identity.openapi.document import openapi_document
from identity.protocol import clients
from tests.conftest import ISSUER, MailSink
from tests.web_helpers import code_from

OAUTH_PATHS = {
    "/oauth2/token": {"post"},
    "/oauth2/introspect": {"post"},
    "/oauth2/revoke": {"post"},
    "/oauth2/userinfo": {"get", "post"},
    "/oauth2/device_authorization": {"post"},
    "/.well-known/openid-configuration": {"get"},
    "/.well-known/jwks.json": {"get"},
}
GRANTS = {
    "client_credentials",
    "authorization_code",
    "refresh_token",
    "password",
    "urn:ietf:params:oauth:grant-type:device_code",
}
PASSWORD = "correct horse battery staple 42"
EXAMPLES = 25  # per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


def _convertors_dropped(path: str) -> str:
    return re.sub(r"{([^}:]+)(:[^}]+)?}", r"{\1}", path)


def _api_paths(routes: list[BaseRoute], prefix: str = "") -> set[str]:
    """The OpenAPI form of every route path under /api/v1 (Mounts followed)."""
    found: set[str] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= _api_paths(list(route.routes), prefix + route.path)
        elif isinstance(route, Route) and (prefix + route.path).startswith("/api/v1"):
            found.add(_convertors_dropped(prefix + route.path))
    return found


def _served_methods(http: TestClient, paths: set[str]) -> set[tuple[str, str]]:
    """(method, path) pairs the app does not answer with 405 (the API routes take every
    method and answer the ones they do not serve with a 405 problem)."""
    served = set()
    for path in paths:
        url = re.sub(r"{[^}]+}", "00000000-0000-0000-0000-000000000000", path)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if http.request(method, url).status_code != 405:
                served.add((method.lower(), path))
    return served


def _documented(document: dict[str, Any], prefix: str) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        if path.startswith(prefix)
        for method in item
    }


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# -- the document ------------------------------------------------------------------------------


@pytest.fixture
def document(settings_for: Callable[..., Settings]) -> dict[str, Any]:
    return openapi_document(settings_for(password_grant=True), OPERATIONS)


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    errors = [str(e) for e in jsonschema_rs.Draft202012Validator(OPENAPI_31).iter_errors(document)]
    assert errors == []
    assert document["openapi"].startswith("3.1.")
    assert document["servers"] == [{"url": ISSUER}]


def test_every_component_is_a_valid_json_schema_and_every_ref_resolves(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        assert jsonschema_rs.meta.is_valid(schema), name
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_document_lists_every_api_route_and_nothing_else(
    settings_for: Callable[..., Settings], http: TestClient, document: dict[str, Any]
) -> None:
    paths = _api_paths(list(Starlette(routes=api_routes(settings_for())).routes))
    assert paths, "api_routes() has no route under /api/v1"
    assert _api_paths(list(cast(Starlette, http.app).routes)) == paths  # mounted as they are
    assert {path for _, path in _documented(document, "/api/v1")} == paths
    assert _documented(document, "/api/v1") == _served_methods(http, paths)
    assert len(OPERATIONS) == len(_documented(document, "/api/v1"))


def test_api_operations_document_their_bodies_errors_and_security(
    document: dict[str, Any],
) -> None:
    for operation in OPERATIONS:
        spec = document["paths"][_convertors_dropped(operation.path)][operation.method.lower()]
        responses = spec["responses"]
        for status, model in [(operation.status, operation.response), *operation.other_successes]:
            success = responses[str(status)]
            if model is None:
                assert "content" not in success
            else:
                assert set(success["content"]) == {"application/json"}
        if operation.request is not None:
            assert set(spec["requestBody"]["content"]) == {"application/json"}
        for status in operation.errors:
            assert set(responses[str(status)]["content"]) == {"application/problem+json"}
        assert spec["tags"] == ["Admin API" if operation.admin else "Account API"]
        if operation.auth:
            assert spec["security"] == [{"bearerAuth": []}]
            assert "WWW-Authenticate" in responses["401"]["headers"]
        else:
            assert spec["security"] == []


def test_document_describes_the_oauth_endpoints(document: dict[str, Any]) -> None:
    for path, methods in OAUTH_PATHS.items():
        assert set(document["paths"][path]) >= methods, path
    token = document["paths"]["/oauth2/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert {v["properties"]["grant_type"]["const"] for v in form["oneOf"]} == GRANTS
    assert set(token["responses"]) >= {"200", "400", "401", "429"}
    assert token["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OAuthError"
    }
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "scheme": "bearer"}
    assert schemes["clientBasic"]["scheme"] == "basic"


def test_token_grants_listed_are_the_enabled_ones(settings_for: Callable[..., Settings]) -> None:
    document = openapi_document(settings_for(password_grant=False), OPERATIONS)
    token = document["paths"]["/oauth2/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert {v["properties"]["grant_type"]["const"] for v in form["oneOf"]} == GRANTS - {"password"}


def test_openapi_json_is_served_as_cacheable_json(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for()
    response = app_for(settings).get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.json() == openapi_document(settings, OPERATIONS)


def test_docs_page_loads_only_own_script_and_style(http: TestClient) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<script src="/static/docs.js" defer></script>' in html
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # no inline script
    assert " style=" not in html and "<style" not in html
    assert 'href="/openapi.json"' in html  # the no-script fallback
    assert "<noscript>" in html
    for asset in ("/static/docs.js", "/static/docs.css"):
        assert http.get(asset).status_code == 200, asset


# -- a scripted walk: register -> verify -> token -> me -------------------------------------------


def _conforms(document: dict[str, Any], method: str, path: str, response: Any) -> Any:
    """Assert that ``response`` is one the document lists for the operation, with its media
    type and a body valid against its schema; return the body."""
    spec = document["paths"][path][method]["responses"].get(str(response.status_code))
    assert spec is not None, f"{method} {path}: undocumented {response.status_code}"
    content = spec.get("content")
    if not content:
        assert response.content == b"", response.content
        return None
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{method} {path}: {media} not in {list(content)}"
    root = {"components": document["components"], **content[media]["schema"]}
    body = response.json()
    errors = [str(e) for e in jsonschema_rs.Draft202012Validator(root).iter_errors(body)]
    assert errors == [], f"{method} {path} {response.status_code}: {errors}"
    return body


def test_register_verify_token_me_conform_to_the_document(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    http = app_for(settings_for(smtp_url=mail_sink.url, password_grant=True))
    document = http.get("/openapi.json").json()
    email = "walk@example.com"
    client_id, _ = make_client(
        name="first party",
        grant_types=["password", "refresh_token"],
        scope="openid profile email account",
        public=True,
        first_party=True,
    )
    account = {"email": email, "password": PASSWORD, "name": "Walker"}
    registered = http.post("/api/v1/register", json=account)
    assert registered.status_code == 202, registered.text
    assert _conforms(document, "post", "/api/v1/register", registered) == {"status": "check_email"}

    bad = http.post("/api/v1/verify-email", json={"email": email, "code": "000000x"})
    problem = _conforms(document, "post", "/api/v1/verify-email", bad)
    assert bad.headers["content-type"] == "application/problem+json", problem
    verified = http.post(
        "/api/v1/verify-email", json={"email": email, "code": code_from(mail_sink, email)}
    )
    assert verified.status_code == 200, verified.text
    assert _conforms(document, "post", "/api/v1/verify-email", verified) == {"status": "verified"}

    token = http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": PASSWORD,
            "client_id": client_id,
            "scope": "openid account",
        },
    )
    assert token.status_code == 200, token.text
    tokens = _conforms(document, "post", "/oauth2/token", token)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

    me = http.get("/api/v1/me", headers=bearer)
    assert me.status_code == 200, me.text
    assert _conforms(document, "get", "/api/v1/me", me)["email"] == email
    for path in ("/api/v1/me/sessions", "/api/v1/me/consents", "/api/v1/me/events"):
        _conforms(document, "get", path, http.get(path, headers=bearer))
    anonymous = http.get("/api/v1/me")
    _conforms(document, "get", "/api/v1/me", anonymous)
    assert anonymous.status_code == 401 and "www-authenticate" in anonymous.headers
    _conforms(document, "post", "/api/v1/logout", http.post("/api/v1/logout", headers=bearer))
    _conforms(document, "get", "/api/v1/me", http.get("/api/v1/me", headers=bearer))


def test_database_outage_is_the_documented_problem(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, ConnectionError("database down"))

    monkeypatch.setattr(repositories, "get_user_by_email", unavailable)
    document = http.get("/openapi.json").json()
    response = http.post("/api/v1/verify-email/resend", json={"email": "a@example.com"})
    assert response.status_code == 503
    assert response.headers["retry-after"]
    _conforms(document, "post", "/api/v1/verify-email/resend", response)


# -- schemathesis: the live API against its own document -----------------------------------------


@pytest.fixture
def fuzzed_app(database: Database, settings_for: Callable[..., Settings]) -> Iterator[Starlette]:
    """An app for schemathesis, which runs its lifespan itself: stopped again here, before
    ``database`` empties the tables."""
    try:
        yield create_app(settings_for(password_grant=True))
    finally:
        shutdown_lifespans()


@pytest.fixture
def api_schema(fuzzed_app: Starlette) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.fixture
def bearer(api_schema: Any, fuzzed_app: Starlette, database: Database) -> dict[str, str]:
    """A verified user's token, so the protected operations get past authentication."""
    token = _password_token(fuzzed_app, database, "fuzz@example.com")
    return {"Authorization": f"Bearer {token}"}


def _password_token(app: Starlette, database: Database, email: str) -> str:
    with database.transaction() as session:
        operators.create_user(
            app.state.accounts, session, email=email, name="Fuzz", password=PASSWORD, verified=True
        )
        client = clients.register_client(
            session,
            name="first party",
            grant_types=["password", "refresh_token"],
            scope="openid profile email account",
            public=True,
            first_party=True,
        ).client.client_id
    # Not entered: the lifespan schemathesis started serves this client too.
    response = TestClient(app, base_url=ISSUER).post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": PASSWORD,
            "client_id": client,
            "scope": "openid profile email account",
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _operations() -> list[tuple[str, str]]:
    return sorted({(op.method.upper(), _convertors_dropped(op.path)) for op in OPERATIONS})


# schemathesis' own ``from_fixture(...).parametrize()`` fails on pytest 9.2 (it sets the
# removed ``Function._nodeid``), so each operation is a parametrized test that runs the
# operation's strategies (valid and invalid requests) under Hypothesis itself.
@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_operation_conforms_to_its_document(
    api_schema: Any, bearer: dict[str, str], method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = hypothesis.strategies.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )

    @hypothesis.given(case=cases)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def conforms(case: Any) -> None:
        case.call_and_validate(base_url=ISSUER, headers=bearer, checks=CHECKS)

    conforms()
