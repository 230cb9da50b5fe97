"""Mail: a transactional outbox, delivered once each over SMTP (or into .eml files)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from identity import repositories
from identity.config import Settings
from identity.db import Database
from identity.mail import SUBJECTS, Mailer, OutboxSender, parse_smtp_url
from identity.models import OutboxMessage

from .conftest import ISSUER, free_port
from .loops import run_in_own_loop

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# The documented context of each template.
CONTEXTS: dict[str, dict[str, Any]] = {
    # Mails anyone can trigger for any address carry no name (identity.mail.OPEN_TEMPLATES).
    "verify_email": {
        "code": "493817",
        "link": f"{ISSUER}/verify?token=verify-secret",
        "minutes": 15,
    },
    "signup_exists": {"login_link": f"{ISSUER}/login", "reset_link": f"{ISSUER}/password/reset"},
    "password_reset": {
        "link": f"{ISSUER}/password/reset?token=reset-secret",
        "minutes": 30,
    },
    "password_changed": {"name": "Ada", "reset_link": f"{ISSUER}/password/reset"},
    "email_change_confirm": {
        "link": f"{ISSUER}/email/confirm?token=change-secret",
        "minutes": 60,
        "new_email": "ada@new.example",
    },
    "email_change_notice": {"name": "Ada", "new_email": "ada@new.example"},
    # The second-factor notices (identity.accounts.factor_events.notify_owner).
    "second_factor_added": {
        "name": "Ada",
        "factor": "passkey",
        "reset_link": f"{ISSUER}/forgot-password",
    },
    "second_factor_removed": {
        "name": "Ada",
        "factor": "all",
        "reset_link": f"{ISSUER}/forgot-password",
    },
    "recovery_code_used": {
        "name": "Ada",
        "factor": "totp",
        "left": 9,
        "account_link": f"{ISSUER}/account",
        "reset_link": f"{ISSUER}/forgot-password",
    },
    # identity.accounts.federation_links.send_link_code
    "link_code": {"code": "482913", "provider": "Corp", "minutes": 10},
    # identity.accounts.operators.create_user(invite=True)
    "invitation": {
        "link": f"{ISSUER}/reset-password?token=invite-secret",
        "minutes": 4320,
        "reset_link": f"{ISSUER}/forgot-password",
    },
    "provider_linked": {
        "name": "Ada",
        "provider": "Google",
        "account_link": f"{ISSUER}/account",
        "reset_link": f"{ISSUER}/forgot-password",
    },
}


class Sink:
    """An SMTP server's DATA handler that keeps every mail it receives."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[EmailMessage] = []
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def start_sink(port: int, delay: float = 0.0) -> tuple[Sink, Controller]:
    sink = Sink(delay)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    return sink, controller


@pytest.fixture
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    port = free_port()
    sink, controller = start_sink(port)
    yield sink, port
    controller.stop()


@pytest.fixture
def smtp_settings(
    settings_for: Callable[..., Settings], smtp_sink: tuple[Sink, int], tmp_path: Path
) -> Settings:
    return settings_for(
        smtp_url=f"smtp://127.0.0.1:{smtp_sink[1]}",
        mail_from="identity <no-reply@id.example>",
        outbox_dir=tmp_path / "outbox",
    )


def enqueue(database: Database, settings: Settings, to: str, template: str = "verify_email") -> int:
    with database.transaction() as session:
        message = Mailer(settings, TEMPLATES).enqueue(session, to, template, **CONTEXTS[template])
        return message.id


def row(database: Database, message_id: int) -> OutboxMessage:
    with database.transaction() as session:
        message = session.get(OutboxMessage, message_id)
        assert message is not None
        return message


def test_enqueued_mail_is_delivered_over_smtp_with_text_and_html_parts(
    database: Database, smtp_settings: Settings, smtp_sink: tuple[Sink, int]
) -> None:
    sink, _ = smtp_sink
    enqueue(database, smtp_settings, "ada@example.com")
    assert OutboxSender(database, smtp_settings).deliver_due() == 1
    [received] = sink.messages
    assert received["From"] == "identity <no-reply@id.example>"
    assert received["To"] == "ada@example.com"
    assert received["Subject"] == "Confirm your email address"
    assert received["Message-ID"].endswith("@id.example>")
    assert received["Date"]
    text = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert text is not None and html is not None
    for part in (text, html):
        body = part.get_content()
        assert "493817" in body
        assert f"{ISSUER}/verify?token=verify-secret" in body
    assert 'href="http://127.0.0.1:8000/verify?token=verify-secret"' in html.get_content()


def test_delivered_row_is_marked_sent_and_its_bodies_are_blanked(
    database: Database, smtp_settings: Settings
) -> None:
    message_id = enqueue(database, smtp_settings, "ada@example.com")
    OutboxSender(database, smtp_settings).deliver_due()
    message = row(database, message_id)
    assert message.sent_at is not None
    assert (message.text_body, message.html_body) == ("", "")
    with database.transaction() as session:
        assert repositories.outbox_backlog(session) == 0


def test_mail_enqueued_in_a_rolled_back_transaction_is_never_sent(
    database: Database, smtp_settings: Settings, smtp_sink: tuple[Sink, int]
) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        Mailer(smtp_settings, TEMPLATES).enqueue(
            session, "ada@example.com", "verify_email", **CONTEXTS["verify_email"]
        )
        raise RuntimeError("the request failed after enqueueing")
    with database.transaction() as session:
        assert repositories.outbox_backlog(session) == 0
    assert OutboxSender(database, smtp_settings).deliver_due() == 0
    assert smtp_sink[0].messages == []


def test_mail_is_retried_with_backoff_while_smtp_is_down_and_then_sent_once(
    database: Database, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    settings = settings_for(smtp_url=f"smtp://127.0.0.1:{port}", outbox_dir=tmp_path / "outbox")
    message_id = enqueue(database, settings, "ada@example.com")
    clock = Clock()
    sender = OutboxSender(database, settings, clock=clock)

    assert sender.deliver_due() == 0
    failed = row(database, message_id)
    assert failed.sent_at is None
    assert failed.attempts == 1
    assert failed.last_error
    assert failed.next_attempt_at > clock.now
    assert sender.deliver_due() == 0  # not due again yet
    assert row(database, message_id).attempts == 1

    sink, controller = start_sink(port)
    try:
        clock.now = failed.next_attempt_at + timedelta(seconds=1)
        assert sender.deliver_due() == 1
        assert sender.deliver_due() == 0
        assert len(sink.messages) == 1
    finally:
        controller.stop()
    assert row(database, message_id).sent_at is not None


def test_two_racing_senders_deliver_each_mail_exactly_once(
    database: Database, smtp_settings: Settings, smtp_sink: tuple[Sink, int]
) -> None:
    sink, _ = smtp_sink
    addresses = {f"user{index}@example.com" for index in range(10)}
    for address in addresses:
        enqueue(database, smtp_settings, address)
    senders = [OutboxSender(database, smtp_settings) for _ in range(2)]
    start = threading.Barrier(len(senders))
    errors: list[BaseException] = []

    def drain(sender: OutboxSender) -> None:
        try:
            start.wait()
            while sender.deliver_due(limit=3):
                pass
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=drain, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    message_ids = [message["Message-ID"] for message in sink.messages]
    assert len(message_ids) == 10
    assert len(set(message_ids)) == 10
    assert {message["To"] for message in sink.messages} == addresses


def test_without_smtp_mail_is_written_as_a_private_eml_file_and_the_log_holds_no_secret(
    database: Database,
    settings_for: Callable[..., Settings],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = tmp_path / "outbox"
    settings = settings_for(outbox_dir=outbox)
    message_id = enqueue(database, settings, "ada@example.com")
    with caplog.at_level(logging.DEBUG):
        assert OutboxSender(database, settings).deliver_due() == 1
    path = outbox / f"{message_id:06d}-verify_email.eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    written = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(written, EmailMessage)
    text = written.get_body(("plain",))
    assert text is not None and "493817" in text.get_content()
    assert f"mail {message_id} (verify_email) to ada@example.com written to {path}" in caplog.text
    assert "493817" not in caplog.text
    assert "verify-secret" not in caplog.text


@pytest.mark.parametrize("template", sorted(SUBJECTS))
def test_every_template_renders_both_parts_from_its_documented_context(
    settings: Settings, template: str
) -> None:
    context = {**CONTEXTS[template], "name": "<b>Ada</b>"}
    if "name" not in CONTEXTS[template]:
        del context["name"]
    subject, text, html = Mailer(settings, TEMPLATES).render(template, **context)
    assert subject and "\n" not in subject
    assert text.strip() and html.strip()
    assert "<html" in html and "<html" not in text
    for key, value in context.items():
        if key.endswith("link"):
            assert value in text and f'href="{value}"' in html
    if "name" in context:
        assert "<b>Ada</b>" in text
        assert "&lt;b&gt;Ada&lt;/b&gt;" in html and "<b>Ada</b>" not in html


def test_every_subject_has_a_documented_context() -> None:
    assert set(SUBJECTS) == set(CONTEXTS)


def test_rendering_without_a_documented_context_value_fails(settings: Settings) -> None:
    context = dict(CONTEXTS["password_reset"])
    del context["minutes"]
    with pytest.raises(Exception, match="minutes"):
        Mailer(settings, TEMPLATES).render("password_reset", **context)


def test_unknown_template_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown mail template"):
        Mailer(settings, TEMPLATES).render("nonexistent")


def test_link_not_under_the_issuer_is_refused(settings: Settings) -> None:
    context = {**CONTEXTS["password_reset"], "link": "https://evil.example/reset?token=x"}
    with pytest.raises(ValueError, match="issuer"):
        Mailer(settings, TEMPLATES).render("password_reset", **context)


def test_smtp_password_never_appears_in_logs_when_delivery_fails(
    database: Database,
    settings_for: Callable[..., Settings],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "S3cret-Pa55word"
    url = f"smtp://mailer:{password}@127.0.0.1:{free_port()}"
    settings = settings_for(smtp_url=url, outbox_dir=tmp_path / "outbox")
    message_id = enqueue(database, settings, "ada@example.com")
    sender = OutboxSender(database, settings)
    with caplog.at_level(logging.DEBUG):
        assert sender.deliver_due() == 0
    assert "not delivered" in caplog.text
    assert password not in caplog.text
    assert password not in (row(database, message_id).last_error or "")


def test_smtp_credentials_are_not_sent_without_tls(
    database: Database,
    settings_for: Callable[..., Settings],
    smtp_sink: tuple[Sink, int],
    tmp_path: Path,
) -> None:
    sink, port = smtp_sink  # offers no STARTTLS
    url = f"smtp://mailer:secret@127.0.0.1:{port}"
    settings = settings_for(smtp_url=url, outbox_dir=tmp_path / "outbox")
    message_id = enqueue(database, settings, "ada@example.com")
    assert OutboxSender(database, settings).deliver_due() == 0
    assert "without TLS" in (row(database, message_id).last_error or "")
    assert sink.messages == []


def test_required_starttls_refuses_a_server_without_it(
    database: Database,
    settings_for: Callable[..., Settings],
    smtp_sink: tuple[Sink, int],
    tmp_path: Path,
) -> None:
    sink, port = smtp_sink
    url = f"smtp://127.0.0.1:{port}?starttls=require"
    settings = settings_for(smtp_url=url, outbox_dir=tmp_path / "outbox")
    message_id = enqueue(database, settings, "ada@example.com")
    assert OutboxSender(database, settings).deliver_due() == 0
    assert "STARTTLS" in (row(database, message_id).last_error or "")
    assert sink.messages == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example", ("mail.example", 587, False, False, None, None)),
        ("smtps://mail.example", ("mail.example", 465, True, False, None, None)),
        (
            "smtp://us%40er:p%3Ass%2Fw@mail.example:2525?starttls=require",
            ("mail.example", 2525, False, True, "us@er", "p:ss/w"),
        ),
    ],
)
def test_smtp_url_is_parsed_with_decoded_credentials_and_default_ports(
    url: str, expected: tuple[Any, ...]
) -> None:
    server = parse_smtp_url(url)
    parsed = (
        server.host,
        server.port,
        server.implicit_tls,
        server.require_starttls,
        server.username,
        server.password,
    )
    assert parsed == expected
    assert "p:ss" not in repr(server)


@pytest.mark.parametrize(
    "url", ["http://mail.example", "smtp://", "smtp://h?tls=1", "smtp://u:hunter2@h:notaport"]
)
def test_unusable_smtp_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_smtp_url(url)
    assert "hunter2" not in str(error.value)


def test_run_delivers_queued_mail_until_stopped(
    database: Database, smtp_settings: Settings, smtp_sink: tuple[Sink, int]
) -> None:
    enqueue(database, smtp_settings, "ada@example.com")
    sender = OutboxSender(database, smtp_settings)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop, interval=0.05))
        for _ in range(100):
            if smtp_sink[0].messages:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    run_in_own_loop(scenario)
    assert len(smtp_sink[0].messages) == 1


def test_run_survives_a_database_outage(
    settings_for: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "absent" / "identity.db"  # its folder does not exist: every query fails
    database = Database(f"sqlite:///{missing}")
    sender = OutboxSender(database, settings_for(outbox_dir=tmp_path / "outbox"))

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop, interval=0.01))
        await asyncio.sleep(0.1)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    try:
        with caplog.at_level(logging.WARNING, logger="identity.mail"):
            run_in_own_loop(scenario)
    finally:
        database.dispose()
    assert "mail outbox: database error, retrying: OperationalError" in caplog.text


def test_stopping_run_mid_batch_starts_no_new_send_and_loses_no_mail(
    database: Database, settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    sink, controller = start_sink(port, delay=0.3)
    settings = settings_for(smtp_url=f"smtp://127.0.0.1:{port}", outbox_dir=tmp_path / "outbox")
    for index in range(5):
        enqueue(database, settings, f"user{index}@example.com")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(OutboxSender(database, settings).run(stop, interval=0.05))
        while not sink.messages:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    try:
        run_in_own_loop(scenario)
        sent = len(sink.messages)
        assert 1 <= sent < 5
        # The rest stay claimed until the claim lapses, then another round sends them.
        later = OutboxSender(
            database, settings, clock=lambda: datetime.now(UTC) + timedelta(minutes=2)
        )
        assert later.deliver_due() == 5 - sent
    finally:
        controller.stop()
    assert len({message["To"] for message in sink.messages}) == 5
