"""RFC 8707 ``resource`` at the token endpoint: it may narrow what the grant covers (the
authorization request's resources, or a refresh family's), never widen or change it. Anything
else is ``invalid_target``, and the refused request spends neither the code nor the refresh
token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from starlette.testclient import TestClient

from ..conftest import remember_secret
from .test_authorize import CALLBACK, Flow, callback_params, login_and_consent
from .test_device import GRANT, _decide, _poll, _signed_in, _start

MakeClient = Callable[..., tuple[str, str | None]]
FIRST, SECOND = "https://first.example.com", "https://second.example.com"


@pytest.fixture
def app_client(make_client: MakeClient) -> tuple[str, str]:
    client_id, secret = make_client(
        name="Two APIs",
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "refresh_token"],
        scope="offline_access",
        audience=[FIRST, SECOND],
    )
    assert secret is not None
    return client_id, secret


def _code(http: TestClient, client_id: str, user: str, **params: str) -> tuple[Flow, str]:
    flow = Flow(http, client_id, scope="openid offline_access", **params)
    code = callback_params(login_and_consent(http, flow, user))["code"]
    remember_secret(code)
    return flow, code


def _exchange(http: TestClient, flow: Flow, code: str, client: tuple[str, str], **form: str) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": flow.verifier,
        **form,
    }
    return http.post("/oauth2/token", data=data, auth=client)


def _refresh(http: TestClient, client: tuple[str, str], token: str, **form: str) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": token, **form}
    return http.post("/oauth2/token", data=data, auth=client)


def _aud(response: Any) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    for name in ("access_token", "refresh_token", "id_token"):
        remember_secret(body.get(name))
    return pyjwt.decode(body["access_token"], options={"verify_signature": False})["aud"]


def test_code_exchange_for_a_resource_the_authorization_did_not_ask_for_is_invalid_target(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    flow, code = _code(http, app_client[0], user, resource=FIRST)
    refused = _exchange(http, flow, code, app_client, resource=SECOND)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
    assert refused.headers["cache-control"] == "no-store"
    # The refusal did not spend the code.
    assert _aud(_exchange(http, flow, code, app_client)) == FIRST


def test_code_exchange_may_narrow_to_one_of_the_authorized_resources(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    flow, code = _code(http, app_client[0], user)  # both registered APIs
    response = _exchange(http, flow, code, app_client, resource=FIRST)
    assert _aud(response) == FIRST
    # The refresh token still covers the whole grant (RFC 8707 §2.2).
    assert _aud(_refresh(http, app_client, response.json()["refresh_token"], resource=SECOND)) == (
        SECOND
    )


def test_refresh_with_a_resource_outside_the_original_grant_is_invalid_target(
    http: TestClient, user: str, app_client: tuple[str, str]
) -> None:
    flow, code = _code(http, app_client[0], user, resource=FIRST)
    tokens = _exchange(http, flow, code, app_client)
    assert _aud(tokens) == FIRST
    refresh_token = tokens.json()["refresh_token"]
    for resource in (SECOND, "https://unknown.example.com"):
        refused = _refresh(http, app_client, refresh_token, resource=resource)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
    # Refused requests did not rotate (spend) the refresh token.
    assert _aud(_refresh(http, app_client, refresh_token, resource=FIRST)) == FIRST


def test_device_poll_for_a_resource_the_device_did_not_ask_for_is_invalid_target(
    http: TestClient, user: str, make_client: MakeClient
) -> None:
    client_id, _ = make_client(
        public=True, grant_types=[GRANT], scope="openid", audience=[FIRST, SECOND]
    )
    started = _start(http, client_id, scope="openid", resource=FIRST)
    assert _decide(_signed_in(http), started["user_code"], "allow").status_code == 200
    data = {"grant_type": GRANT, "device_code": started["device_code"], "client_id": client_id}
    refused = http.post("/oauth2/token", data={**data, "resource": SECOND})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
    assert _aud(_poll(http, client_id, started["device_code"])) == FIRST
