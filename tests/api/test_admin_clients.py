"""The admin API's clients (``/api/v1/admin/clients...``): list, read, create (the secret
shown once), update by registration's rules, delete, and secret rotation with a grace
period; every call audited with its operator."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from tests.api.conftest import ADMIN, audit_rows, fields, problem
from tests.conftest import remember_secret

CLIENTS = f"{ADMIN}/clients"
CALLBACK = "https://app.example.com/callback"
SHAPE = {
    "client_id",
    "name",
    "public",
    "first_party",
    "redirect_uris",
    "grant_types",
    "scope",
    "audience",
    "post_logout_redirect_uris",
    "refresh_without_offline_access",
    "require_mfa",
    "role_prefixes",
    "created_at",
    "previous_secret_expires_at",
}


@pytest.fixture
def admin_app(
    app_for: Callable[[Settings], TestClient], settings_for: Callable[..., Settings]
) -> TestClient:
    """The app, asking at every request whether its cached clients changed (a change then
    shows at once; the interval itself is the protocol tests' concern)."""
    return app_for(settings_for(cache_check_seconds=0))


def _create(http: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = http.post(CLIENTS, json={"name": "Reports", **body}, headers=auth)
    assert response.status_code == 201, response.text
    created = dict(response.json())
    remember_secret(created["client_secret"])
    return created


def _token_status(http: TestClient, client_id: str, secret: str) -> int:
    response = http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    if response.status_code == 200:
        remember_secret(response.json()["access_token"])
    return response.status_code


def test_create_shows_the_secret_once_and_the_client_works(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth, scope="reports:read", role_prefixes=["app1:"])
    assert set(created) == SHAPE | {"client_secret"}
    assert created["grant_types"] == ["client_credentials"]  # the default without redirects
    assert created["role_prefixes"] == ["app1:"]
    assert _token_status(admin_app, created["client_id"], created["client_secret"]) == 200
    shown = admin_app.get(f"{CLIENTS}/{created['client_id']}", headers=admin_auth)
    assert shown.status_code == 200 and "client_secret" not in shown.json()
    assert created["client_secret"] not in shown.text
    listed = admin_app.get(CLIENTS, headers=admin_auth).json()["clients"]
    assert {c["client_id"] for c in listed} == {operator[0], created["client_id"]}
    assert created["client_secret"] not in str(listed)
    [row] = [r for r in audit_rows(database, "client.created") if r.client_id != operator[0]]
    assert row.actor == operator[0] and row.client_id == created["client_id"]
    [viewed] = audit_rows(database, "admin.client_viewed")
    assert (viewed.actor, viewed.subject) == (operator[0], created["client_id"])
    assert audit_rows(database, "admin.clients_listed")[0].actor == operator[0]


def test_a_public_client_has_no_secret(admin_app: TestClient, admin_auth: dict[str, str]) -> None:
    response = admin_app.post(
        CLIENTS,
        json={
            "name": "CLI",
            "public": True,
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
        },
        headers=admin_auth,
    )
    assert response.status_code == 201, response.text
    assert response.json()["client_secret"] is None and response.json()["public"] is True
    rotated = admin_app.post(
        f"{CLIENTS}/{response.json()['client_id']}/rotate-secret", headers=admin_auth
    )
    problem(rotated, 409)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris"),
        ({"grant_types": ["authorization_code"]}, "redirect_uris"),
        ({"grant_types": ["implicit"]}, "grant_types"),
        ({"grant_types": ["password"]}, "grant_types"),
        ({"public": True, "grant_types": ["client_credentials"]}, "grant_types"),
        ({"scope": "account"}, "scope"),
        ({"scope": "a\\b"}, "scope"),
        ({"audience": ["no-scheme"]}, "audience"),
        ({"role_prefixes": ["-x"]}, "role_prefixes"),
        ({"post_logout_redirect_uris": ["http://evil.example.com/"]}, "post_logout_redirect_uris"),
        ({"name": " "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"redirect_uris": "https://one.example.com"}, "redirect_uris"),
        ({"secret_digest": "x"}, "secret_digest"),
    ],
)
def test_create_refuses_what_registration_refuses_naming_the_field(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    body: dict[str, Any],
    field: str,
) -> None:
    response = admin_app.post(CLIENTS, json={"name": "Bad", **body}, headers=admin_auth)
    assert fields(problem(response, 400)) == {field}
    assert len(audit_rows(database, "client.created")) == 1  # the operator's own


def test_update_changes_the_settings_given_by_the_same_rules(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{CLIENTS}/{created['client_id']}"
    changed = admin_app.patch(
        url,
        json={
            "name": "Dashboard",
            "redirect_uris": [CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "require_mfa": True,
            "role_prefixes": ["app1:"],
        },
        headers=admin_auth,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["redirect_uris"], body["require_mfa"]) == (
        "Dashboard",
        [CALLBACK],
        True,
    )
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    refused = admin_app.patch(url, json={"redirect_uris": []}, headers=admin_auth)
    assert fields(problem(refused, 400)) == {"redirect_uris"}
    assert admin_app.get(url, headers=admin_auth).json()["redirect_uris"] == [CALLBACK]
    [row] = audit_rows(database, "client.updated")
    assert row.actor == operator[0] and row.client_id == created["client_id"]
    assert row.detail["name"] == "Dashboard"
    # Nothing given, nothing changed: no second row.
    assert admin_app.patch(url, json={}, headers=admin_auth).status_code == 200
    assert len(audit_rows(database, "client.updated")) == 1


def test_an_update_reaches_every_instance_through_the_cache_invalidation(
    admin_app: TestClient,
    admin_auth: dict[str, str],
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
) -> None:
    other = app_for(settings_for(cache_check_seconds=0))
    created = _create(admin_app, admin_auth, scope="reports:read")
    assert _token_status(other, created["client_id"], created["client_secret"]) == 200  # cached
    admin_app.patch(
        f"{CLIENTS}/{created['client_id']}",
        json={"grant_types": ["client_credentials"], "scope": "reports:write"},
        headers=admin_auth,
    )
    response = other.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "reports:write"},
        auth=(created["client_id"], created["client_secret"]),
    )
    assert response.status_code == 200, response.text
    remember_secret(response.json()["access_token"])


def test_delete_removes_the_client(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{CLIENTS}/{created['client_id']}"
    deleted = admin_app.delete(url, headers=admin_auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert _token_status(admin_app, created["client_id"], created["client_secret"]) == 401
    for method in ("GET", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
        problem(admin_app.request(method, url, headers=admin_auth, **kwargs), 404)
    problem(admin_app.post(f"{url}/rotate-secret", headers=admin_auth), 404)
    problem(admin_app.get(f"{CLIENTS}/{'x' * 65}", headers=admin_auth), 404)
    problem(admin_app.get(f"{CLIENTS}/a%00b", headers=admin_auth), 404)
    [row] = audit_rows(database, "client.deleted")
    assert row.actor == operator[0] and row.client_id == created["client_id"]


def test_a_rotated_secret_keeps_the_old_one_for_the_grace_period(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    created = _create(admin_app, admin_auth)
    client_id, old = created["client_id"], created["client_secret"]
    url = f"{CLIENTS}/{client_id}/rotate-secret"
    rotated = admin_app.post(url, json={"grace_seconds": 3600}, headers=admin_auth)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    remember_secret(body["client_secret"])
    assert set(body) == {"client_id", "client_secret", "previous_secret_expires_at"}
    until = datetime.fromisoformat(body["previous_secret_expires_at"]).replace(tzinfo=UTC)
    expected = datetime.now(UTC) + timedelta(hours=1)
    assert abs((until - expected).total_seconds()) < 60
    assert _token_status(admin_app, client_id, body["client_secret"]) == 200
    assert _token_status(admin_app, client_id, old) == 200  # within the grace period
    shown = admin_app.get(f"{CLIENTS}/{client_id}", headers=admin_auth).json()
    assert shown["previous_secret_expires_at"] is not None
    assert body["client_secret"] not in str(shown)
    # Without grace the replaced secret (the first rotation's) stops at once.
    again = admin_app.post(url, json={"grace_seconds": 0}, headers=admin_auth).json()
    remember_secret(again["client_secret"])
    assert again["previous_secret_expires_at"] is None
    assert _token_status(admin_app, client_id, body["client_secret"]) == 401
    assert _token_status(admin_app, client_id, old) == 401
    assert _token_status(admin_app, client_id, again["client_secret"]) == 200
    rows = audit_rows(database, "client.secret_rotated")
    assert [(r.actor, r.client_id) for r in rows] == [(operator[0], client_id)] * 2
    assert [r.detail["grace_seconds"] for r in rows] == [3600, 0]


def test_the_default_grace_is_a_day(admin_app: TestClient, admin_auth: dict[str, str]) -> None:
    created = _create(admin_app, admin_auth)
    response = admin_app.post(f"{CLIENTS}/{created['client_id']}/rotate-secret", headers=admin_auth)
    assert response.status_code == 200, response.text
    remember_secret(response.json()["client_secret"])
    until = datetime.fromisoformat(response.json()["previous_secret_expires_at"])
    left = until.replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < left <= timedelta(days=1)


@pytest.mark.parametrize("grace", [-1, 2592001, "60", 1.5, True, None])
def test_a_grace_out_of_bounds_is_a_400(
    admin_app: TestClient, admin_auth: dict[str, str], grace: Any
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{CLIENTS}/{created['client_id']}/rotate-secret"
    body = problem(admin_app.post(url, json={"grace_seconds": grace}, headers=admin_auth), 400)
    assert fields(body) == {"grace_seconds"}
    assert _token_status(admin_app, created["client_id"], created["client_secret"]) == 200


def test_thirty_days_is_the_longest_grace(
    admin_app: TestClient, admin_auth: dict[str, str]
) -> None:
    created = _create(admin_app, admin_auth)
    url = f"{CLIENTS}/{created['client_id']}/rotate-secret"
    response = admin_app.post(url, json={"grace_seconds": 2592000}, headers=admin_auth)
    assert response.status_code == 200, response.text
    remember_secret(response.json()["client_secret"])
