"""identity users mfa reset, and identity keys secret."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from identity.accounts import factors, operators
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, OutboxMessage, RecoveryCode, TotpFactor, User
from identity.secret_box import SecretBox
from identity.services import build_services
from tests.conftest import remember_secret
from tests.conftest import run_main as _run
from tests.web_helpers import PASSWORD

CONTEXT = RequestContext(ip="203.0.113.7", user_agent="pytest")


@pytest.fixture
def accounts(settings: Settings, database: Database) -> Iterator[Accounts]:
    """The account services, wired as the app and the CLI wire them."""
    services = build_services(settings, database)
    yield services.accounts
    if services.redis is not None:
        services.redis.close()


def _user(accounts: Accounts, database: Database, email: str, *, enrolled: bool) -> User:
    """A verified user; ``enrolled``: with a confirmed authenticator app and recovery codes."""
    with database.transaction() as session:
        user = operators.create_user(
            accounts, session, email=email, name="Ada", password=PASSWORD, verified=True
        )
        if not enrolled:
            return user
        setup = factors.begin_totp(accounts, session, user)
    remember_secret(setup.secret)
    with database.transaction() as session:
        user = session.get(User, user.id)
        assert user is not None
        code = pyotp.TOTP(setup.secret).at(accounts.now())
        assert (
            len(
                factors.confirm_totp(
                    accounts, session, user, code, CONTEXT, authenticated_at=accounts.now()
                )
            )
            == 10
        )
    return user


def test_reset_removes_every_factor_audits_and_mails_the_owner(
    env: None, capsys: pytest.CaptureFixture[str], accounts: Accounts, database: Database
) -> None:
    user = _user(accounts, database, "lost-phone@example.com", enrolled=True)

    code, out, err = _run(capsys, "users", "mfa", "reset", "Lost-Phone@example.com", "--json")

    assert code == 0 and err == ""
    assert json.loads(out) == {"email": "lost-phone@example.com", "reset": True}
    with database.transaction() as session:
        assert session.get(TotpFactor, user.id) is None
        codes = session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id))
        assert list(codes) == []
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.type == "mfa.reset"))
        assert event.subject == str(user.id) and event.actor == "admin"
        mails = session.scalars(
            select(OutboxMessage.template).where(OutboxMessage.to_address == user.email)
        )
        assert "second_factor_removed" in list(mails)
        assert not factors.has_second_factor(session, session.get(User, user.id))


def test_reset_prints_one_line(
    env: None, capsys: pytest.CaptureFixture[str], accounts: Accounts, database: Database
) -> None:
    _user(accounts, database, "one-line@example.com", enrolled=True)
    code, out, _ = _run(capsys, "users", "mfa", "reset", "one-line@example.com")
    assert code == 0 and out.count("\n") == 1 and "one-line@example.com" in out


def test_reset_of_an_account_without_factors_changes_nothing(
    env: None, capsys: pytest.CaptureFixture[str], accounts: Accounts, database: Database
) -> None:
    _user(accounts, database, "plain@example.com", enrolled=False)
    code, out, _ = _run(capsys, "users", "mfa", "reset", "plain@example.com", "--json")
    assert code == 0 and json.loads(out) == {"email": "plain@example.com", "reset": False}
    with database.transaction() as session:
        assert list(session.scalars(select(AuditEvent).where(AuditEvent.type == "mfa.reset"))) == []
        mails = session.scalars(
            select(OutboxMessage.template).where(OutboxMessage.to_address == "plain@example.com")
        )
        assert "second_factor_removed" not in list(mails)


def test_reset_of_an_unknown_email_fails_with_one_line(
    env: None, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    code, out, err = _run(capsys, "users", "mfa", "reset", "nobody@example.com")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "nobody@example.com" in err
    with database.transaction() as session:
        assert list(session.scalars(select(AuditEvent).where(AuditEvent.type == "mfa.reset"))) == []


def test_keys_secret_prints_only_a_new_fernet_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "keys", "secret")
    assert code == 0 and err == ""
    key = out.strip()
    assert out == key + "\n"
    box = SecretBox([key])  # refuses anything that is not a Fernet key
    assert box.open(box.seal("seed")) == "seed"
    assert Fernet(key.encode()).decrypt(box.seal("x").encode()) == b"x"
    assert _run(capsys, "keys", "secret")[1].strip() != key  # a new one each time


def test_keys_secret_help_says_how_to_rotate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(capsys, "keys", "secret", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "IDENTITY_SECRET_KEY" in text
    assert "put the new key first" in text and "keep the old ones after it" in text
