"""The admin API's signing keys (``/api/v1/admin/keys...``): the list (kids, states and
times, never key material) and the rotation, the same as ``identity keys rotate`` and audited
the same way whoever asks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from tests.api.conftest import ADMIN, audit_rows, client_token, problem
from tests.conftest import run_main

KEYS = f"{ADMIN}/keys"


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """The folder the ``env`` fixture points the CLI at too: one key set, two surfaces."""
    return tmp_path / "keys"


@pytest.fixture
def admin_app(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    keys_dir: Path,
) -> TestClient:
    """The app on a key folder of this test's own (the shared one must not rotate)."""
    return app_for(settings_for(keys_dir=keys_dir, keys_reload_seconds=0.0))


def _states(http: TestClient, auth: dict[str, str]) -> dict[str, str]:
    response = http.get(KEYS, headers=auth)
    assert response.status_code == 200, response.text
    return {key["kid"]: key["state"] for key in response.json()["keys"]}


def test_the_list_shows_states_and_times_and_no_key_material(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    response = admin_app.get(KEYS, headers=admin_auth)
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    assert sorted(key["state"] for key in keys) == ["active", "next"]
    for key in keys:
        assert set(key) == {"kid", "state", "created_at", "retired_at", "publish_until"}
    for private in ('"d"', '"p"', '"q"', "PRIVATE KEY"):
        assert private not in response.text
    [row] = audit_rows(database, "admin.keys_listed")
    assert row.actor == operator[0]


def test_rotation_promotes_the_next_key_which_signs_at_once(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    before = _states(admin_app, admin_auth)
    [next_kid] = [kid for kid, state in before.items() if state == "next"]
    [old_kid] = [kid for kid, state in before.items() if state == "active"]
    rotated = admin_app.post(f"{KEYS}/rotate", headers=admin_auth)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["kid"] == next_kid and rotated.json()["state"] == "active"
    after = _states(admin_app, admin_auth)
    assert after[next_kid] == "active" and after[old_kid] == "retired"
    assert list(after.values()).count("next") == 1
    published = {k["kid"] for k in admin_app.get("/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, next_kid} <= published  # the retired key verifies its live tokens
    token = client_token(admin_app, operator[0])["Authorization"].removeprefix("Bearer ")
    assert pyjwt.get_unverified_header(token)["kid"] == next_kid
    [row] = audit_rows(database, "key.rotated")
    assert (row.actor, row.subject, row.detail) == (operator[0], next_kid, {"kid": next_kid})


def test_the_cli_and_the_api_rotate_and_audit_alike(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    operator: Any,
    env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_main(capsys, "keys", "rotate", "--json")
    assert code == 0, out
    by_cli = json.loads(out)["kid"]
    assert _states(admin_app, admin_auth)[by_cli] == "active"
    by_api = admin_app.post(f"{KEYS}/rotate", headers=admin_auth).json()["kid"]
    rows = audit_rows(database, "key.rotated")
    assert [(r.actor, r.subject) for r in rows] == [("admin", by_cli), (operator[0], by_api)]
    assert rows[0].user_agent == "identity-cli"


def test_a_folder_that_cannot_rotate_is_a_409_problem(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], keys_dir: Path
) -> None:
    manifest = keys_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["keys"] = [key for key in data["keys"] if key["state"] != "next"]
    manifest.write_text(json.dumps(data))
    body = problem(admin_app.post(f"{KEYS}/rotate", headers=admin_auth), 409)
    assert "next key" in body["detail"]
    assert audit_rows(database, "key.rotated") == []


def test_keys_are_for_operators_only(admin_app: TestClient, make_client: Any) -> None:
    problem(admin_app.get(KEYS), 401)
    other, _ = make_client(name="other", grant_types=["client_credentials"], scope="reports")
    headers = client_token(admin_app, other, scope="reports")
    problem(admin_app.get(KEYS, headers=headers), 403)
    problem(admin_app.post(f"{KEYS}/rotate", headers=headers), 403)
