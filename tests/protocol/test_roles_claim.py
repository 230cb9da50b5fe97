"""Roles in tokens (issue 17): the ``roles`` scope puts the user's roles, filtered by the
client's role prefixes and read afresh at every issue, into access tokens, ID tokens,
UserInfo and introspection, for every user grant; discovery and the consent page name it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from starlette.testclient import TestClient

from identity.accounts import operators, roles
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database

from ..conftest import ISSUER, remember_secret
from ..web_helpers import Browser
from .test_authorize import CALLBACK, Flow, callback_params, exchange, login_and_consent
from .test_device import GRANT as DEVICE_GRANT
from .test_device import _decide, _poll, _start
from .test_mfa_tokens import _enrol, _mfa, _mfa_token, _next_code, _password

MakeClient = Callable[..., tuple[str, str | None]]
CLI = RequestContext.command_line()
ROLES = ["admin", "app1:editor", "app1:viewer", "app2:owner"]


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]) -> Any:
    """The app with the password grant (and so the mfa grant) on, for the grants' tests."""
    return app_for(settings_for(password_grant=True))


def _set_roles(database: Database, email: str, wanted: list[str]) -> uuid.UUID:
    """Make the user's roles exactly ``wanted``, as an operator would; returns their id."""
    with database.transaction() as session:
        user = operators.find_user(session, email)
        for role in roles.roles_of(session, user):
            roles.remove_role(session, user, role, actor="admin", context=CLI)
        for role in wanted:
            roles.add_role(session, user, role, actor="admin", context=CLI)
        return user.id


def _web_app(make_client: MakeClient, **options: Any) -> tuple[str, str]:
    options.setdefault("grant_types", ["authorization_code", "refresh_token"])
    client_id, secret = make_client(name="Dashboard", redirect_uris=[CALLBACK], **options)
    assert secret is not None
    return client_id, secret


def _code_flow(http: TestClient, client: tuple[str, str], email: str, scope: str) -> dict[str, Any]:
    flow = Flow(http, client[0], scope=scope)
    response = login_and_consent(http, flow, email)
    # 303 after the login or consent forms; 302 when the session and a consent stand.
    assert response.status_code in (302, 303), response.text
    tokens = exchange(http, flow, callback_params(response)["code"], client[1])
    assert tokens.status_code == 200, tokens.text
    return dict(tokens.json())


def _verified(http: TestClient, token: str, audience: str | None = None) -> dict[str, Any]:
    """The claims of a token we issued, its signature checked with our JWKS."""
    jwks = pyjwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())
    key = jwks[pyjwt.get_unverified_header(token)["kid"]].key
    options = {} if audience else {"verify_aud": False}
    claims: dict[str, Any] = pyjwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=ISSUER, options=options
    )
    return claims


def _userinfo(http: TestClient, access_token: str) -> dict[str, Any]:
    response = http.get("/oauth2/userinfo", headers={"authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _refresh(http: TestClient, client: tuple[str, str], refresh_token: str) -> dict[str, Any]:
    response = http.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=client,
    )
    assert response.status_code == 200, response.text
    body = dict(response.json())
    remember_secret(body["refresh_token"])
    remember_secret(body["access_token"])
    return body


# -- the code flow: access token, ID token, UserInfo ------------------------------------------


def test_a_client_with_role_prefixes_sees_only_the_roles_with_them(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    _set_roles(database, user, ROLES)
    client = _web_app(make_client, role_prefixes=["app1:"])
    body = _code_flow(http, client, user, "openid roles")
    assert body["scope"] == "openid roles"
    assert _verified(http, body["access_token"])["roles"] == ["app1:editor", "app1:viewer"]
    assert _verified(http, body["id_token"], client[0])["roles"] == ["app1:editor", "app1:viewer"]
    assert _userinfo(http, body["access_token"])["roles"] == ["app1:editor", "app1:viewer"]


def test_a_client_without_role_prefixes_sees_every_role(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    _set_roles(database, user, ROLES)
    client = _web_app(make_client)
    body = _code_flow(http, client, user, "openid email roles")
    assert _verified(http, body["access_token"])["roles"] == ROLES
    id_token = _verified(http, body["id_token"], client[0])
    assert id_token["roles"] == ROLES and id_token["email"] == user
    assert _userinfo(http, body["access_token"]) == {
        "sub": id_token["sub"],
        "email": user,
        "email_verified": True,
        "roles": ROLES,
    }


def test_the_roles_scope_without_roles_gives_an_empty_array(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    client = _web_app(make_client, role_prefixes=["app1:"])
    body = _code_flow(http, client, user, "openid roles")
    assert _verified(http, body["access_token"])["roles"] == []
    assert _verified(http, body["id_token"], client[0])["roles"] == []
    assert _userinfo(http, body["access_token"])["roles"] == []
    _set_roles(database, user, ["app2:owner"])  # roles, none of them with the prefix
    body = _code_flow(http, client, user, "openid roles")
    assert _verified(http, body["access_token"])["roles"] == []


def test_without_the_roles_scope_no_token_says_anything_about_roles(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    _set_roles(database, user, ROLES)
    client = _web_app(make_client)
    body = _code_flow(http, client, user, "openid profile")
    assert "roles" not in _verified(http, body["access_token"])
    assert "roles" not in _verified(http, body["id_token"], client[0])
    assert "roles" not in _userinfo(http, body["access_token"])


def test_userinfo_tells_the_roles_as_they_are_now(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    _set_roles(database, user, ["app1:editor"])
    client = _web_app(make_client, role_prefixes=["app1:"])
    access = _code_flow(http, client, user, "openid roles")["access_token"]
    _set_roles(database, user, ["app1:viewer", "app2:owner"])
    assert _userinfo(http, access)["roles"] == ["app1:viewer"]
    # The token itself keeps what it was issued with until it expires.
    assert _verified(http, access)["roles"] == ["app1:editor"]


def test_introspection_tells_a_resource_server_the_tokens_roles(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    _set_roles(database, user, ["app1:editor"])
    client = _web_app(make_client)
    access = _code_flow(http, client, user, "openid roles")["access_token"]
    answer = http.post("/oauth2/introspect", data={"token": access}, auth=client).json()
    assert answer["active"] is True and answer["roles"] == ["app1:editor"]


# -- every grant reads the roles afresh ---------------------------------------------------------


def test_a_refresh_picks_up_a_role_given_or_taken_since(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    _set_roles(database, user, ["app1:viewer"])
    client = _web_app(make_client, role_prefixes=["app1:"])
    body = _code_flow(http, client, user, "openid roles offline_access")
    assert _verified(http, body["access_token"])["roles"] == ["app1:viewer"]
    _set_roles(database, user, ["app1:editor", "app1:viewer"])
    body = _refresh(http, client, body["refresh_token"])
    assert _verified(http, body["access_token"])["roles"] == ["app1:editor", "app1:viewer"]
    _set_roles(database, user, [])
    body = _refresh(http, client, body["refresh_token"])
    assert _verified(http, body["access_token"])["roles"] == []


def test_the_device_grant_carries_the_roles(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    _set_roles(database, user, ROLES)
    client_id, _ = make_client(
        public=True, grant_types=[DEVICE_GRANT], scope="", role_prefixes=["app2:"]
    )
    started = _start(http, client_id, scope="openid roles")
    browser = Browser(http)
    assert browser.login(user).status_code == 303
    assert _decide(browser, started["user_code"], "allow").status_code == 200
    granted = _poll(http, client_id, started["device_code"])
    assert granted.status_code == 200, granted.text
    body = granted.json()
    remember_secret(body["access_token"])
    remember_secret(body["id_token"])
    assert _verified(http, body["access_token"])["roles"] == ["app2:owner"]
    assert _verified(http, body["id_token"], client_id)["roles"] == ["app2:owner"]


def test_the_password_grant_and_the_mfa_grant_carry_the_roles(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    user_id = _set_roles(database, user, ["admin", "app1:editor"])
    client_id, _ = make_client(
        public=True,
        first_party=True,
        grant_types=["password"],
        scope="openid roles",
        role_prefixes=["app1:"],
    )
    response = _password(http, client_id, user, scope="openid roles")
    assert response.status_code == 200, response.text
    body = response.json()
    remember_secret(body["access_token"])
    remember_secret(body["id_token"])
    assert _verified(http, body["access_token"])["roles"] == ["app1:editor"]
    assert _verified(http, body["id_token"], client_id)["roles"] == ["app1:editor"]
    # With a second factor, the mfa grant finishes the sign-in: the roles read then.
    totp, _ = _enrol(http, database, user_id)
    mfa_token = _mfa_token(http, client_id, user, scope="openid roles")
    _set_roles(database, user, ["app1:editor", "app1:owner"])
    finished = _mfa(http, client_id, mfa_token, otp=_next_code(totp))
    assert finished.status_code == 200, finished.text
    body = finished.json()
    assert _verified(http, body["access_token"])["roles"] == ["app1:editor", "app1:owner"]
    assert _verified(http, body["id_token"], client_id)["roles"] == ["app1:editor", "app1:owner"]


def test_a_clients_own_token_has_no_roles_even_with_the_scope(
    http: TestClient, make_client: MakeClient
) -> None:
    client = make_client(scope="roles read")
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=client)
    assert response.status_code == 200, response.text
    remember_secret(response.json()["access_token"])
    claims = _verified(http, response.json()["access_token"])
    assert claims["scope"] == "roles read" and "roles" not in claims


# -- discovery and consent ----------------------------------------------------------------------


def test_discovery_lists_the_roles_scope_and_claim(http: TestClient) -> None:
    document = http.get("/.well-known/openid-configuration").json()
    assert "roles" in document["scopes_supported"]
    assert "roles" in document["claims_supported"]
    assert "admin" not in document["scopes_supported"]
    oauth = http.get("/.well-known/oauth-authorization-server").json()
    assert "roles" in oauth["scopes_supported"]


def test_the_consent_page_says_what_the_roles_scope_shares(
    http: TestClient, user: str, make_client: MakeClient
) -> None:
    client = _web_app(make_client)
    assert Browser(http).login(user).status_code == 303
    page = Flow(http, client[0], scope="openid roles").start()
    assert page.status_code == 200 and 'name="rid"' in page.text
    assert "See the roles you have been given" in page.text
