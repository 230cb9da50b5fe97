"""identity clients create|update with every setting (the same rules as registration, one
check for both) and identity clients rotate-secret (a new secret shown once, the old one
alive for a grace period)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from identity import repositories
from identity.db import Database
from identity.models import AuditEvent, Client
from tests.conftest import remember_secret
from tests.conftest import run_main as _run

CALLBACK = "https://app.example.com/callback"


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    data = dict(json.loads(out))
    remember_secret(data.get("client_secret"))
    return data


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "", (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def _events(database: Database, kind: str) -> list[AuditEvent]:
    with database.transaction() as session:
        query = select(AuditEvent).where(AuditEvent.type == kind).order_by(AuditEvent.id)
        return list(session.scalars(query))


def _stored(database: Database, client_id: str) -> Client:
    with database.transaction() as session:
        client = repositories.get_client(session, client_id)
        assert client is not None
        return client


@pytest.fixture
def web_app(env: None, capsys: pytest.CaptureFixture[str]) -> str:
    created = _json(capsys, "clients", "create", "--name", "Web", "--redirect-uri", CALLBACK)
    return str(created["client_id"])


# -- role prefixes ----------------------------------------------------------------------------


def test_role_prefixes_are_set_at_creation_replaced_and_cleared_by_update(
    web_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    created = _json(
        capsys, "clients", "create", "--name", "Svc", "--role-prefix", "app1:",
        "--role-prefix", "shared.",
    )  # fmt: skip
    assert created["role_prefixes"] == ["app1:", "shared."]
    assert _json(capsys, "clients", "show", web_app)["role_prefixes"] == []
    updated = _json(capsys, "clients", "update", web_app, "--role-prefix", "app2:")
    assert updated["role_prefixes"] == ["app2:"]
    assert _json(capsys, "clients", "update", web_app, "--no-role-prefixes")["role_prefixes"] == []


def test_a_bad_role_prefix_is_refused(web_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "role prefix" in _refused(capsys, "clients", "update", web_app, "--role-prefix", "a b")
    assert "role prefix" in _refused(
        capsys, "clients", "create", "--name", "x", "--role-prefix", ":x"
    )


# -- update: every setting, through the rules of registration ---------------------------------


def test_update_replaces_each_setting_given_and_audits_what_changed(
    web_app: str, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    other = "https://app.example.com/other"
    updated = _json(
        capsys, "clients", "update", web_app, "--name", " Web 2 ", "--redirect-uri", other,
        "--redirect-uri", CALLBACK, "--scope", "read write", "--audience",
        "https://api.example.com", "--grant-type", "authorization_code", "--first-party",
        "--require-mfa",
    )  # fmt: skip
    assert updated["name"] == "Web 2" and updated["redirect_uris"] == [other, CALLBACK]
    assert updated["scope"] == "read write" and updated["audience"] == ["https://api.example.com"]
    assert updated["grant_types"] == ["authorization_code"]
    assert updated["first_party"] is True and updated["require_mfa"] is True
    assert _json(capsys, "clients", "show", web_app) == updated
    [event] = _events(database, "client.updated")
    assert event.client_id == web_app and event.actor == "admin"
    assert event.detail == {
        "name": "Web 2",
        "redirect_uris": [other, CALLBACK],
        "grant_types": ["authorization_code"],
        "scope": "read write",
        "audience": ["https://api.example.com"],
        "first_party": True,
        "require_mfa": True,
    }
    cleared = _json(capsys, "clients", "update", web_app, "--no-audience", "--no-first-party")
    assert cleared["audience"] == [] and cleared["first_party"] is False
    assert _events(database, "client.updated")[-1].detail == {"audience": [], "first_party": False}


def test_an_update_that_changes_nothing_records_nothing(
    web_app: str, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    _json(capsys, "clients", "update", web_app, "--name", "Web", "--redirect-uri", CALLBACK)
    assert _events(database, "client.updated") == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scope", "openid account"], "only a --first-party client may have the account scope"),
        (["--grant-type", "password"], "only a --first-party client may use the password grant"),
        (["--redirect-uri", "http://app.example.com/cb"], "only loopback may use http"),
        (["--redirect-uri", "https://app.example.com/cb#x"], "must not have a fragment"),
        (["--redirect-uri", "javascript:alert(1)"], "forbidden or missing scheme"),
        (["--audience", "not-a-uri"], "absolute URI"),
        (["--name", "   "], "a name of 1 to 200 characters"),
        (["--scope", 'read "quoted"'], "characters RFC 6749 forbids"),
    ],
    ids=[
        "account-scope",
        "password-grant",
        "plain-http",
        "fragment",
        "script-scheme",
        "audience",
        "blank-name",
        "scope-characters",
    ],
)
def test_update_refuses_what_registration_refuses_and_changes_nothing(
    web_app: str,
    capsys: pytest.CaptureFixture[str],
    database: Database,
    argv: list[str],
    message: str,
) -> None:
    before = _json(capsys, "clients", "show", web_app)
    assert message in _refused(capsys, "clients", "update", web_app, *argv)
    assert _json(capsys, "clients", "show", web_app) == before
    assert _events(database, "client.updated") == []


def test_update_checks_the_client_as_a_whole(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    service = _json(capsys, "clients", "create", "--name", "Svc")["client_id"]
    # A code grant needs a redirect URI, which this client never registered.
    err = _refused(capsys, "clients", "update", service, "--grant-type", "authorization_code")
    assert "authorization_code needs at least one --redirect-uri" in err
    public = _json(
        capsys, "clients", "create", "--name", "Spa", "--public", "--redirect-uri", CALLBACK
    )["client_id"]
    err = _refused(capsys, "clients", "update", public, "--grant-type", "client_credentials")
    assert "a public client cannot use client_credentials" in err
    first_party = _json(
        capsys, "clients", "create", "--name", "Mine", "--first-party", "--grant-type",
        "password", "--scope", "openid account",
    )["client_id"]  # fmt: skip
    # Leaving first-party would keep a password grant and the account scope it may not have.
    err = _refused(capsys, "clients", "update", first_party, "--no-first-party")
    assert "only a --first-party client may" in err


def test_update_of_an_unknown_client_or_with_nothing_to_change_is_one_line(
    web_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no client" in _refused(capsys, "clients", "update", "nope", "--name", "x")
    assert "nothing to change" in _refused(capsys, "clients", "update", web_app)
    assert "not allowed with" in _refused(
        capsys, "clients", "update", web_app, "--role-prefix", "a:", "--no-role-prefixes"
    )


# -- rotate-secret ------------------------------------------------------------------------------


@pytest.fixture
def service(env: None, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    created = _json(capsys, "clients", "create", "--name", "Svc", "--scope", "read")
    return str(created["client_id"]), str(created["client_secret"])


def test_rotation_gives_a_new_secret_and_keeps_the_old_one_for_a_day_by_default(
    service: tuple[str, str], capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    client_id, old = service
    before = datetime.now(UTC)
    rotated = _json(capsys, "clients", "rotate-secret", client_id)
    assert set(rotated) == {"client_id", "client_secret", "previous_secret_expires_at"}
    new = rotated["client_secret"]
    assert rotated["client_id"] == client_id and len(new) >= 43 and new != old
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert before + timedelta(hours=24) <= until <= datetime.now(UTC) + timedelta(hours=24)
    client = _stored(database, client_id)
    assert client.check_client_secret(new) and client.check_client_secret(old)
    shown = _json(capsys, "clients", "show", client_id)
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    assert new not in json.dumps(shown) and old not in json.dumps(shown)
    [event] = _events(database, "client.secret_rotated")
    assert event.client_id == client_id and event.actor == "admin"
    assert event.detail == {"grace_seconds": 86400}


@pytest.mark.parametrize(("grace", "seconds"), [("30m", 1800), ("7d", 604800), ("30d", 2592000)])
def test_the_grace_period_is_the_one_asked_for(
    service: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    database: Database,
    grace: str,
    seconds: int,
) -> None:
    rotated = _json(capsys, "clients", "rotate-secret", service[0], "--grace", grace)
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    expected = datetime.now(UTC) + timedelta(seconds=seconds)
    assert abs((until - expected).total_seconds()) < 60
    assert _events(database, "client.secret_rotated")[0].detail == {"grace_seconds": seconds}


def test_a_rotation_without_grace_ends_the_old_secret_at_once(
    service: tuple[str, str], capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    client_id, old = service
    rotated = _json(capsys, "clients", "rotate-secret", client_id, "--grace", "0")
    assert rotated["previous_secret_expires_at"] is None
    client = _stored(database, client_id)
    assert client.check_client_secret(rotated["client_secret"])
    assert not client.check_client_secret(old)
    assert "previous_secret_expires_at" not in _json(capsys, "clients", "show", client_id)


def test_a_second_rotation_ends_the_first_ones_old_secret(
    service: tuple[str, str], capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    client_id, first = service
    second = _json(capsys, "clients", "rotate-secret", client_id)["client_secret"]
    third = _json(capsys, "clients", "rotate-secret", client_id)["client_secret"]
    client = _stored(database, client_id)
    assert client.check_client_secret(third) and client.check_client_secret(second)
    assert not client.check_client_secret(first)


def test_the_text_output_shows_the_secret_once(
    service: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "clients", "rotate-secret", service[0], "--grace", "0")
    assert code == 0 and "(shown once: store it now)" in out and "the old secret is dead" in out
    secret = out.split("client_secret: ")[1].split()[0]
    remember_secret(secret)
    assert out.count(secret) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grace", "31d"], "between 0 and 30 days"),
        (["--grace", "soon"], "unknown duration"),
        (["--grace", "-5m"], "expected one argument"),
    ],
    ids=["too-long", "not-a-duration", "negative"],
)
def test_a_grace_period_out_of_bounds_is_refused_and_the_secret_stays(
    service: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    database: Database,
    argv: list[str],
    message: str,
) -> None:
    assert message in _refused(capsys, "clients", "rotate-secret", service[0], *argv)
    assert _stored(database, service[0]).check_client_secret(service[1])
    assert _events(database, "client.secret_rotated") == []


def test_a_public_client_or_an_unknown_one_has_no_secret_to_rotate(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    public = _json(
        capsys, "clients", "create", "--name", "Spa", "--public", "--redirect-uri", CALLBACK
    )["client_id"]
    assert "public: it has no secret" in _refused(capsys, "clients", "rotate-secret", public)
    assert "no client" in _refused(capsys, "clients", "rotate-secret", "nope")
