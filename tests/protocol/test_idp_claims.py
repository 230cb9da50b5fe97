"""Federated sign-ins (issue #16): the upstream provider's name travels from the browser
session through codes, refresh tokens and device authorizations into the ID token's ``idp``,
and such a session counts as two factors only when its ``amr`` says ``mfa``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt as pyjwt
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.accounts import sessions
from identity.accounts.factors import LOA_MULTI_FACTOR, LOA_ONE_FACTOR
from identity.audit import RequestContext
from identity.db import Database
from identity.models import (
    AuthorizationCode,
    DeviceAuthorization,
    RefreshToken,
    User,
    secret_digest,
    utcnow,
)

from ..conftest import ISSUER, remember_secret
from ..web_helpers import Browser
from .test_authorize import CALLBACK, Flow, callback_params, exchange, login_and_consent
from .test_device import GRANT, _decide, _poll, _start

MakeClient = Callable[..., tuple[str, str | None]]
PROVIDER = "corp"
_CONTEXT = RequestContext(ip="203.0.113.7", user_agent="pytest")


@pytest.fixture
def app_client(make_client: MakeClient) -> tuple[str, str]:
    client_id, secret = make_client(
        name="Billing Dashboard",
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "refresh_token"],
        scope="invoices:read",
    )
    assert secret is not None
    return client_id, secret


def _federated(http: TestClient, database: Database, email: str, amr: list[str]) -> None:
    """Sign ``http`` in as the federated sign-in pages will: a session started with ``amr``
    and the provider's name, its cookie in the test client's jar."""
    policy: sessions.SessionPolicy = http.app.state.session_policy  # type: ignore[attr-defined]
    with database.transaction() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        cookie, _ = sessions.start_authenticated(
            session, None, user.id, utcnow(), policy, _CONTEXT, amr, idp=PROVIDER
        )
    remember_secret(cookie)
    http.cookies.set(policy.cookie_name, cookie)


def _id_token(http: TestClient, token: str, audience: str) -> dict[str, Any]:
    remember_secret(token)
    jwks = pyjwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())
    key = jwks[pyjwt.get_unverified_header(token)["kid"]].key
    claims: dict[str, Any] = pyjwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=ISSUER
    )
    return claims


def _signed_in_code_flow(
    http: TestClient, client: tuple[str, str], email: str, scope: str = "openid email"
) -> dict[str, Any]:
    """The token response of a code flow from the browser's current session."""
    flow = Flow(http, client[0], scope=scope)
    response = login_and_consent(http, flow, email)
    assert response.status_code == 303, response.text
    tokens = exchange(http, flow, callback_params(response)["code"], client[1])
    assert tokens.status_code == 200, tokens.text
    return dict(tokens.json())


def test_a_federated_sign_in_gives_an_id_token_naming_its_provider(
    http: TestClient, database: Database, user: str, app_client: tuple[str, str]
) -> None:
    _federated(http, database, user, ["fed", "pwd"])
    body = _signed_in_code_flow(http, app_client, user)
    claims = _id_token(http, body["id_token"], app_client[0])
    assert claims["idp"] == PROVIDER and claims["amr"] == ["fed", "pwd"]
    assert claims["acr"] == LOA_ONE_FACTOR and claims["email"] == user
    with database.transaction() as session:
        assert session.scalars(select(AuthorizationCode.idp)).one() == PROVIDER


def test_refreshing_keeps_the_provider_in_every_token_of_the_family(
    http: TestClient, database: Database, user: str, app_client: tuple[str, str]
) -> None:
    _federated(http, database, user, ["fed", "pwd"])
    body = _signed_in_code_flow(http, app_client, user, "openid offline_access")
    raw = body["refresh_token"]
    for _ in range(2):  # a rotation of a rotation still remembers the sign-in
        refreshed = http.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": raw},
            auth=app_client,
        )
        assert refreshed.status_code == 200, refreshed.text
        raw = refreshed.json()["refresh_token"]
        remember_secret(raw)
        remember_secret(refreshed.json()["access_token"])
    with database.transaction() as session:
        rows = session.scalars(select(RefreshToken).order_by(RefreshToken.created_at)).all()
        newest = session.get(RefreshToken, secret_digest(raw))
        assert newest is not None and newest.idp == PROVIDER and newest.amr == ["fed", "pwd"]
        assert len(rows) == 3 and {row.idp for row in rows} == {PROVIDER}


def test_a_password_sign_in_gives_an_id_token_without_idp(
    http: TestClient, database: Database, user: str, app_client: tuple[str, str]
) -> None:
    body = _signed_in_code_flow(http, app_client, user, "openid offline_access")
    claims = _id_token(http, body["id_token"], app_client[0])
    assert "idp" not in claims and claims["amr"] == ["pwd"]
    with database.transaction() as session:
        assert session.scalars(select(RefreshToken.idp)).one() is None


def test_discovery_lists_the_idp_claim(http: TestClient) -> None:
    document = http.get("/.well-known/openid-configuration").json()
    assert "idp" in document["claims_supported"]


def test_the_device_flow_carries_the_provider_of_the_approving_session(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    client_id, _ = make_client(
        public=True, grant_types=[GRANT, "refresh_token"], scope="openid profile offline_access"
    )
    started = _start(http, client_id, scope="openid profile offline_access")
    _federated(http, database, user, ["fed", "pwd"])
    assert _decide(Browser(http), started["user_code"], "allow").status_code == 200
    granted = _poll(http, client_id, started["device_code"])
    assert granted.status_code == 200, granted.text
    body = granted.json()
    remember_secret(body["access_token"])
    remember_secret(body["refresh_token"])
    claims = _id_token(http, body["id_token"], client_id)
    assert claims["idp"] == PROVIDER and claims["amr"] == ["fed", "pwd"]
    with database.transaction() as session:
        assert session.scalars(select(DeviceAuthorization.idp)).one() == PROVIDER
        assert session.scalars(select(RefreshToken.idp)).one() == PROVIDER


# -- two factors: only an upstream that showed its own second factor counts ----------------


def test_a_federated_session_without_mfa_is_stepped_up_for_an_app_that_requires_two(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    client_id, _ = make_client(name="Payroll", redirect_uris=[CALLBACK], require_mfa=True)
    _federated(http, database, user, ["fed"])
    response = Flow(http, client_id).start()
    location = urlsplit(response.headers["location"])
    # The account has no factor yet, so the step-up is setting one up, then the request.
    assert response.status_code == 303 and location.path == "/account/two-factor/setup"
    assert parse_qs(location.query)["next"][0].startswith("/oauth2/authorize/resume?rid=")


def test_a_federated_session_asked_for_level_two_without_mfa_is_stepped_up(
    http: TestClient, database: Database, user: str, app_client: tuple[str, str]
) -> None:
    _federated(http, database, user, ["fed", "pwd"])
    response = Flow(http, app_client[0], acr_values=LOA_MULTI_FACTOR).start()
    assert response.status_code == 303
    assert urlsplit(response.headers["location"]).path == "/account/two-factor/setup"


def test_a_federated_session_with_the_upstreams_mfa_counts_as_two_factors(
    http: TestClient, database: Database, user: str, make_client: MakeClient
) -> None:
    client = make_client(name="Payroll", redirect_uris=[CALLBACK], require_mfa=True)
    assert client[1] is not None
    _federated(http, database, user, ["fed", "mfa"])
    body = _signed_in_code_flow(http, (client[0], client[1]), user)
    claims = _id_token(http, body["id_token"], client[0])
    assert claims["acr"] == LOA_MULTI_FACTOR and claims["amr"] == ["fed", "mfa"]
    assert claims["idp"] == PROVIDER


@pytest.mark.parametrize(("amr", "stepped_up"), [(["fed"], True), (["fed", "mfa"], False)])
def test_approving_a_device_of_an_app_that_requires_two_needs_the_upstreams_mfa(
    http: TestClient,
    database: Database,
    user: str,
    make_client: MakeClient,
    amr: list[str],
    stepped_up: bool,
) -> None:
    client_id, _ = make_client(public=True, grant_types=[GRANT], scope="openid", require_mfa=True)
    code = _start(http, client_id, scope="openid")["user_code"]
    _federated(http, database, user, amr)
    browser = Browser(http)
    if stepped_up:
        typed = browser.submit(f"/device?user_code={code}", "/device", user_code=code)
        assert typed.status_code == 303
        assert urlsplit(typed.headers["location"]).path == "/account/two-factor/setup"
        expected = "pending"
    else:
        assert _decide(browser, code, "allow").status_code == 200
        expected = "approved"
    with database.transaction() as session:
        assert session.scalars(select(DeviceAuthorization.status)).one() == expected
