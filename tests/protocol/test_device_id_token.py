"""The device grant is an OpenID Connect sign-in like the code flow: with ``openid`` its token
response carries an ID token for the approving user and browser session."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.db import Database
from identity.models import BrowserSession, RefreshToken, User

from ..conftest import ISSUER, remember_secret
from ..web_helpers import PASSWORD
from .test_device import EMAIL, GRANT, _decide, _poll, _signed_in, _start

MakeClient = Callable[..., tuple[str, str | None]]


@pytest.fixture
def ada(http: TestClient, database: Database) -> User:
    accounts: Any = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        return operators.create_user(
            accounts, session, email=EMAIL, name="Ada", password=PASSWORD, verified=True
        )


@pytest.fixture
def cli(make_client: MakeClient) -> str:
    client_id, _ = make_client(
        public=True, grant_types=[GRANT, "refresh_token"], scope="openid profile offline_access"
    )
    return client_id


def _approved(
    http: TestClient, database: Database, client_id: str, scope: str, amr: list[str]
) -> tuple[dict[str, Any], BrowserSession]:
    """Start, approve from a browser session that signed in with ``amr``, then poll."""
    started = _start(http, client_id, scope=scope)
    browser = _signed_in(http)
    with database.transaction() as session:
        session.execute(update(BrowserSession).values(amr=amr))
        signed_in = session.scalars(select(BrowserSession)).one()
    assert _decide(browser, started["user_code"], "allow").status_code == 200
    granted = _poll(http, client_id, started["device_code"])
    assert granted.status_code == 200, granted.text
    body = dict(granted.json())
    for name in ("access_token", "refresh_token", "id_token"):
        remember_secret(body.get(name))
    return body, signed_in


def test_device_grant_with_openid_returns_an_id_token_for_the_approving_session(
    http: TestClient, database: Database, cli: str, ada: User
) -> None:
    body, browser_session = _approved(
        http, database, cli, "openid profile offline_access", ["pwd", "otp"]
    )
    assert "id_token" in body
    jwks = pyjwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())
    header = pyjwt.get_unverified_header(body["id_token"])
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    claims = pyjwt.decode(
        body["id_token"], jwks[header["kid"]].key, algorithms=["RS256"], audience=cli, issuer=ISSUER
    )
    assert claims["sub"] == str(ada.id) and claims["azp"] == cli
    assert browser_session.auth_time is not None
    assert claims["auth_time"] == int(browser_session.auth_time.timestamp())
    assert claims["amr"] == ["pwd", "otp"]
    assert claims["name"] == "Ada" and "nonce" not in claims
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    # The refresh family remembers the same login, as a code flow's does.
    with database.transaction() as session:
        row = session.scalars(select(RefreshToken)).one()
        assert row.amr == ["pwd", "otp"] and row.session_id == browser_session.id


def test_device_grant_without_openid_returns_no_id_token(
    http: TestClient, database: Database, cli: str, ada: User
) -> None:
    body, _ = _approved(http, database, cli, "profile", ["pwd"])
    assert "id_token" not in body and body["scope"] == "profile"
