"""A token obtained for a user never carries the ``admin`` scope, whatever the client is
registered for or asks: the operators' API is for a client's own token only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import AuthorizationCode, RefreshToken

from ..conftest import ISSUER, remember_secret
from ..web_helpers import Browser
from .test_authorize import CALLBACK, Flow, callback_params, exchange, login_and_consent
from .test_mfa_tokens import _password

MakeClient = Callable[..., tuple[str, str | None]]
API = f"{ISSUER}/api/v1"
ADMIN_AUDIT = "/api/v1/admin/audit"


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]) -> Any:
    return app_for(settings_for(password_grant=True))


@pytest.fixture
def operator_app(make_client: MakeClient) -> tuple[str, str]:
    """A client registered for the admin API that also signs people in."""
    client_id, secret = make_client(
        name="Ops console",
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
        scope="admin read",
        audience=[API],
    )
    assert secret is not None
    return client_id, secret


def _scope_of(token: str) -> list[str]:
    return str(pyjwt.decode(token, options={"verify_signature": False})["scope"]).split()


def _admin_audit(http: TestClient, token: str) -> Any:
    return http.get(ADMIN_AUDIT, headers={"Authorization": f"Bearer {token}"})


def _refused(response: Any) -> None:
    """The admin API's refusal of a user's token: its audience is not the API's (401) or it
    lacks the scope (403), as an RFC 9457 problem, never the audit trail."""
    assert response.status_code in (401, 403), response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_the_code_flow_drops_admin_from_what_the_user_is_asked_and_given(
    http: TestClient, database: Database, user: str, operator_app: tuple[str, str]
) -> None:
    scope = "openid admin read offline_access"
    assert Browser(http).login(user).status_code == 303
    consent = Flow(http, operator_app[0], scope=scope).start()
    assert consent.status_code == 200 and "“admin”" not in consent.text
    flow = Flow(http, operator_app[0], scope=scope)
    response = login_and_consent(http, flow, user)
    assert response.status_code == 303, response.text
    tokens = exchange(http, flow, callback_params(response)["code"], operator_app[1])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["scope"] == "openid read offline_access"
    assert _scope_of(body["access_token"]) == ["openid", "read", "offline_access"]
    _refused(_admin_audit(http, body["access_token"]))
    with database.transaction() as session:
        assert session.scalars(select(AuthorizationCode.scope)).one() == body["scope"]
        assert session.scalars(select(RefreshToken.scope)).one() == body["scope"]
    # Nor can a refresh ask for it back.
    refreshed = http.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=operator_app,
    )
    assert refreshed.status_code == 200, refreshed.text
    remember_secret(refreshed.json()["refresh_token"])
    remember_secret(refreshed.json()["access_token"])
    assert "admin" not in _scope_of(refreshed.json()["access_token"])


def test_the_same_clients_own_token_still_reaches_the_admin_api(
    http: TestClient, operator_app: tuple[str, str]
) -> None:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        auth=operator_app,
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    remember_secret(token)
    assert _scope_of(token) == ["admin"]
    assert _admin_audit(http, token).status_code == 200


@pytest.mark.parametrize("asked", [None, "openid admin", "admin"], ids=repr)
def test_the_password_grant_never_gives_a_user_admin(
    http: TestClient, user: str, make_client: MakeClient, asked: str | None
) -> None:
    client_id, _ = make_client(
        public=True,
        first_party=True,
        grant_types=["password", "refresh_token"],
        scope="openid admin",
        audience=[API],
    )
    form = {} if asked is None else {"scope": asked}
    response = _password(http, client_id, user, **form)
    assert response.status_code == 200, response.text
    body = response.json()
    remember_secret(body["access_token"])
    remember_secret(body.get("id_token"))
    assert "admin" not in _scope_of(body["access_token"])
    assert "admin" not in body.get("scope", "").split()
    _refused(_admin_audit(http, body["access_token"]))
