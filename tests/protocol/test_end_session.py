"""RP-initiated logout at the end_session_endpoint."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database

from ..web_helpers import Browser, csrf_of
from .test_authorize import CALLBACK, Flow, callback_params, exchange, login_and_consent

AFTER = "https://app.example.com/signed-out"
MakeClient = Callable[..., tuple[str, str | None]]


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return app_for(settings)


@pytest.fixture
def rp(make_client: MakeClient) -> tuple[str, str]:
    client_id, secret = make_client(
        redirect_uris=[CALLBACK], post_logout_redirect_uris=[AFTER], first_party=True
    )
    assert secret is not None
    return client_id, secret


def _id_token(http: TestClient, rp: tuple[str, str], email: str) -> str:
    flow = Flow(http, rp[0])
    params = callback_params(login_and_consent(http, flow, email))
    return str(exchange(http, flow, params["code"], rp[1]).json()["id_token"])


def _signed_in(http: TestClient) -> bool:
    return http.get("/account", follow_redirects=False).status_code == 200


def test_valid_hint_logs_out_at_once_and_returns_with_state(
    http: TestClient, user: str, rp: tuple[str, str]
) -> None:
    hint = _id_token(http, rp, user)
    query = urlencode({"id_token_hint": hint, "post_logout_redirect_uri": AFTER, "state": "s1"})
    response = http.get(f"/oauth2/logout?{query}", follow_redirects=False)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == AFTER
    assert parse_qs(location.query) == {"state": ["s1"]}
    assert not _signed_in(http)


def test_unregistered_post_logout_uri_is_refused_without_redirect(
    http: TestClient, user: str, rp: tuple[str, str]
) -> None:
    hint = _id_token(http, rp, user)
    query = urlencode(
        {"id_token_hint": hint, "post_logout_redirect_uri": "https://evil.example.com/"}
    )
    response = http.get(f"/oauth2/logout?{query}", follow_redirects=False)
    assert response.status_code == 400 and "location" not in response.headers
    assert _signed_in(http)


def test_missing_hint_asks_first_and_the_confirmation_logs_out(
    http: TestClient, user: str, rp: tuple[str, str]
) -> None:
    Browser(http).login(user)
    query = urlencode({"client_id": rp[0], "post_logout_redirect_uri": AFTER, "state": "s2"})
    page = http.get(f"/oauth2/logout?{query}")
    assert page.status_code == 200 and "Sign out?" in page.text and _signed_in(http)
    response = http.post(
        "/oauth2/logout",
        data={
            "csrf_token": csrf_of(page.text),
            "confirm": "1",
            "client_id": rp[0],
            "post_logout_redirect_uri": AFTER,
            "state": "s2",
            "id_token_hint": "",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == f"{AFTER}?state=s2"
    assert not _signed_in(http)


def test_confirmation_without_csrf_changes_nothing(
    http: TestClient, user: str, rp: tuple[str, str]
) -> None:
    Browser(http).login(user)
    response = http.post("/oauth2/logout", data={"confirm": "1", "client_id": rp[0]})
    assert response.status_code == 403 and _signed_in(http)


def test_hint_of_another_user_asks_first(
    http: TestClient,
    user: str,
    rp: tuple[str, str],
    database: Database,
    app_for: Callable[[Settings], TestClient],
    settings: Settings,
) -> None:
    from identity.accounts import operators

    with database.transaction() as session:
        operators.create_user(
            http.app.state.accounts,
            session,
            email="bob@example.com",  # type: ignore[attr-defined]
            name="Bob",
            password="tidal-orbit-cactus-42",
            verified=True,
        )
    other = app_for(settings)
    hint = _id_token(other, rp, "bob@example.com")
    Browser(http).login(user)
    page = http.get(f"/oauth2/logout?{urlencode({'id_token_hint': hint})}")
    assert "Sign out?" in page.text and _signed_in(http)


def _tokens(http: TestClient, rp: tuple[str, str], email: str) -> dict[str, str]:
    flow = Flow(http, rp[0])
    params = callback_params(login_and_consent(http, flow, email))
    return dict(exchange(http, flow, params["code"], rp[1]).json())


def test_an_access_token_is_no_logout_hint(
    http: TestClient, user: str, rp: tuple[str, str]
) -> None:
    access = _tokens(http, rp, user)["access_token"]
    page = http.get(f"/oauth2/logout?{urlencode({'id_token_hint': access, 'client_id': rp[0]})}")
    assert "Sign out?" in page.text and _signed_in(http)


def test_an_id_token_of_another_browsers_session_asks_first(
    http: TestClient,
    user: str,
    rp: tuple[str, str],
    app_for: Callable[[Settings], TestClient],
    settings: Settings,
) -> None:
    other_browser = app_for(settings)
    hint = _id_token(other_browser, rp, user)  # the same person, signed in elsewhere
    _id_token(http, rp, user)
    page = http.get(f"/oauth2/logout?{urlencode({'id_token_hint': hint})}")
    assert "Sign out?" in page.text and _signed_in(http)


def test_an_id_token_names_its_browser_session_and_that_session_logs_out_at_once(
    http: TestClient, user: str, rp: tuple[str, str]
) -> None:
    hint = _id_token(http, rp, user)
    claims = json.loads(base64.urlsafe_b64decode(hint.split(".")[1] + "=="))
    assert isinstance(claims["sid"], str) and len(claims["sid"]) >= 16
    response = http.get(f"/oauth2/logout?{urlencode({'id_token_hint': hint})}")
    assert "signed out" in response.text and not _signed_in(http)
