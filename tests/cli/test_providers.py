"""identity providers add|list|show|update|remove|disable|enable: what operators type, what
they see (never a client secret), what is audited, and a running instance seeing it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent
from identity.services import build_services
from tests.conftest import remember_secret
from tests.conftest import run_main as _run

ISSUER = "https://id.example.com"
SECRET = "GOCSPX-upstream-secret-91ac7e"
remember_secret(SECRET)


@pytest.fixture
def operator(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's shell: the test database and a public issuer."""
    monkeypatch.setenv("IDENTITY_ISSUER", ISSUER)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, "providers", *argv, "--json")
    assert code == 0, err
    assert SECRET not in out
    return json.loads(out)


def _add(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    return dict(_json(capsys, "add", "--client-id", "cid-123", "--client-secret", SECRET, *argv))


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = _run(capsys, "providers", *argv)
    assert code == 2 and out == ""
    assert err.startswith("identity: error: ") and err.count("\n") == 1, err
    assert SECRET not in err
    return err


def _events(database: Database) -> list[AuditEvent]:
    with database.transaction() as session:
        query = select(AuditEvent).where(AuditEvent.type.like("provider.%"))
        return list(session.scalars(query.order_by(AuditEvent.id)).all())


def test_add_with_a_preset_fills_it_in_and_prints_the_redirect_uri(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    added = _add(capsys, "--name", "google", "--preset", "google")
    assert added == {
        "name": "google",
        "kind": "oidc",
        "issuer": "https://accounts.google.com",
        "client_id": "cid-123",
        "scope": "openid email profile",
        "label": "Continue with Google",
        "enabled": True,
        "trust_mfa": False,
        "redirect_uri": f"{ISSUER}/login/with/google/callback",
    }


def test_add_with_the_github_preset_is_a_github_kind_provider(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    added = _add(capsys, "--name", "github", "--preset", "github", "--label", "GitHub")
    assert (added["kind"], added["issuer"], added["scope"], added["label"]) == (
        "github",
        "https://github.com",
        "read:user user:email",
        "GitHub",
    )


def test_add_of_any_openid_connect_provider_has_defaults(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    added = _add(
        capsys, "--name", "corp-sso", "--issuer", "https://sso.corp.example", "--trust-mfa"
    )
    assert (added["kind"], added["scope"], added["label"], added["trust_mfa"]) == (
        "oidc",
        "openid email profile",
        "Continue with Corp-sso",
        True,
    )


def test_add_in_text_says_what_to_register_upstream(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys,
        "providers",
        "add",
        "--name",
        "gitlab",
        "--preset",
        "gitlab",
        "--client-id",
        "cid",
        "--client-secret",
        SECRET,
    )
    assert code == 0, err
    assert f"redirect_uri: {ISSUER}/login/with/gitlab/callback" in out
    assert SECRET not in out


def test_a_plain_http_issuer_needs_insecure_http(
    operator: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_github = ("--name", "github", "--preset", "github", "--issuer", "http://127.0.0.1:9")
    err = _error(capsys, "add", "--client-id", "cid", "--client-secret", SECRET, *fake_github)
    assert "IDENTITY_INSECURE_HTTP=1" in err
    monkeypatch.setenv("IDENTITY_INSECURE_HTTP", "1")
    added = _add(capsys, *fake_github)
    assert (added["kind"], added["issuer"]) == ("github", "http://127.0.0.1:9")


def test_list_and_show_never_print_the_secret(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(capsys, "--name", "google", "--preset", "google")
    _add(capsys, "--name", "corp", "--issuer", "https://sso.corp.example")
    listed = _json(capsys, "list")
    assert [item["name"] for item in listed] == ["google", "corp"]
    assert all("client_secret" not in item for item in listed)
    assert _json(capsys, "show", "corp")["issuer"] == "https://sso.corp.example"
    for argv in (("list",), ("show", "corp")):
        code, out, err = _run(capsys, "providers", *argv)
        assert code == 0, err
        assert "corp" in out and SECRET not in out


def test_list_says_when_there_are_none(operator: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "providers", "list")[1] == "no providers\n"


def test_adding_a_taken_name_is_one_line(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(capsys, "--name", "google", "--preset", "google")
    argv = ("--client-id", "x", "--client-secret", SECRET, "--name", "google", "--preset", "gitlab")
    assert "exists already" in _error(capsys, "add", *argv)
    assert _json(capsys, "show", "google")["issuer"] == "https://accounts.google.com"


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "nope"],
        ["update", "nope", "--label", "Nope"],
        ["remove", "nope"],
        ["disable", "nope"],
        ["enable", "nope"],
    ],
    ids=lambda argv: argv[0],
)
def test_an_unknown_name_is_one_line(
    operator: None, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert "no provider 'nope'" in _error(capsys, *argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "Bad_Name", "--issuer", "https://sso.example"], "provider name"),
        (["--name", "corp"], "needs --issuer"),
        (["--name", "corp", "--issuer", "https://sso.example/"], "trailing slash"),
        (["--name", "corp", "--issuer", "https://sso.example", "--scope", "email"], "openid"),
    ],
    ids=["name", "no-issuer", "trailing-slash", "no-openid"],
)
def test_a_refused_definition_is_one_line(
    operator: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    err = _error(capsys, "add", "--client-id", "cid", "--client-secret", SECRET, *argv)
    assert message in err
    assert _json(capsys, "list") == []


def test_update_changes_what_is_given(operator: None, capsys: pytest.CaptureFixture[str]) -> None:
    _add(capsys, "--name", "corp", "--issuer", "https://sso.corp.example", "--trust-mfa")
    updated = _json(capsys, "update", "corp", "--label", "Corporate sign-in", "--no-trust-mfa")
    assert (updated["label"], updated["trust_mfa"]) == ("Corporate sign-in", False)
    assert updated["issuer"] == "https://sso.corp.example"
    assert _json(capsys, "show", "corp") == updated


def test_update_without_a_change_is_one_line(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(capsys, "--name", "corp", "--issuer", "https://sso.corp.example")
    assert "nothing to change" in _error(capsys, "update", "corp")


def test_disable_enable_and_remove(
    operator: None, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    _add(capsys, "--name", "google", "--preset", "google")
    assert _json(capsys, "disable", "google")["enabled"] is False
    assert _json(capsys, "show", "google")["enabled"] is False
    assert _json(capsys, "enable", "google")["enabled"] is True
    assert _json(capsys, "remove", "google") == {"removed": "google", "links_removed": 0}
    assert _json(capsys, "list") == []
    events = _events(database)
    assert [e.type for e in events] == [
        "provider.added",
        "provider.disabled",
        "provider.enabled",
        "provider.removed",
    ]
    assert {(e.actor, e.user_agent) for e in events} == {("admin", "identity-cli")}
    assert all(SECRET not in json.dumps(e.detail) for e in events)


def test_the_redirect_uri_stays_the_same_across_remove_and_add(
    operator: None, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _add(capsys, "--name", "corp", "--issuer", "https://sso.corp.example")
    _json(capsys, "remove", "corp")
    again = _add(capsys, "--name", "corp", "--issuer", "https://other.corp.example")
    assert again["redirect_uri"] == first["redirect_uri"] == (f"{ISSUER}/login/with/corp/callback")


def test_a_running_instance_sees_a_provider_added_on_the_command_line(
    operator: None,
    capsys: pytest.CaptureFixture[str],
    settings_for: Callable[..., Settings],
    database: Database,
    tmp_path: Path,
) -> None:
    # The keys folder the commands use (the env fixture's), as a server beside them has.
    settings = settings_for(cache_check_seconds=0.0, keys_dir=tmp_path / "keys")
    running = build_services(settings, database)
    with database.transaction() as session:
        assert running.providers.enabled(session) == []
    _add(capsys, "--name", "google", "--preset", "google")
    with database.transaction() as session:
        [config] = running.providers.enabled(session)
    # Sealed by the command, opened by the server: one secret key in one keys folder.
    assert (config.name, config.client_secret) == ("google", SECRET)
    _json(capsys, "disable", "google")
    with database.transaction() as session:
        assert running.providers.enabled(session) == []
