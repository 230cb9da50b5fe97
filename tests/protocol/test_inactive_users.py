"""A disabled or deleted user's access tokens are refused everywhere (SECURITY.md, Accounts):
introspection answers ``{"active": false}``, UserInfo 401 ``invalid_token`` and the JSON API
401 problem+json, on every instance within IDENTITY_CACHE_CHECK_SECONDS. A client's own
tokens (client_credentials: no user) are not affected."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.config import Settings
from identity.db import Database
from identity.models import User

from ..conftest import remember_secret
from ..web_helpers import PASSWORD
from .test_hot_paths import _count_thread_hops

MakeClient = Callable[..., tuple[str, str]]
AppFor = Callable[[Settings], TestClient]
SettingsFor = Callable[..., Settings]
INTERVAL = 0.5
EMAIL = "ada@example.com"


@pytest.fixture
def apps(app_for: AppFor, settings_for: SettingsFor) -> list[TestClient]:
    """Two instances of one deployment."""
    return [
        app_for(settings_for(password_grant=True, cache_check_seconds=INTERVAL)) for _ in range(2)
    ]


@pytest.fixture
def ada(apps: list[TestClient], database: Database) -> User:
    accounts: Any = apps[0].app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        return operators.create_user(
            accounts, session, email=EMAIL, name="Ada", password=PASSWORD, verified=True
        )


@pytest.fixture
def app_client(make_client: MakeClient) -> tuple[str, str]:
    # No refresh grant: its access tokens belong to no refresh family, so nothing puts
    # them on the denylist when the user goes; only the user check can refuse them.
    return make_client(
        name="app", grant_types=["password"], first_party=True, scope="openid account"
    )


def _user_token(http: TestClient, client: tuple[str, str]) -> str:
    form = {"grant_type": "password", "username": EMAIL, "password": PASSWORD}
    response = http.post("/oauth2/token", data={**form, "scope": "openid account"}, auth=client)
    assert response.status_code == 200, response.text
    token = str(response.json()["access_token"])
    remember_secret(token)
    return token


def _refusals(http: TestClient, client: tuple[str, str], token: str) -> dict[str, bool]:
    """Which surfaces refuse ``token``, each in the shape it must refuse it with."""
    bearer = {"Authorization": f"Bearer {token}"}
    introspected = http.post("/oauth2/introspect", data={"token": token}, auth=client).json()
    userinfo = http.get("/oauth2/userinfo", headers=bearer)
    me = http.get("/api/v1/me", headers=bearer)
    return {
        "introspection": introspected == {"active": False},
        "userinfo": userinfo.status_code == 401
        and 'error="invalid_token"' in userinfo.headers["www-authenticate"],
        "api": me.status_code == 401
        and me.headers["content-type"].startswith("application/problem+json"),
    }


def _end(database: Database, apps: list[TestClient], user: User, how: str) -> None:
    accounts: Any = apps[0].app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        row = session.get_one(User, user.id)
        if how == "disable":
            operators.set_active(accounts, session, row, False)
        else:
            operators.delete_user(accounts, session, row)


@pytest.mark.parametrize("how", ["disable", "delete"])
def test_a_gone_users_token_is_refused_everywhere_on_every_instance(
    apps: list[TestClient],
    database: Database,
    ada: User,
    app_client: tuple[str, str],
    how: str,
) -> None:
    token = _user_token(apps[0], app_client)
    for http in apps:  # every cache holds the user now
        assert _refusals(http, app_client, token) == dict.fromkeys(_SURFACES, False)
    _end(database, apps, ada, how)
    ended = time.monotonic()
    for http in apps:
        while (refused := _refusals(http, app_client, token)) != dict.fromkeys(_SURFACES, True):
            assert time.monotonic() - ended < INTERVAL + 2.0, refused
            time.sleep(0.05)


_SURFACES = ("introspection", "userinfo", "api")


def test_a_user_disabled_without_ending_their_tokens_is_refused_too(
    apps: list[TestClient], database: Database, ada: User, app_client: tuple[str, str]
) -> None:
    # The check is the user's state itself, not the credential-event rule's side effects.
    token = _user_token(apps[0], app_client)
    with database.transaction() as session:
        session.get_one(User, ada.id).is_active = False
    ended = time.monotonic()
    while (refused := _refusals(apps[1], app_client, token)) != dict.fromkeys(_SURFACES, True):
        assert time.monotonic() - ended < INTERVAL + 2.0, refused
        time.sleep(0.05)


def test_client_credentials_tokens_do_not_depend_on_any_user(
    apps: list[TestClient], database: Database, ada: User, make_client: MakeClient
) -> None:
    service = make_client(scope="read")
    response = apps[0].post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=service
    )
    token = response.json()["access_token"]
    _end(database, apps, ada, "disable")
    for http in apps:
        body = http.post("/oauth2/introspect", data={"token": token}, auth=service).json()
        assert body["active"] is True and body["sub"] == service[0]


def test_introspecting_a_cached_users_token_stays_in_the_event_loop(
    app_for: AppFor,
    settings_for: SettingsFor,
    database: Database,
    app_client: tuple[str, str],
    redis_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http = app_for(settings_for(password_grant=True, cache_check_seconds=3600))
    with database.transaction() as session:
        operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=EMAIL,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
    token = _user_token(http, app_client)
    first = http.post("/oauth2/introspect", data={"token": token}, auth=app_client)
    assert first.json()["active"] is True  # the user is cached by now
    hops = _count_thread_hops(http, monkeypatch)
    again = http.post("/oauth2/introspect", data={"token": token}, auth=app_client)
    assert again.json() == first.json()
    # The denylist answers in the loop from Redis, or embedded from the SQLite file;
    # PostgreSQL without Redis is asked in a thread.
    assert len(hops) == (0 if redis_url or database.is_sqlite else 1)
