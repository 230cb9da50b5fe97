"""Malformed input is the client's mistake: a 400-class answer in the caller's own format
(RFC 6749 error JSON, or an error redirect once the redirect URI is known good, for the
OAuth endpoints; a friendly page, never a redirect, for the hosted pages). Never a 500 (an
Authlib error description refusing a quoted character) and never a 503 (PostgreSQL
refusing NUL in text)."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.oauth2.rfc6749 import InvalidClientError
from sqlalchemy.exc import DataError
from starlette.testclient import TestClient

from identity.app import create_app
from identity.config import Settings
from identity.protocol.server import IdentityServer

from ..conftest import ISSUER
from ..web_helpers import Browser, csrf_of

MakeClient = Callable[..., tuple[str, str | None]]
CALLBACK = "https://app.example.com/callback"
API = "https://api.example.com"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 Appendix B


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    """A client that sees a 500 as a response (with the app's own body), not an exception."""
    with TestClient(create_app(settings), base_url=ISSUER, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def web_client(make_client: MakeClient) -> str:
    client_id, _ = make_client(
        redirect_uris=[CALLBACK], grant_types=["authorization_code"], scope="openid"
    )
    return client_id


@pytest.fixture
def service(make_client: MakeClient) -> tuple[str, str]:
    client_id, secret = make_client(
        grant_types=["client_credentials", DEVICE_GRANT], scope="read", audience=[API]
    )
    assert secret is not None
    return client_id, secret


def _authorize(http: TestClient, client_id: str, raw: str = "", **params: str | None) -> Any:
    """GET /oauth2/authorize: a valid request changed by ``params`` (None leaves one out),
    then ``raw`` appended to the query as it is."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid",
        "state": "s1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **params,
    }
    sent = urlencode({k: v for k, v in query.items() if v is not None})
    return http.get(f"/oauth2/authorize?{sent}{raw}", follow_redirects=False)


def _is_page(response: Any, status: int = 400) -> bool:
    return (
        response.status_code == status
        and response.headers["content-type"].startswith("text/html")
        and "location" not in response.headers
    )


def _oauth_error(response: Any, error: str) -> bool:
    return (
        response.status_code == 400
        and response.headers["content-type"].startswith("application/json")
        and response.json()["error"] == error
    )


# -- the authorization endpoint ----------------------------------------------------------


@pytest.mark.parametrize("redirect_uri", ['"', "\\", "é", "https://app.example.com/é"])
def test_authorize_refuses_a_malformed_redirect_uri_with_a_page(
    http: TestClient, web_client: str, redirect_uri: str
) -> None:
    assert _is_page(_authorize(http, web_client, redirect_uri=redirect_uri))


def test_authorize_refuses_a_scope_outside_rfc_6749_syntax_with_a_page(
    http: TestClient, web_client: str
) -> None:
    assert _is_page(_authorize(http, web_client, scope='openid x"y'))


def test_authorize_redirects_an_unknown_scope_holding_a_quote_as_invalid_scope(
    http: TestClient, web_client: str
) -> None:
    response = _authorize(http, web_client, scope="openid x'y")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(CALLBACK)
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["error"] == "invalid_scope" and params["state"] == "s1"


@pytest.mark.parametrize("name", ["state", "scope"])
def test_authorize_refuses_parameters_that_are_not_utf_8_with_a_page(
    http: TestClient, web_client: str, name: str
) -> None:
    # The value cannot be echoed back exactly, so there is nothing to redirect with.
    assert _is_page(_authorize(http, web_client, raw=f"&{name}=%ff%fe", **{name: None}))


def test_authorize_refuses_a_control_character_in_the_nonce_with_a_page(
    http: TestClient, web_client: str
) -> None:
    assert _is_page(_authorize(http, web_client, nonce="a\x01b"))


# -- the token and device authorization endpoints ------------------------------------------


def test_device_authorization_refuses_a_malformed_scope_as_invalid_scope(
    http: TestClient, service: tuple[str, str]
) -> None:
    response = http.post("/oauth2/device_authorization", data={"scope": 'read x"y'}, auth=service)
    assert _oauth_error(response, "invalid_scope")


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/device_authorization"])
@pytest.mark.parametrize("resource", ['https://x/"', "https://é.example", "https://x/\\"])
def test_a_malformed_resource_is_invalid_target(
    http: TestClient, service: tuple[str, str], path: str, resource: str
) -> None:
    data = {"grant_type": "client_credentials", "resource": resource}
    assert _oauth_error(http.post(path, data=data, auth=service), "invalid_target")


def test_an_unregistered_resource_holding_a_quote_is_invalid_target(
    http: TestClient, service: tuple[str, str]
) -> None:
    data = {"grant_type": "client_credentials", "resource": "https://x/'"}
    response = http.post("/oauth2/token", data=data, auth=service)
    assert _oauth_error(response, "invalid_target")
    assert response.json()["error_description"].endswith("'https://x/''.")


def _post_raw(http: TestClient, path: str, body: bytes, **headers: str) -> Any:
    headers = {"content-type": "application/x-www-form-urlencoded", **headers}
    return http.post(path, content=body, headers=headers)


def test_a_repeated_parameter_with_a_quote_in_its_name_is_invalid_request(
    http: TestClient,
) -> None:
    assert _oauth_error(_post_raw(http, "/oauth2/token", b'a"=1&a"=2'), "invalid_request")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_as_a_form_body_are_invalid_request(http: TestClient, seed: int) -> None:
    body = random.Random(seed).randbytes(4096)
    assert _oauth_error(_post_raw(http, "/oauth2/token", body), "invalid_request")


def test_a_form_body_that_is_not_utf_8_is_invalid_request(http: TestClient) -> None:
    body = b"grant_type=client_credentials&client_id=%ff"
    assert _oauth_error(_post_raw(http, "/oauth2/token", body), "invalid_request")


@pytest.mark.parametrize(
    "credentials",
    [
        b"\xff\xfe:secret",  # not UTF-8
        b"%00:secret",  # a NUL client_id, for the database
        b'a"b%ff:secret',  # an escape that is not UTF-8
    ],
)
@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"])
def test_malformed_basic_credentials_are_invalid_request(
    http: TestClient, credentials: bytes, path: str
) -> None:
    header = "Basic " + base64.b64encode(credentials).decode()
    body = b"grant_type=client_credentials&token=x"
    assert _oauth_error(_post_raw(http, path, body, authorization=header), "invalid_request")


def test_a_basic_header_with_a_non_ascii_payload_is_invalid_request(http: TestClient) -> None:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"authorization": "Basic ÿÿ==".encode("latin-1")},  # type: ignore[dict-item]
    )
    assert _oauth_error(response, "invalid_request")


# -- the hosted pages: NUL never reaches the database ----------------------------------------


def test_end_session_refuses_nul_in_the_query_with_a_page(http: TestClient) -> None:
    assert _is_page(http.get("/oauth2/logout?client_id=%00", follow_redirects=False))


def test_end_session_refuses_nul_in_the_form_with_a_page(http: TestClient) -> None:
    response = http.post("/oauth2/logout", data={"client_id": "a\x00b"}, follow_redirects=False)
    assert _is_page(response)


def test_login_refuses_nul_in_the_form_with_a_page(http: TestClient, user: str) -> None:
    response = Browser(http).login("ada\x00@example.com")
    assert _is_page(response)


@pytest.mark.parametrize("kind", ["consents", "sessions"])
def test_account_revoke_refuses_nul_in_the_path_with_a_page(
    http: TestClient, user: str, kind: str
) -> None:
    assert Browser(http).login(user).status_code == 303
    token = csrf_of(http.get("/account").text)
    response = http.post(
        f"/account/{kind}/a%00b/revoke", data={"csrf_token": token}, follow_redirects=False
    )
    assert _is_page(response)


# -- what still gets through is answered as the client's mistake -------------------------------


def test_error_text_keeps_only_what_rfc_6749_allows_in_a_description() -> None:
    from identity.protocol.parameters import error_text

    assert error_text('a"b\\cé\x00d') == "a?b?c??d"
    assert error_text("x" * 100) == "x" * 40


def _forbidden_description(*args: Any, **kwargs: Any) -> None:
    raise InvalidClientError('quoting "user" text')  # Authlib raises ValueError right here


def test_a_forbidden_error_description_is_invalid_request_at_the_token_endpoint(
    http: TestClient, service: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(IdentityServer, "query_client", _forbidden_description)
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("x", "y")
    )
    assert _oauth_error(response, "invalid_request")


def test_a_forbidden_error_description_is_a_page_at_the_authorization_endpoint(
    http: TestClient, web_client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(IdentityServer, "query_client", _forbidden_description)
    assert _is_page(_authorize(http, web_client))


def test_any_other_value_error_is_still_a_500(
    http: TestClient, service: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("a bug of ours")

    monkeypatch.setattr(IdentityServer, "query_client", broken)
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=service)
    assert response.status_code == 500


def test_a_value_the_database_refuses_is_400_not_503(
    http: TestClient, web_client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: Any, **kwargs: Any) -> None:
        raise DataError("SELECT 1", {}, Exception("NUL in text"))

    monkeypatch.setattr(IdentityServer, "query_client", refused)
    token = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=("x", "y"))
    assert _oauth_error(token, "invalid_request")
    assert _is_page(_authorize(http, web_client))
