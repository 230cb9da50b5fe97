"""Mail to one address is capped whatever triggers it, and a mail anyone can trigger carries
no text the requester chose. Through the real app: the JSON API, the outbox and an SMTP sink."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.config import Settings
from identity.db import Database
from identity.mail import OPEN_TEMPLATES, Mailer
from identity.models import AuditEvent, OutboxMessage
from identity.rendering import TEMPLATES_DIR
from tests.conftest import ISSUER, MailSink
from tests.web_helpers import PASSWORD, link_from

EVIL_NAME = "Visit http://evil.example/prize or www.evil.example to claim your prize"
NEW_PASSWORD = "quartz-lantern-meadow-77"


@pytest.fixture
def http(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> TestClient:
    return app_for(settings_for(password_grant=True, smtp_url=mail_sink.url))


@pytest.fixture
def app_client(make_client: Callable[..., tuple[str, str | None]]) -> str:
    client_id, _ = make_client(
        public=True, first_party=True, grant_types=["password"], scope="openid"
    )
    return client_id


def _email(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.com"


def _account(
    http: TestClient, database: Database, email: str, *, name: str = "Ada", verified: bool = True
) -> None:
    with database.transaction() as session:
        operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=email,
            name=name,
            password=PASSWORD,
            verified=verified,
        )


def _outbox(database: Database, to: str) -> list[str]:
    with database.transaction() as session:
        query = select(OutboxMessage.template).where(OutboxMessage.to_address == to)
        return list(session.scalars(query.order_by(OutboxMessage.id)))


def _dropped(database: Database) -> list[dict[str, Any]]:
    with database.transaction() as session:
        query = select(AuditEvent.detail).where(AuditEvent.type == "mail.dropped")
        return list(session.scalars(query.order_by(AuditEvent.id)))


def _register(http: TestClient, email: str, name: str = "Ada") -> Any:
    return http.post("/api/v1/register", json={"email": email, "password": PASSWORD, "name": name})


def _login(http: TestClient, client_id: str, email: str) -> Any:
    return http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": email,
            "password": PASSWORD,
            "scope": "openid",
        },
    )


# -- the cap ------------------------------------------------------------------------------------


def test_twelve_logins_of_an_unverified_account_do_not_send_twelve_mails(
    http: TestClient, database: Database, app_client: str
) -> None:
    email = _email("flooded")
    _account(http, database, email, verified=False)
    for _ in range(12):
        assert _login(http, app_client, email).status_code == 400
    assert 1 <= len(_outbox(database, email)) <= 5


def test_mail_to_one_address_is_capped_across_every_trigger(
    http: TestClient, database: Database
) -> None:
    email = _email("target")
    _account(http, database, email)
    answers = []
    for _ in range(4):  # two triggers anyone can pull for any address
        answers.append(_register(http, email))
        answers.append(http.post("/api/v1/password/forgot", json={"email": email}))
    # The answers do not change when a mail is dropped: 202, "check your email", every time.
    assert {(a.status_code, a.text) for a in answers} == {(202, '{"status":"check_email"}')}
    assert len(_outbox(database, email)) == 5
    dropped = [detail["template"] for detail in _dropped(database)]
    assert dropped == ["password_reset", "signup_exists", "password_reset"]


def test_resends_and_resets_share_one_cap(http: TestClient, database: Database) -> None:
    email = _email("pending")
    assert _register(http, email).status_code == 202  # 1: the code
    for _ in range(3):  # 2-4: new codes
        assert http.post("/api/v1/verify-email/resend", json={"email": email}).status_code == 202
    for _ in range(3):  # 5, then two dropped
        assert http.post("/api/v1/password/forgot", json={"email": email}).status_code == 202
    assert _outbox(database, email) == ["verify_email"] * 4 + ["password_reset"]
    assert len(_dropped(database)) == 2


def test_a_security_notice_to_the_owner_is_sent_even_over_the_cap(
    http: TestClient, database: Database, mail_sink: MailSink
) -> None:
    email = _email("owner")
    _account(http, database, email)
    for _ in range(5):
        http.post("/api/v1/password/forgot", json={"email": email})
    token = link_from(mail_sink, email, "/reset-password", count=5).split("token=", 1)[1]
    reset = http.post("/api/v1/password/reset", json={"token": token, "password": NEW_PASSWORD})
    assert reset.status_code == 200
    # Someone who fills the cap must not be able to hide a password change from the owner.
    assert _outbox(database, email)[-1] == "password_changed"


# -- no text the requester chose ---------------------------------------------------------------


def test_the_verification_mail_does_not_print_the_display_name(
    http: TestClient, mail_sink: MailSink
) -> None:
    email = _email("named")
    assert _register(http, email, name=EVIL_NAME).status_code == 202
    text = MailSink.text(mail_sink.wait_for(email)[0])
    assert "evil" not in text and "prize" not in text


def test_the_reset_mail_does_not_print_the_display_name(
    http: TestClient, database: Database, mail_sink: MailSink
) -> None:
    email = _email("reset")
    _account(http, database, email, name=EVIL_NAME)
    http.post("/api/v1/password/forgot", json={"email": email})
    message = mail_sink.wait_for(email)[0]
    assert "evil" not in MailSink.text(message) and "prize" not in MailSink.text(message)
    html = message.get_body(preferencelist=("html",))
    assert html is not None and "evil" not in str(html.get_content())  # type: ignore[attr-defined]


def test_a_notice_prints_the_name_without_its_links(
    http: TestClient, database: Database, mail_sink: MailSink
) -> None:
    email = _email("notice")
    _account(http, database, email, name=EVIL_NAME)
    http.post("/api/v1/password/forgot", json={"email": email})
    token = link_from(mail_sink, email, "/reset-password").split("token=", 1)[1]
    http.post("/api/v1/password/reset", json={"token": token, "password": NEW_PASSWORD})
    notice = MailSink.text(mail_sink.wait_for(email, 2)[1])
    assert "password was changed" in notice.lower() or "password of your account" in notice
    assert "evil" not in notice and notice.splitlines()[0] == "Hi Visit or to claim your prize,"


@pytest.mark.parametrize("template", sorted(OPEN_TEMPLATES))
def test_a_mail_anyone_can_trigger_refuses_a_display_name(
    settings: Settings, template: str
) -> None:
    # The rule lives in the mailer, so no flow can put a name back by passing one.
    with pytest.raises(ValueError, match="requester chose"):
        Mailer(settings, TEMPLATES_DIR).render(template, name="Ada", link=f"{ISSUER}/x")
