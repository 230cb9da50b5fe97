"""identity mail last: the newest code or link mailed to an address, from the outbox table,
or from the .eml file once the sender delivered it there."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.mail import OutboxSender
from identity.models import OutboxMessage
from tests.conftest import run_main as _run

BODY = "Hi Ada,\nYour verification code is:\n\n    {code}\n\nOr open this link:\n{link}\n"


@pytest.fixture
def outbox(env: None, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file outbox the CLI and the test's senders share."""
    monkeypatch.setenv("IDENTITY_OUTBOX_DIR", str(settings.outbox_dir))
    return settings.outbox_dir


def _add(database: Database, to: str, code: str | None, link: str, template: str) -> int:
    text = BODY.format(code=code, link=link) if code else f"Open this link:\n{link}\n"
    with database.transaction() as session:
        message = OutboxMessage(
            to_address=to, subject="s", template=template, text_body=text, html_body="<p>"
        )
        session.add(message)
        session.flush()
        return message.id


def test_prints_the_code_of_the_registration_just_made(
    outbox: Path, http: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = http.post(
        "/api/v1/register",
        json={"email": "ada@example.com", "password": "tidal-orbit-cactus-42", "name": "Ada"},
    )
    assert answer.status_code == 202
    code, out, err = _run(capsys, "mail", "last", "--to", "ada@example.com")
    assert code == 0, err
    verified = http.post(
        "/api/v1/verify-email", json={"email": "ada@example.com", "code": out.strip()}
    )
    assert verified.json() == {"status": "verified"}


def test_a_delivered_mail_is_read_from_its_eml_file(
    outbox: Path, database: Database, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(database, "ada@example.com", "123456", "http://127.0.0.1:8000/v?t=1", "verify_email")
    assert OutboxSender(database, settings).deliver_due() == 1
    with database.transaction() as session:
        assert session.query(OutboxMessage).one().text_body == ""  # blanked once sent
    code, out, _ = _run(capsys, "mail", "last", "--to", "ada@example.com", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["code"] == "123456" and shown["sent_at"] is not None
    assert shown["link"] == "http://127.0.0.1:8000/v?t=1" and shown["template"] == "verify_email"


def test_the_newest_mail_wins_whatever_the_case_of_the_address(
    outbox: Path, database: Database, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(database, "ada@example.com", "111111", "http://127.0.0.1:8000/a", "verify_email")
    OutboxSender(database, settings).deliver_due()
    _add(database, "ada@example.com", "222222", "http://127.0.0.1:8000/b", "verify_email")
    _add(database, "bob@example.com", "333333", "http://127.0.0.1:8000/c", "verify_email")
    assert _run(capsys, "mail", "last", "--to", "Ada@Example.com")[1] == "222222\n"


def test_a_mail_without_a_code_prints_its_link(
    outbox: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(database, "ada@example.com", None, "http://127.0.0.1:8000/reset?t=9", "password_reset")
    code, out, _ = _run(capsys, "mail", "last", "--to", "ada@example.com")
    assert code == 0 and out == "http://127.0.0.1:8000/reset?t=9\n"


def test_no_mail_to_the_address_is_one_line(
    outbox: Path, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "mail", "last", "--to", "nobody@example.com", "--wait", "0")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no mail to nobody@example.com in the outbox of" in err


def test_mail_delivered_over_smtp_is_not_kept(
    outbox: Path,
    database: Database,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _add(database, "ada@example.com", "123456", "http://127.0.0.1:8000/v", "verify_email")
    OutboxSender(database, replace(settings, smtp_url=None)).deliver_due()
    monkeypatch.setenv("IDENTITY_SMTP_URL", "smtp://127.0.0.1:2525")
    code, _, err = _run(capsys, "mail", "last", "--to", "ada@example.com")
    assert code == 2 and "went out over SMTP" in err and "123456" not in err
