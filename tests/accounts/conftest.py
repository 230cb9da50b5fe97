"""Fixtures for calling the account services directly (no HTTP), on the real test database.

Mail is read back from the outbox rows the services write: no sender runs here, so the rows
keep their bodies."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from identity import repositories
from identity.accounts import operators
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, OutboxMessage, User, utcnow
from identity.protocol.tokens import Authentication
from identity.services import Services, build_services
from tests.conftest import ISSUER, remember_secret

PASSWORD = "orbit-lantern-cactus-58"
OTHER_PASSWORD = "quartz-meadow-violin-23"
remember_secret(PASSWORD)
remember_secret(OTHER_PASSWORD)

CONTEXT = RequestContext(ip="203.0.113.7", user_agent="pytest")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move the clock by ``delta`` (negative goes back)."""
        self.now += delta


@pytest.fixture
def services(settings: Settings, database: Database) -> Iterator[Services]:
    """Every service, wired as the app wires them, on the test database."""
    built = build_services(settings, database)
    yield built
    if built.redis is not None:
        built.redis.close()


@pytest.fixture
def accounts(services: Services) -> Accounts:
    """The account services on the wall clock."""
    return services.accounts


@pytest.fixture
def clock() -> Clock:
    """A clock starting now, moved only by the test."""
    return Clock()


@pytest.fixture
def accounts_on(
    settings: Settings, database: Database, services: Services
) -> Callable[[Clock], Accounts]:
    """The account services reading ``clock`` instead of the wall clock (same database)."""

    def build(clock: Clock) -> Accounts:
        return Accounts.from_settings(
            settings, database, services.redis, services.loop_redis, services.families, clock
        )

    return build


def create_user(
    accounts: Accounts,
    database: Database,
    email: str,
    *,
    verified: bool = True,
    password: str = PASSWORD,
) -> User:
    """An account made the way an operator makes one (no signup mail)."""
    with database.transaction() as session:
        return operators.create_user(
            accounts, session, email=email, name="Ada", password=password, verified=verified
        )


def reload(database: Database, user: User) -> User:
    """The user's row as the database has it now."""
    with database.transaction() as session:
        fresh = session.get(User, user.id)
        assert fresh is not None
        return fresh


def mails(database: Database, to: str, template: str | None = None) -> list[OutboxMessage]:
    """The outbox messages to ``to`` (of ``template`` when given), oldest first."""
    query = select(OutboxMessage).where(OutboxMessage.to_address == to)
    if template is not None:
        query = query.where(OutboxMessage.template == template)
    with database.transaction() as session:
        return list(session.scalars(query.order_by(OutboxMessage.id)).all())


def code_in(message: OutboxMessage) -> str:
    """The 6-digit verification code in a mail."""
    match = re.search(r"\b(\d{6})\b", message.text_body)
    assert match, message.text_body
    remember_secret(match.group(1))
    return match.group(1)


def token_in(message: OutboxMessage, path: str) -> str:
    """The token of the link to ``path`` in a mail (the link must start with the issuer)."""
    match = re.search(rf"{re.escape(ISSUER + path)}\?token=([\w-]+)", message.text_body)
    assert match, message.text_body
    remember_secret(match.group(1))
    return match.group(1)


def audit_types(database: Database, subject: User) -> list[str]:
    """The types of the audit events about ``subject``, oldest first."""
    query = select(AuditEvent.type).where(AuditEvent.subject == str(subject.id))
    with database.transaction() as session:
        return list(session.scalars(query.order_by(AuditEvent.id)).all())


def refresh_family(services: Services, database: Database, client_id: str, user: User) -> str:
    """A refresh family of ``client_id`` for ``user``; returns its access token's jti."""
    oauth = services.oauth
    with database.transaction() as session:
        client = repositories.get_client(session, client_id)
        assert client is not None
        access = oauth.issuer.issue(
            client_id=client_id, subject=str(user.id), audience=[client_id], scope="offline_access"
        )
        oauth.refresh_tokens.issue(
            session,
            client=client,
            user_id=user.id,
            scope="offline_access",
            audience=[client_id],
            authentication=Authentication(utcnow(), ("pwd",), None),
            access=access,
        )
        return access.jti
