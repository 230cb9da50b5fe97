"""identity users: create, list, show, disable, enable, delete."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.accounts.profile import describe_user_agent
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, BrowserSession, User
from tests.conftest import run_main as _run
from tests.web_helpers import PASSWORD, Browser


def test_users_create_list_show(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "users",
        "create",
        "--email",
        " Lin@Example.com",
        "--name",
        "Lin",
        "--password",
        PASSWORD,
        "--verified",
        "--json",
    )
    created = json.loads(out)
    assert code == 0 and created["email"] == "lin@example.com" and created["email_verified"]
    assert PASSWORD not in out
    _, out, _ = _run(capsys, "users", "list", "--json")
    assert [u["email"] for u in json.loads(out)] == ["lin@example.com"]
    _, out, _ = _run(capsys, "users", "show", created["id"], "--json")
    assert json.loads(out)["name"] == "Lin"


def test_users_create_refuses_a_weak_password_and_a_taken_address(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, "users", "create", "--email", "a@example.com", "--password", "password1"
    )
    assert code == 2 and err.count("\n") == 1
    _run(capsys, "users", "create", "--email", "a@example.com", "--password", PASSWORD)
    code, _, err = _run(
        capsys, "users", "create", "--email", "A@example.com", "--password", PASSWORD
    )
    assert code == 2 and "already" in err


def test_disabling_a_user_ends_their_sessions_and_blocks_login(
    env: None,
    capsys: pytest.CaptureFixture[str],
    app_for: Callable[[Settings], TestClient],
    settings: Settings,
    database: Database,
) -> None:
    _run(
        capsys,
        "users",
        "create",
        "--email",
        "off@example.com",
        "--password",
        PASSWORD,
        "--verified",
    )
    visitor = Browser(app_for(settings))
    assert visitor.login("off@example.com").status_code == 303
    assert _run(capsys, "users", "disable", "off@example.com")[0] == 0
    assert visitor.http.get("/account", follow_redirects=False).status_code == 303
    assert visitor.login("off@example.com").status_code == 400
    with database.transaction() as session:
        assert (
            session.scalars(select(BrowserSession).where(BrowserSession.user_id.is_not(None))).all()
            == []
        )
        assert "user.disabled" in session.scalars(select(AuditEvent.type)).all()
    _run(capsys, "users", "enable", "off@example.com")
    assert visitor.login("off@example.com").status_code == 303


def test_disabling_a_user_ends_their_refresh_token_families_for_good(
    env: None,
    capsys: pytest.CaptureFixture[str],
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    http = app_for(settings_for(password_grant=True))
    client_id, secret = make_client(
        grant_types=["password", "refresh_token"], first_party=True, scope="offline_access"
    )
    assert secret is not None
    _run(
        capsys, "users", "create", "--email", "rt@example.com", "--password", PASSWORD, "--verified"
    )
    tokens = http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": "rt@example.com",
            "password": PASSWORD,
            "scope": "offline_access",
        },
        auth=(client_id, secret),
    ).json()
    assert "refresh_token" in tokens
    assert _run(capsys, "users", "disable", "rt@example.com")[0] == 0
    assert _run(capsys, "users", "enable", "rt@example.com")[0] == 0
    refreshed = http.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(client_id, secret),
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    introspected = http.post(
        "/oauth2/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret)
    )
    assert introspected.json() == {"active": False}


def test_deleting_a_user_removes_the_account_and_its_sessions(
    env: None,
    capsys: pytest.CaptureFixture[str],
    app_for: Callable[[Settings], TestClient],
    settings: Settings,
    database: Database,
) -> None:
    _run(
        capsys,
        "users",
        "create",
        "--email",
        "gone@example.com",
        "--password",
        PASSWORD,
        "--verified",
    )
    visitor = Browser(app_for(settings))
    visitor.login("gone@example.com")
    assert _run(capsys, "users", "delete", "gone@example.com", "--json")[0] == 0
    with database.transaction() as session:
        assert session.scalars(select(User)).all() == []
        assert (
            session.scalars(select(BrowserSession).where(BrowserSession.user_id.is_not(None))).all()
            == []
        )
    assert visitor.http.get("/account", follow_redirects=False).status_code == 303
    assert _run(capsys, "users", "show", "gone@example.com")[0] == 2


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
            "Chrome on Linux",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit Safari/604.1",
            "Safari on iPhone",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Firefox on Windows",
        ),
        (None, "Unknown browser"),
    ],
)
def test_sessions_are_labelled_by_browser_and_system(agent: str | None, label: str) -> None:
    assert describe_user_agent(agent) == label
