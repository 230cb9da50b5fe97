"""Client authentication at the token, introspection and revocation endpoints: one method per
request (RFC 6749 §2.3), and failures in RFC 6749 error JSON with a readable description."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from identity.config import Settings

MakeClient = Callable[..., tuple[str, str | None]]
AppFor = Callable[[Settings], TestClient]
SettingsFor = Callable[..., Settings]
ENDPOINTS = ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke")


@pytest.fixture
def confidential(make_client: MakeClient) -> tuple[str, str]:
    client_id, secret = make_client(scope="read")
    assert secret is not None
    return client_id, secret


def _token(http: TestClient, client: tuple[str, str]) -> str:
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=client)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _form(path: str, token: str) -> dict[str, str]:
    return {"grant_type": "client_credentials"} if path == "/oauth2/token" else {"token": token}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("basic_secret", ["right", "wrong"])
def test_basic_and_a_secret_in_the_body_together_are_invalid_request(
    http: TestClient, confidential: tuple[str, str], path: str, basic_secret: str
) -> None:
    client_id, secret = confidential
    token = _token(http, confidential)
    basic = (client_id, secret if basic_secret == "right" else "not-the-secret")
    form = {**_form(path, token), "client_id": client_id, "client_secret": secret}
    response = http.post(path, data=form, auth=basic)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_request"
    if path != "/oauth2/token":  # nothing was revoked: the token is still live
        live = http.post("/oauth2/introspect", data={"token": token}, auth=confidential)
        assert live.json()["active"] is True


def test_in_loop_introspection_also_refuses_two_methods(
    app_for: AppFor, settings_for: SettingsFor, confidential: tuple[str, str]
) -> None:
    # A cache that is never due for its check: the in-loop path would answer.
    http = app_for(settings_for(cache_check_seconds=3600))
    token = _token(http, confidential)
    form = {"token": token, "client_id": confidential[0], "client_secret": confidential[1]}
    response = http.post("/oauth2/introspect", data=form, auth=confidential)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_basic_with_another_client_id_in_the_body_is_invalid_request(
    http: TestClient, confidential: tuple[str, str], make_client: MakeClient, path: str
) -> None:
    other, _ = make_client(name="other")
    form = {**_form(path, _token(http, confidential)), "client_id": other}
    response = http.post(path, data=form, auth=confidential)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_basic_with_its_own_client_id_in_the_body_is_accepted(
    http: TestClient, confidential: tuple[str, str], path: str
) -> None:
    form = {**_form(path, _token(http, confidential)), "client_id": confidential[0]}
    assert http.post(path, data=form, auth=confidential).status_code == 200


@pytest.mark.parametrize("path", ENDPOINTS)
def test_wrong_secret_is_401_invalid_client_described_in_a_sentence(
    http: TestClient, confidential: tuple[str, str], path: str
) -> None:
    form = _form(path, _token(http, confidential))
    response = http.post(path, data=form, auth=(confidential[0], "not-the-secret"))
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    description = body["error_description"]
    assert "[" not in description and "'" not in description, description
    assert description.endswith(".") and description[0].isupper(), description
    assert response.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_wrong_secret_in_the_body_is_invalid_client(
    http: TestClient, confidential: tuple[str, str], path: str
) -> None:
    form = {
        **_form(path, _token(http, confidential)),
        "client_id": confidential[0],
        "client_secret": "not-the-secret",
    }
    response = http.post(path, data=form)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert "[" not in response.json()["error_description"]


def test_device_authorization_refuses_two_methods(
    http: TestClient, make_client: MakeClient
) -> None:
    device = "urn:ietf:params:oauth:grant-type:device_code"
    client_id, secret = make_client(grant_types=[device], scope="openid")
    assert secret is not None
    form = {"client_id": client_id, "client_secret": secret, "scope": "openid"}
    response = http.post("/oauth2/device_authorization", data=form, auth=(client_id, secret))
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert http.post("/oauth2/device_authorization", data=form).status_code == 200
