"""Problem details name every refused field at once: a wrong field never hides another."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.config import Settings
from identity.db import Database
from identity.models import User
from tests.conftest import MailSink, remember_secret
from tests.web_helpers import PASSWORD

MakeClient = Callable[..., tuple[str, str | None]]
WEAK = "password"


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> TestClient:
    return app_for(settings_for(password_grant=True, smtp_url=mail_sink.url))


@pytest.fixture
def signed_in(
    http: TestClient, database: Database, make_client: MakeClient
) -> tuple[uuid.UUID, dict[str, str]]:
    """A verified user and the bearer header of a first-party app's token for them."""
    email = f"fields-{uuid.uuid4().hex[:8]}@example.com"
    with database.transaction() as session:
        user = operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=email,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
        user_id = user.id
    client_id, _ = make_client(
        public=True, first_party=True, grant_types=["password"], scope="openid account"
    )
    tokens = http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": email,
            "password": PASSWORD,
            "scope": "openid account",
        },
    ).json()
    remember_secret(tokens["access_token"])
    return user_id, {"Authorization": f"Bearer {tokens['access_token']}"}


def _invalid_input(response: Any) -> dict[str, str]:
    """The field errors of a 400 invalid-input problem; its other members are kept."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:identity:problem:invalid-input"
    assert body["title"] == "Invalid input" and body["status"] == 400 and body["detail"]
    return {error["field"]: error["message"] for error in body["errors"]}


def test_register_names_a_bad_email_and_a_weak_password_together(http: TestClient) -> None:
    response = http.post(
        "/api/v1/register", json={"email": "not-an-email", "password": WEAK, "name": "Ada"}
    )
    errors = _invalid_input(response)
    assert set(errors) == {"email", "password"}
    assert "too common" in errors["password"]


def test_password_change_names_a_wrong_current_and_a_weak_new_password(
    http: TestClient, signed_in: tuple[uuid.UUID, dict[str, str]]
) -> None:
    _, bearer = signed_in
    response = http.post(
        "/api/v1/me/password",
        json={"current_password": "not-my-password", "new_password": WEAK},
        headers=bearer,
    )
    assert set(_invalid_input(response)) == {"current_password", "new_password"}


def test_update_me_names_every_wrong_field_and_changes_nothing(
    http: TestClient, database: Database, signed_in: tuple[uuid.UUID, dict[str, str]]
) -> None:
    user_id, bearer = signed_in
    response = http.patch(
        "/api/v1/me",
        json={"name": "Ada\x07", "email": "no-at-sign", "password": "not-my-password"},
        headers=bearer,
    )
    assert set(_invalid_input(response)) == {"name", "email", "password"}
    with database.transaction() as session:
        user = session.get(User, user_id)
        assert user is not None and user.name == "Ada"


def test_update_me_names_a_bad_email_sent_without_its_password(
    http: TestClient, signed_in: tuple[uuid.UUID, dict[str, str]]
) -> None:
    _, bearer = signed_in
    response = http.patch("/api/v1/me", json={"email": "no-at-sign"}, headers=bearer)
    assert set(_invalid_input(response)) == {"email", "password"}


def test_a_dead_reset_token_is_an_invalid_link_that_also_names_a_weak_password(
    http: TestClient,
) -> None:
    response = http.post(
        "/api/v1/password/reset", json={"token": "no-such-token", "password": WEAK}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "urn:identity:problem:invalid-link"
    assert {error["field"] for error in body["errors"]} == {"token", "password"}


def test_the_openapi_problem_describes_its_field_errors(http: TestClient) -> None:
    problem = http.get("/openapi.json").json()["components"]["schemas"]["Problem"]
    errors = problem["properties"]["errors"]
    assert errors["items"]["required"] == ["field", "message"]
    assert "every" in errors["description"].lower()
