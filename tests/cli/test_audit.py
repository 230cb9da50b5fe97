"""identity audit: list, tail and prune the security event log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity import audit
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, User
from tests.conftest import MailSink
from tests.conftest import run_main as _run
from tests.web_helpers import PASSWORD, Browser, code_from, csrf_of, link_from

SECOND_PASSWORD = "amber-quartz-lantern-17"
THIRD_PASSWORD = "mossy-violin-harbor-88"
ADA = uuid.UUID("11111111-1111-4111-8111-111111111111")
BOB = uuid.UUID("22222222-2222-4222-8222-222222222222")


def _listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    code, out, err = _run(capsys, "audit", "list", "--json", *argv)
    assert code == 0 and err == "", err
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


def _add(database: Database, type: str, age: timedelta, **fields: Any) -> int:
    with database.transaction() as session:
        event = AuditEvent(type=type, occurred_at=datetime.now(UTC) - age, detail={}, **fields)
        session.add(event)
        session.flush()
        return event.id


def _types(database: Database) -> list[str]:
    with database.transaction() as session:
        return list(session.scalars(select(AuditEvent.type).order_by(AuditEvent.id)))


@pytest.fixture
def events(env: None, database: Database) -> dict[str, int]:
    """Ada (a user with an account), Bob (a deleted one) and a client's events, oldest first."""
    with database.transaction() as session:
        session.add(User(id=ADA, email="ada@example.com", name="Ada", password_hash=None))
    return {
        "ada_login": _add(
            database,
            "login.succeeded",
            timedelta(days=3),
            subject=str(ADA),
            client_id="web",
            ip="192.0.2.1",
        ),
        "bob_failed": _add(
            database, "login.failed", timedelta(hours=2), subject=str(BOB), outcome="failure"
        ),
        "ada_password": _add(
            database, "password.changed", timedelta(minutes=30), subject=str(ADA), ip="192.0.2.1"
        ),
        "token": _add(database, "token.issued", timedelta(minutes=1), client_id="billing"),
    }


# -- list -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["ada_login", "bob_failed", "ada_password", "token"]),
        (["--user", "ada@example.com"], ["ada_login", "ada_password"]),
        (["--user", " ADA@Example.com"], ["ada_login", "ada_password"]),
        (["--user", str(ADA)], ["ada_login", "ada_password"]),
        # A deleted account's id still finds its events.
        (["--user", str(BOB).upper()], ["bob_failed"]),
        (["--client", "web"], ["ada_login"]),
        (["--client", "billing"], ["token"]),
        (["--client", "nobody"], []),
        (["--type", "login"], ["ada_login", "bob_failed"]),
        (["--type", "login.f"], ["bob_failed"]),
        (["--type", "password."], ["ada_password"]),
        (["--type", "%"], []),  # a prefix, not a LIKE pattern
        (["--since", "15m"], ["token"]),
        (["--since", "1h"], ["ada_password", "token"]),
        (["--since", "7d"], ["ada_login", "bob_failed", "ada_password", "token"]),
        (["--user", "ada@example.com", "--since", "1d"], ["ada_password"]),
        (["--user", "ada@example.com", "--type", "login"], ["ada_login"]),
        (["--limit", "2"], ["ada_password", "token"]),  # the newest two, oldest first
    ],
)
def test_list_filters(
    events: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: list[str],
) -> None:
    assert [row["id"] for row in _listed(capsys, *argv)] == [events[name] for name in expected]


def test_since_takes_iso_timestamps(
    events: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=1)
    newer = [events["bob_failed"], events["ada_password"], events["token"]]
    for text in (
        cutoff.isoformat(),
        cutoff.strftime("%Y-%m-%dT%H:%M:%SZ"),
        cutoff.replace(tzinfo=None).isoformat(),  # no offset: UTC
        cutoff.astimezone(timezone(timedelta(hours=5))).isoformat(),
    ):
        assert [row["id"] for row in _listed(capsys, "--since", text)] == newer, text
    # A date alone is its midnight (UTC).
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert _listed(capsys, "--since", tomorrow) == []


def test_list_json_is_the_audit_shape(
    events: dict[str, int], capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    rows = _listed(capsys, "--client", "web")
    with database.transaction() as session:
        stored = session.get(AuditEvent, events["ada_login"])
        assert stored is not None
        assert rows == [json.loads(json.dumps(audit.as_dict(stored), default=str))]
    assert set(rows[0]) == {
        "id",
        "occurred_at",
        "type",
        "outcome",
        "actor",
        "subject",
        "client_id",
        "ip",
        "user_agent",
        "detail",
    }
    assert rows[0]["type"] == "login.succeeded" and rows[0]["subject"] == str(ADA)
    assert rows[0]["ip"] == "192.0.2.1" and rows[0]["detail"] == {}
    assert datetime.fromisoformat(rows[0]["occurred_at"]).tzinfo is not None


def test_list_text_is_one_line_per_event_under_column_headers(
    events: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "audit", "list")
    header, *lines = out.splitlines()
    assert header.split() == ["TIME", "TYPE", "OUTCOME", "SUBJECT", "CLIENT", "IP"]
    assert code == 0 and len(lines) == 4
    # Each column starts under its header.
    assert lines[0].index("login.succeeded") == header.index("TYPE")
    assert lines[0].index(str(ADA)) == header.index("SUBJECT")
    first = lines[0].split()
    assert first[1:] == ["login.succeeded", "success", str(ADA), "web", "192.0.2.1"]
    assert datetime.fromisoformat(first[0]) < datetime.now(UTC) - timedelta(days=2)
    assert lines[1].split()[1:] == ["login.failed", "failure", str(BOB), "-", "-"]
    assert lines[3].split()[1:] == ["token.issued", "success", "-", "billing", "-"]
    code, out, _ = _run(capsys, "audit", "list", "--type", "nothing")
    assert code == 0 and out == "no events\n"
    assert _listed(capsys, "--type", "nothing") == []


# -- tail -------------------------------------------------------------------------------------


def test_tail_prints_the_existing_events_then_new_ones(
    events: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    database: Database,
) -> None:
    added: list[int] = []

    def between_polls(seconds: float) -> None:
        assert seconds == 0.5
        if not added:  # after the first poll: one matching event, one that does not match
            added.append(_add(database, "login.failed", timedelta(0), subject=str(ADA)))
            _add(database, "login.failed", timedelta(0), subject=str(BOB))
        elif len(added) == 1:
            added.append(_add(database, "logout", timedelta(0), subject=str(ADA)))

    monkeypatch.setattr(audit, "time", types.SimpleNamespace(sleep=between_polls))
    code, out, err = _run(
        capsys,
        "audit",
        "tail",
        "--user",
        "ada@example.com",
        "--interval",
        "0.5",
        "--max-polls",
        "4",
        "--json",
    )
    assert code == 0 and err == ""
    rows = [json.loads(line) for line in out.splitlines()]  # one object a line
    assert [row["id"] for row in rows] == [events["ada_login"], events["ada_password"], *added]
    assert [row["type"] for row in rows[2:]] == ["login.failed", "logout"]


def test_tail_starts_with_the_last_twenty(
    env: None, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    ids = [_add(database, f"login.failed.{n}", timedelta(minutes=30 - n)) for n in range(25)]
    code, out, _ = _run(capsys, "audit", "tail", "--max-polls", "1")
    header, *lines = out.splitlines()
    assert code == 0 and header.split()[:2] == ["TIME", "TYPE"] and len(lines) == 20
    assert [line.split()[1] for line in lines] == [f"login.failed.{n}" for n in range(5, 25)]
    code, out, _ = _run(capsys, "audit", "tail", "--max-polls", "1", "--limit", "3", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids[-3:]


def test_follow_polls_by_id_in_fresh_transactions(env: None, database: Database) -> None:
    first = _add(database, "signup", timedelta(0))
    later: list[int] = []

    def sleep(seconds: float) -> None:
        later.append(_add(database, "login.succeeded", timedelta(0)))

    rows = list(
        audit.follow(
            database.transaction, audit.AuditFilter(), first, interval=1, max_polls=3, sleep=sleep
        )
    )
    assert [row["id"] for row in rows] == later and len(later) == 2


@pytest.mark.system
def test_tail_ends_with_status_zero_on_ctrl_c(
    env: None, database: Database, tmp_path: Path
) -> None:
    _add(database, "signup", timedelta(0))
    process = subprocess.Popen(
        [sys.executable, "-m", "identity", "audit", "tail", "--interval", "0.1"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().split()[:2] == ["TIME", "TYPE"]
        assert " signup " in process.stdout.readline()  # following now
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and err == "" and out == ""


# -- prune ------------------------------------------------------------------------------------


def test_prune_deletes_only_older_events_and_records_it(
    env: None, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    _add(database, "old.1", timedelta(days=400))
    _add(database, "old.2", timedelta(days=91))
    kept = [
        _add(database, "kept.1", timedelta(days=89)),
        _add(database, "kept.2", timedelta(hours=1)),
    ]
    started = datetime.now(UTC)
    code, out, err = _run(capsys, "audit", "prune", "--older-than", "90d", "--json")
    result = json.loads(out)
    assert code == 0 and err == "" and result["deleted"] == 2
    cutoff = datetime.fromisoformat(result["before"])
    assert abs(cutoff - (started - timedelta(days=90))) < timedelta(minutes=1)
    with database.transaction() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [row.id for row in rows[:2]] == kept
        assert [row.type for row in rows] == ["kept.1", "kept.2", "audit.pruned"]
        pruned = rows[-1]
        assert pruned.actor == "admin" and pruned.user_agent == "identity-cli"
        assert pruned.detail == {"count": 2, "before": result["before"], "forced": False}
    # Again: nothing is old enough any more, and that is recorded too.
    code, out, _ = _run(capsys, "audit", "prune", "--older-than", "13w")
    assert code == 0 and out.startswith("deleted 0 event(s) from before ")
    assert _types(database) == ["kept.1", "kept.2", "audit.pruned", "audit.pruned"]


@pytest.mark.parametrize("duration", ["1s", "90m", "12h", "23h"])
def test_prune_under_a_day_needs_force(
    env: None, capsys: pytest.CaptureFixture[str], database: Database, duration: str
) -> None:
    _add(database, "recent", timedelta(days=2))
    _add(database, "now", timedelta(0))
    code, out, err = _run(capsys, "audit", "prune", "--older-than", duration)
    assert code == 2 and out == "" and "--force" in err and err.count("\n") == 1
    assert _types(database) == ["recent", "now"]  # nothing deleted, nothing recorded
    code, out, _ = _run(capsys, "audit", "prune", "--older-than", duration, "--force", "--json")
    assert code == 0 and json.loads(out)["deleted"] == 1
    assert _types(database) == ["now", "audit.pruned"]
    with database.transaction() as session:
        pruned = session.scalars(select(AuditEvent).where(AuditEvent.type == "audit.pruned")).one()
        assert pruned.detail["forced"] is True and pruned.detail["count"] == 1


def test_prune_of_a_day_or_more_needs_no_force(
    env: None, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    _add(database, "recent", timedelta(days=2))
    assert _run(capsys, "audit", "prune", "--older-than", "1d")[0] == 0
    assert _types(database) == ["audit.pruned"]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--since", "5x"], "unknown duration"),
        (["list", "--since", "3mo"], "unknown duration"),
        (["list", "--since", "yesterday"], "ISO timestamp"),
        (["list", "--since", "2025-13-01T00:00:00"], "ISO timestamp"),
        (["list", "--since", "99999999999999d"], "too long"),
        (["list", "--user", "nobody@example.com"], "no user"),
        (["list", "--user", "nobody"], "no user"),
        (["list", "--user", "@"], "no user"),
        (["list", "--limit", "0"], "--limit"),
        (["list", "--limit", "many"], "--limit"),
        (["tail", "--since", "soon", "--max-polls", "1"], "ISO timestamp"),
        (["tail", "--user", "ghost@example.com", "--max-polls", "1"], "no user"),
        (["tail", "--interval", "0", "--max-polls", "1"], "--interval"),
        (["tail", "--interval", "nan", "--max-polls", "1"], "--interval"),
        (["prune", "--older-than", "90"], "unknown duration"),
        (["prune", "--older-than", "90 days"], "unknown duration"),
        (["prune", "--older-than", "0d", "--force"], "longer than zero"),
        (["prune", "--older-than=-5d", "--force"], "unknown duration"),
        (["prune", "--older-than", "99999999d"], "too long"),
    ],
)
def test_bad_input_is_one_line_and_exit_two(
    events: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    database: Database,
    argv: list[str],
    message: str,
) -> None:
    before = _types(database)
    code, out, err = _run(capsys, "audit", *argv)
    assert code == 2 and out == ""
    assert err.startswith("identity: error: ") and err.count("\n") == 1 and message in err
    assert _types(database) == before


# -- end to end -------------------------------------------------------------------------------


def test_a_journey_through_the_pages_is_logged_in_order_without_secrets(
    env: None,
    capsys: pytest.CaptureFixture[str],
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> None:
    email = "journey@example.com"
    visitor = Browser(app_for(settings_for(smtp_url=mail_sink.url)))

    assert visitor.signup(email, PASSWORD).status_code == 303
    code = code_from(mail_sink, email)
    # Verified in the browser that typed the password: that is the sign-in.
    assert visitor.verify(email, code).headers["location"] == "/account"
    changed = visitor.submit(
        "/account",
        "/account/password",
        current_password=PASSWORD,
        new_password=SECOND_PASSWORD,
    )
    assert changed.status_code == 303 and changed.headers["location"] == "/account"
    assert visitor.submit("/logout").status_code == 200
    assert visitor.submit("/forgot-password", email=email).status_code == 303
    token = link_from(mail_sink, email, "/reset-password").split("token=")[1]
    page = visitor.http.get(f"/reset-password?token={token}")
    reset = visitor.http.post(
        "/reset-password",
        data={"csrf_token": csrf_of(page.text), "token": token, "password": THIRD_PASSWORD},
    )
    assert reset.status_code == 200
    assert visitor.login(email, THIRD_PASSWORD).status_code == 303

    rows = _listed(capsys, "--user", email)
    assert [row["type"] for row in rows] == [
        "signup",
        "email.verified",
        "login.succeeded",
        "password.changed",
        "logout",
        "password.reset_requested",
        "password.reset",
        "login.succeeded",
    ]
    assert all(row["outcome"] == "success" for row in rows)
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    everything = _listed(capsys)  # and no event of the journey, about anyone, leaks a secret
    assert {row["id"] for row in rows} <= {row["id"] for row in everything}
    for row in everything:
        text = json.dumps(row)
        for secret in (PASSWORD, SECOND_PASSWORD, THIRD_PASSWORD, code, token):
            assert secret not in text, (secret, row)
