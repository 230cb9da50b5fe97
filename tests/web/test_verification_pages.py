"""Signup attempts, verification codes and wrong-code counting, through the hosted pages.

Each signup attempt has its own code and link, bound to that attempt's password; a new code
never voids an earlier live one; wrong codes count per address and client IP."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from identity.app import create_app
from identity.config import Settings
from identity.db import Database
from identity.models import OutboxMessage, User
from tests.conftest import ISSUER, MailSink, remember_secret
from tests.web_helpers import PASSWORD, Browser, code_from, csrf_of, link_from

ATTACKER_PASSWORD = "attacker-chosen-99"
remember_secret(ATTACKER_PASSWORD)
ATTACKER_IP, OWNER_IP = "198.51.100.66", "203.0.113.20"


@pytest.fixture
def app_settings(settings_for: Callable[..., Settings], mail_sink: MailSink) -> Settings:
    return settings_for(smtp_url=mail_sink.url)


@pytest.fixture
def visitor(app_for: Callable[[Settings], TestClient], app_settings: Settings) -> Browser:
    return Browser(app_for(app_settings))


@pytest.fixture
def attacker(app_for: Callable[[Settings], TestClient], app_settings: Settings) -> Browser:
    return Browser(app_for(app_settings))


@pytest.fixture
def proxied(
    settings_for: Callable[..., Settings], mail_sink: MailSink, database: Database
) -> Iterator[Browser]:
    """A browser behind a trusted proxy: ``from_ip`` picks the client IP the app sees."""
    settings = settings_for(
        smtp_url=mail_sink.url, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    with TestClient(create_app(settings), base_url=ISSUER, client=("127.0.0.1", 50000)) as http:
        yield Browser(http)


def _from_ip(browser: Browser, ip: str) -> Browser:
    browser.http.headers["X-Forwarded-For"] = ip
    return browser


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _verified(database: Database, email: str) -> bool:
    with database.transaction() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        return user.email_verified


def _mails_to(database: Database, email: str) -> int:
    with database.transaction() as session:
        query = select(func.count()).where(OutboxMessage.to_address == email)
        return int(session.scalar(query) or 0)


def _confirm_link(browser: Browser, link: str) -> object:
    path = link.replace(ISSUER, "")
    page = browser.http.get(path)
    return browser.http.post(
        "/verify-email/confirm",
        data={"csrf_token": csrf_of(page.text), "token": path.split("token=")[1]},
    )


# -- every attempt keeps its own code, link and password ------------------------------------


def test_a_later_signup_by_someone_else_neither_voids_the_owners_code_nor_takes_the_password(
    visitor: Browser, attacker: Browser, mail_sink: MailSink
) -> None:
    visitor.signup("owner@example.com", password=PASSWORD)
    # Delivered before the next signup: each app has its own sender, and they race.
    code_from(mail_sink, "owner@example.com", count=1)
    attacker.signup("owner@example.com", password=ATTACKER_PASSWORD)
    own_code = code_from(mail_sink, "owner@example.com", count=1)
    assert visitor.verify("owner@example.com", own_code).status_code == 303  # signed in
    assert visitor.login("owner@example.com", PASSWORD).status_code == 303
    assert attacker.login("owner@example.com", ATTACKER_PASSWORD).status_code == 400


def test_the_owners_link_works_after_a_later_signup_and_gives_the_owners_password(
    visitor: Browser, attacker: Browser, mail_sink: MailSink, database: Database
) -> None:
    visitor.signup("linked@example.com", password=PASSWORD)
    # Delivered before the next signup: each app has its own sender, and they race.
    code_from(mail_sink, "linked@example.com", count=1)
    attacker.signup("linked@example.com", password=ATTACKER_PASSWORD)
    link = link_from(mail_sink, "linked@example.com", "/verify-email", count=1)
    assert _confirm_link(visitor, link).status_code == 200  # type: ignore[attr-defined]
    assert _verified(database, "linked@example.com")
    assert attacker.login("linked@example.com", ATTACKER_PASSWORD).status_code == 400
    assert visitor.login("linked@example.com", PASSWORD).status_code == 303


def test_an_earlier_attackers_password_dies_when_the_owner_verifies_their_own_attempt(
    visitor: Browser, attacker: Browser, mail_sink: MailSink
) -> None:
    attacker.signup("first@example.com", password=ATTACKER_PASSWORD)
    # Delivered before the next signup: each app has its own sender, and they race.
    code_from(mail_sink, "first@example.com", count=1)
    visitor.signup("first@example.com", password=PASSWORD)
    second = code_from(mail_sink, "first@example.com", 2)
    assert visitor.verify("first@example.com", second).status_code == 303  # signed in
    assert attacker.login("first@example.com", ATTACKER_PASSWORD).status_code == 400
    assert visitor.login("first@example.com", PASSWORD).status_code == 303


# -- a new code never voids a live one ----------------------------------------------------------


def test_signing_in_before_verifying_mails_nothing_and_the_mailed_code_still_works(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    visitor.signup("later@example.com")
    code = code_from(mail_sink, "later@example.com")
    for _ in range(3):
        response = visitor.login("later@example.com")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/verify-email?email=")
    page = visitor.http.get(response.headers["location"])
    assert "not verified yet" in page.text and "Send a new code" in page.text
    assert _mails_to(database, "later@example.com") == 1  # the live code was not replaced
    assert visitor.verify("later@example.com", code).status_code == 303  # signed in


def test_sending_a_new_code_keeps_the_earlier_one_working(
    visitor: Browser, mail_sink: MailSink, database: Database
) -> None:
    visitor.signup("again@example.com")
    first = code_from(mail_sink, "again@example.com")
    visitor.submit("/verify-email", "/verify-email/resend", email="again@example.com")
    assert code_from(mail_sink, "again@example.com", count=2)
    assert visitor.verify("again@example.com", first).status_code == 303  # signed in
    assert _verified(database, "again@example.com")


# -- wrong codes count per address and client IP --------------------------------------------


def test_wrong_codes_from_another_ip_never_block_the_owner(
    proxied: Browser, mail_sink: MailSink, database: Database
) -> None:
    _from_ip(proxied, OWNER_IP).signup("target@example.com")
    code = code_from(mail_sink, "target@example.com")
    statuses = [
        _from_ip(proxied, ATTACKER_IP).verify("target@example.com", _wrong(code)).status_code
        for _ in range(11)
    ]
    assert statuses[:5] == [400] * 5 and set(statuses[5:]) == {429}
    assert _from_ip(proxied, OWNER_IP).verify("target@example.com", code).status_code == 303
    assert _verified(database, "target@example.com")


def test_the_emailed_link_works_however_many_codes_were_guessed(
    proxied: Browser, mail_sink: MailSink, database: Database
) -> None:
    _from_ip(proxied, OWNER_IP).signup("clicks@example.com")
    code = code_from(mail_sink, "clicks@example.com")
    for _ in range(11):
        _from_ip(proxied, ATTACKER_IP).verify("clicks@example.com", _wrong(code))
    link = link_from(mail_sink, "clicks@example.com", "/verify-email")
    # Even from the guessing IP: the 256-bit link is not a guess.
    assert _confirm_link(_from_ip(proxied, ATTACKER_IP), link).status_code == 200  # type: ignore[attr-defined]
    assert _verified(database, "clicks@example.com")


def test_after_five_wrong_codes_that_ip_waits_even_with_the_right_code(
    proxied: Browser, mail_sink: MailSink, database: Database
) -> None:
    browser = _from_ip(proxied, ATTACKER_IP)
    browser.signup("guessed@example.com")
    code = code_from(mail_sink, "guessed@example.com")
    for _ in range(5):
        assert browser.verify("guessed@example.com", _wrong(code)).status_code == 400
    refused = browser.verify("guessed@example.com", code)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "link" in refused.text  # the way that still works is named
    assert not _verified(database, "guessed@example.com")
