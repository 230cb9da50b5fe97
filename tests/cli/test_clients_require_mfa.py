"""identity clients create|update --require-mfa: the flag round trip, and a running server
that sees the change."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity import repositories
from identity.accounts import operators
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent
from tests.conftest import remember_secret
from tests.conftest import run_main as _run
from tests.web_helpers import PASSWORD


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return dict(json.loads(out))


def test_require_mfa_round_trip(
    env: None, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    created = _json(capsys, "clients", "create", "--name", "svc", "--require-mfa")
    client_id = created["client_id"]
    assert created["require_mfa"] is True
    assert _json(capsys, "clients", "show", client_id)["require_mfa"] is True
    assert _json(capsys, "clients", "update", client_id, "--no-require-mfa")["require_mfa"] is False
    assert _json(capsys, "clients", "show", client_id)["require_mfa"] is False
    assert _json(capsys, "clients", "update", client_id, "--require-mfa")["require_mfa"] is True
    with database.transaction() as session:
        updates = session.scalars(
            select(AuditEvent).where(AuditEvent.type == "client.updated").order_by(AuditEvent.id)
        ).all()
    assert [(e.client_id, e.detail) for e in updates] == [
        (client_id, {"require_mfa": False}),
        (client_id, {"require_mfa": True}),
    ]


def test_a_client_is_created_without_require_mfa_by_default(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _json(capsys, "clients", "create", "--name", "svc")["require_mfa"] is False


def test_an_update_moves_the_clients_cache_generation_only_when_it_changes_something(
    env: None, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    client_id = _json(capsys, "clients", "create", "--name", "svc")["client_id"]

    def generation() -> int:
        with database.transaction() as session:
            return repositories.cache_generation(session, "clients")

    before = generation()
    _json(capsys, "clients", "update", client_id, "--require-mfa")
    assert generation() == before + 1
    _json(capsys, "clients", "update", client_id, "--require-mfa")  # already so
    assert generation() == before + 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["update", "no-such-client", "--require-mfa"], "no client"), (["update", "x"], "nothing")],
    ids=["unknown-client", "no-change-given"],
)
def test_update_errors_are_one_line(
    env: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "clients", *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_both_flags_at_once_are_a_usage_error(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "clients", "update", "x", "--require-mfa", "--no-require-mfa")
    assert code == 2 and "not allowed with" in err


def test_a_running_server_sees_the_flag_change(
    env: None,
    capsys: pytest.CaptureFixture[str],
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
) -> None:
    http = app_for(settings_for(password_grant=True, cache_check_seconds=0))
    with database.transaction() as session:
        operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email="cli-mfa@example.com",
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
    client_id = _json(
        capsys,
        *("clients", "create", "--name", "app", "--public", "--first-party"),
        *("--grant-type", "password", "--require-mfa"),
    )["client_id"]
    form = {
        "grant_type": "password",
        "client_id": client_id,
        "username": "cli-mfa@example.com",
        "password": PASSWORD,
    }
    refused = http.post("/oauth2/token", data=form)
    assert refused.status_code == 400
    assert refused.json()["error_description"].startswith("mfa_required")
    _json(capsys, "clients", "update", client_id, "--no-require-mfa")
    allowed = http.post("/oauth2/token", data=form)
    assert allowed.status_code == 200, allowed.text
    remember_secret(allowed.json()["access_token"])
