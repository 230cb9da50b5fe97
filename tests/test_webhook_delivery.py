"""The webhook sender: signed Standard Webhooks deliveries to a real local receiver, verified
with the ``standardwebhooks`` package; retries on a clock the test moves (no real waits),
claims shared by two deliverers, rotation overlap, and the address check at delivery time."""

from __future__ import annotations

import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from identity import audit, repositories, webhook_events, webhooks
from identity.accounts import operators
from identity.admin_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, User, utcnow
from identity.secret_box import SecretBox
from identity.services import build_services
from identity.webhook_delivery import WebhookSender
from tests.conftest import (
    MailSink,
    free_port,
    remember_secret,
    run_cli,
    served_environment,
    stop_process,
    wait_until_up,
)
from tests.loops import run_in_own_loop
from tests.web_helpers import PASSWORD, Browser, code_from

_CLI = RequestContext.command_line()


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that keeps every request it gets and answers
    with the next status of ``statuses`` (the last one repeats)."""

    def __init__(
        self,
        statuses: list[int] | None = None,
        delay: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses = list(statuses or [204])
        self.delay = delay
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.requests.append((self.path, dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else None
                    status = status or receiver.statuses[0]
                time.sleep(receiver.delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", "/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def verified(self, secret: str, index: int = -1) -> dict[str, Any]:
        """The JSON of request ``index``, after checking its signature with ``secret``."""
        _, headers, body = self.requests[index]
        return dict(standardwebhooks.Webhook(secret).verify(body, headers))

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.requests) >= count, f"{len(self.requests)} of {count} requests came"


class Clock:
    """Now, moved on by the test: the signatures stay within the receiver's 5 minutes."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, **duration: float) -> None:
        self.offset += timedelta(**duration)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def hook_settings(settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(webhooks_allow_private=True)


@pytest.fixture
def box(hook_settings: Settings) -> SecretBox:
    # The box the app builds from the same settings: endpoints added here open there.
    return SecretBox.from_sources(hook_settings.secret_key, hook_settings.keys_dir)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sender(
    database: Database, hook_settings: Settings, box: SecretBox, clock: Clock
) -> WebhookSender:
    return WebhookSender(database, hook_settings, box, clock=clock, jitter=lambda: 1.0)


def add(database: Database, box: SecretBox, url: str, events: str = "*") -> webhooks.NewEndpoint:
    with database.transaction() as session:
        added = webhooks.add_endpoint(
            session, box, url=url, events=[events], allow_private=True, actor="admin", context=_CLI
        )
    remember_secret(added.secret)
    return added


def record(database: Database, type: str, subject: str | None = None, **detail: Any) -> None:
    with database.transaction() as session:
        audit.record(session, type, context=_CLI, subject=subject, detail=detail)


def run_round(sender: WebhookSender) -> int:
    sender.dispatch()
    return run_in_own_loop(lambda: sender.deliver_due())


def delivery(database: Database) -> WebhookDelivery:
    with database.transaction() as session:
        return session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).one()


# -- signed, with the user's id and email ------------------------------------------------------


def test_a_user_created_on_the_command_line_reaches_the_receiver_signed(
    database: Database,
    hook_settings: Settings,
    box: SecretBox,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    added = add(database, box, receiver.url, "user.*")
    accounts = build_services(hook_settings, database).accounts
    with database.transaction() as session:
        user = operators.create_user(
            accounts, session, email="ada@example.com", name="Ada", password=PASSWORD, verified=True
        )
        user_id = str(user.id)
    assert run_round(sender) == 1
    _, headers, _ = receiver.requests[0]
    message = receiver.verified(added.secret)
    assert message["type"] == "user.created"
    assert message["data"] == {"id": user_id, "email": "ada@example.com"}
    assert message["timestamp"].endswith("Z")
    assert headers["webhook-id"].startswith("msg_")
    assert headers["content-type"] == "application/json"
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        receiver.verified(webhooks.new_secret())
    assert delivery(database).status == "delivered"


def test_a_signup_reaches_the_receiver_through_the_running_server(
    app_for: Callable[[Settings], Any],
    settings_for: Callable[..., Settings],
    database: Database,
    box: SecretBox,
    receiver: Receiver,
    mail_sink: MailSink,
) -> None:
    settings = settings_for(webhooks_allow_private=True, smtp_url=mail_sink.url)
    added = add(database, box, receiver.url, "user.created user.verified")
    browser = Browser(app_for(settings))
    assert browser.signup("grace@example.com").status_code == 303
    receiver.wait_for(1)  # sent by the app's own sender, started in its lifespan
    created = receiver.verified(added.secret, 0)
    assert created["type"] == "user.created" and created["data"]["email"] == "grace@example.com"
    browser.verify("grace@example.com", code_from(mail_sink, "grace@example.com"))
    receiver.wait_for(2)
    verified = receiver.verified(added.secret, 1)
    assert verified["type"] == "user.verified"
    assert verified["data"] == created["data"]


def test_a_deleted_users_event_still_carries_their_email(
    database: Database,
    hook_settings: Settings,
    box: SecretBox,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    accounts = build_services(hook_settings, database).accounts
    with database.transaction() as session:
        user = operators.create_user(
            accounts, session, email="lin@example.com", name="Lin", password=PASSWORD, verified=True
        )
    added = add(database, box, receiver.url, "user.deleted")
    with database.transaction() as session:
        found = repositories.get_user(session, user.id)
        assert found is not None
        operators.delete_user(accounts, session, found)
    run_round(sender)
    message = receiver.verified(added.secret)
    assert message["type"] == "user.deleted"
    assert message["data"] == {"id": str(user.id), "email": "lin@example.com"}


def test_other_events_carry_the_audit_fields_without_secrets(
    database: Database, box: SecretBox, sender: WebhookSender, receiver: Receiver
) -> None:
    added = add(database, box, receiver.url, "login.*")
    record(database, "login.failed", subject=None, reason="unknown_account")
    run_round(sender)
    message = receiver.verified(added.secret)
    assert message["type"] == "login.failed"
    assert message["data"] == {
        "subject": None,
        "client_id": None,
        "outcome": "success",
        "actor": None,
        "detail": {"reason": "unknown_account"},
    }


def test_only_matching_endpoints_get_an_event(
    database: Database, box: SecretBox, sender: WebhookSender, receiver: Receiver
) -> None:
    with Receiver() as other:
        add(database, box, receiver.url, "login.succeeded")
        add(database, box, other.url, "mfa.*")
        record(database, "login.succeeded", subject=str(uuid.uuid4()))
        record(database, "token.issued")  # no webhook event
        assert run_round(sender) == 1
    assert len(receiver.requests) == 1 and other.requests == []


# -- outbox: nothing for a change that rolled back -------------------------------------------


def test_a_rolled_back_change_writes_and_sends_nothing(
    database: Database, box: SecretBox, sender: WebhookSender, receiver: Receiver
) -> None:
    add(database, box, receiver.url)
    with pytest.raises(RuntimeError), database.transaction() as session:
        user = User(email="gone@example.com", name="", password_hash=None)
        repositories.add_user(session, user)
        audit.record(session, "user.created", context=_CLI, subject=str(user.id))
        assert repositories.count_webhook_events(session) == 1
        raise RuntimeError("the change fails after its event was written")
    with database.transaction() as session:
        assert repositories.count_webhook_events(session) == 0
    assert run_round(sender) == 0
    assert receiver.requests == []


# -- retries -------------------------------------------------------------------------------


def test_a_receiver_that_fails_then_recovers_gets_the_event_again_with_the_same_id(
    database: Database, box: SecretBox, sender: WebhookSender, clock: Clock
) -> None:
    with Receiver(statuses=[503, 204]) as flaky:
        added = add(database, box, flaky.url, "user.*")
        record(database, "user.disabled", subject=str(uuid.uuid4()))
        assert run_round(sender) == 0
        first = delivery(database)
        assert first.status == "pending" and first.attempts == 1
        assert first.last_status_code == 503
        assert first.next_attempt_at - clock() <= timedelta(seconds=60)  # the first retry
        assert run_round(sender) == 0 and len(flaky.requests) == 1  # not due yet
        clock.advance(seconds=61)
        assert run_round(sender) == 1
    ids = [headers["webhook-id"] for _, headers, _ in flaky.requests]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert flaky.verified(added.secret, 0) == flaky.verified(added.secret, 1)
    with database.transaction() as session:
        attempts = repositories.webhook_attempts(session, first.id)
        endpoint = webhooks.get_endpoint(session, added.endpoint.id)
        assert endpoint.failing_since is None  # a success ends the run of failures
    assert [a.status_code for a in attempts] == [503, 204]
    assert all(a.response_ms >= 0 for a in attempts)
    assert delivery(database).status == "delivered"


def test_retries_follow_the_schedule_then_give_up(
    database: Database,
    settings_for: Callable[..., Settings],
    box: SecretBox,
    clock: Clock,
) -> None:
    settings = settings_for(webhooks_allow_private=True, webhooks_retry_seconds=(30, 120))
    sender = WebhookSender(database, settings, box, clock=clock, jitter=lambda: 1.0)
    with Receiver(statuses=[500]) as broken:
        add(database, box, broken.url)
        record(database, "password.changed", subject=str(uuid.uuid4()))
        run_round(sender)
        waits = []
        for _ in range(2):
            pending = delivery(database)
            waits.append(round((pending.next_attempt_at - clock()).total_seconds()))
            clock.advance(seconds=waits[-1] + 1)
            run_round(sender)
        assert len(broken.requests) == 3
    assert waits == [30, 120]
    failed = delivery(database)
    assert failed.status == "failed" and failed.attempts == 3 and failed.last_error == "HTTP 500"


def test_an_endpoint_failing_for_too_long_is_disabled_and_audited(
    database: Database,
    settings_for: Callable[..., Settings],
    box: SecretBox,
    clock: Clock,
) -> None:
    settings = settings_for(
        webhooks_allow_private=True,
        webhooks_retry_seconds=(60, 60, 60),
        webhooks_disable_after_seconds=3600,
    )
    sender = WebhookSender(database, settings, box, clock=clock, jitter=lambda: 1.0)
    with Receiver(statuses=[500]) as broken:
        added = add(database, box, broken.url)
        record(database, "email.changed", subject=str(uuid.uuid4()))
        run_round(sender)
        clock.advance(minutes=30)
        run_round(sender)
        with database.transaction() as session:
            assert webhooks.get_endpoint(session, added.endpoint.id).enabled
        clock.advance(minutes=31)
        run_round(sender)
        clock.advance(minutes=2)
        assert run_round(sender) == 0
        assert len(broken.requests) == 3  # none after it was disabled
    with database.transaction() as session:
        endpoint = webhooks.get_endpoint(session, added.endpoint.id)
        assert not endpoint.enabled and endpoint.disabled_reason
        assert endpoint.disabled_reason.startswith("every delivery failed since")
        types = session.scalars(select(AuditEvent.type).where(AuditEvent.subject == endpoint.id))
        assert "webhook.disabled" in list(types)


def test_redirects_are_not_followed(
    database: Database, box: SecretBox, sender: WebhookSender
) -> None:
    with Receiver(statuses=[307]) as moving:
        add(database, box, moving.url)
        record(database, "password.reset", subject=str(uuid.uuid4()))
        assert run_round(sender) == 0
        assert [path for path, _, _ in moving.requests] == ["/hook"]
    assert delivery(database).last_status_code == 307


def test_redelivery_sends_the_same_message_again(
    database: Database, box: SecretBox, sender: WebhookSender, receiver: Receiver
) -> None:
    added = add(database, box, receiver.url)
    record(database, "mfa.added", subject=str(uuid.uuid4()))
    run_round(sender)
    with database.transaction() as session:
        first = webhooks.recent_deliveries(session, added.endpoint.id)[0]
        webhooks.redeliver(session, first["id"], actor="admin", context=_CLI)
    assert run_round(sender) == 1
    assert receiver.requests[0][1]["webhook-id"] == receiver.requests[1][1]["webhook-id"]
    with database.transaction() as session:
        rows = webhooks.recent_deliveries(session, added.endpoint.id)
    assert [r["status"] for r in rows] == ["delivered", "delivered"]
    assert rows[0]["message_id"] == rows[1]["message_id"] == first["message_id"]
    assert rows[1]["last_status_code"] == 204 and rows[1]["last_response_ms"] is not None


# -- claims: several deliverers ------------------------------------------------------------


def test_two_deliverers_deliver_each_attempt_once(
    database_url: str,
    database: Database,
    hook_settings: Settings,
    box: SecretBox,
) -> None:
    with Receiver(delay=0.02) as slow:
        add(database, box, slow.url)
        for _ in range(12):
            record(database, "client.created")
        workers = [Database(database_url) for _ in range(2)]
        senders = [WebhookSender(w, hook_settings, box) for w in workers]
        senders[0].dispatch()
        start = threading.Barrier(2)

        def work(sender: WebhookSender) -> None:
            start.wait()
            while run_in_own_loop(lambda: sender.deliver_due(limit=3)):
                pass

        threads = [threading.Thread(target=work, args=(s,)) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for worker in workers:
            worker.dispose()
    ids = [headers["webhook-id"] for _, headers, _ in slow.requests]
    assert len(ids) == 12 and len(set(ids)) == 12
    with database.transaction() as session:
        assert len(session.scalars(select(WebhookAttempt.id)).all()) == 12


# -- secret rotation -------------------------------------------------------------------------


def test_during_a_rotation_overlap_both_secrets_verify(
    database: Database, box: SecretBox, sender: WebhookSender, clock: Clock, receiver: Receiver
) -> None:
    added = add(database, box, receiver.url)
    with database.transaction() as session:
        new = webhooks.rotate_secret(
            session, box, added.endpoint.id, overlap=timedelta(hours=1), actor="admin", context=_CLI
        )
    remember_secret(new)
    record(database, "token.revoked", subject=str(uuid.uuid4()))
    run_round(sender)
    assert receiver.verified(added.secret) == receiver.verified(new)
    assert len(receiver.requests[0][1]["webhook-signature"].split(" ")) == 2
    clock.advance(minutes=61)  # past the overlap (and the receiver's 5 minutes: signed by hand)
    record(database, "token.revoked", subject=str(uuid.uuid4()))
    run_round(sender)
    _, headers, body = receiver.requests[-1]
    stamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = standardwebhooks.Webhook(new).sign(headers["webhook-id"], stamp, body)
    assert headers["webhook-signature"] == expected


# -- the address check at delivery time ------------------------------------------------------


def test_delivery_connects_to_the_address_the_name_resolved_to(
    database: Database, hook_settings: Settings, box: SecretBox, receiver: Receiver
) -> None:
    resolved: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    sender = WebhookSender(database, hook_settings, box, resolve=resolve)
    added = add(database, box, f"http://hooks.invalid:{receiver.port}/hook")
    record(database, "client.deleted")
    assert run_round(sender) == 1
    assert resolved == ["hooks.invalid"]
    assert receiver.requests[0][1]["host"] == f"hooks.invalid:{receiver.port}"
    receiver.verified(added.secret)


def _certificate(name: str, folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = utcnow()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize(("served_as", "delivered"), [("hooks.test", 1), ("other.test", 0)])
def test_https_goes_to_the_checked_address_and_verifies_the_certificate_for_the_name(
    database: Database,
    hook_settings: Settings,
    box: SecretBox,
    tmp_path: Path,
    served_as: str,
    delivered: int,
) -> None:
    cert_file, key_file = _certificate(served_as, tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    trusting = ssl.create_default_context(cafile=str(cert_file))
    with Receiver(tls=server_tls) as secure:
        sender = WebhookSender(
            database, hook_settings, box, resolve=lambda host, port: ["127.0.0.1"], tls=trusting
        )
        added = add(database, box, f"https://hooks.test:{secure.port}/hook")
        record(database, "client.created")
        assert run_round(sender) == delivered
        if delivered:
            assert secure.requests[0][1]["host"] == f"hooks.test:{secure.port}"
            secure.verified(added.secret)
        else:  # the certificate is for another name than the URL's: refused
            error = delivery(database).last_error or ""
            assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate" in error.lower()
            assert secure.requests == []


def test_a_name_that_now_resolves_to_a_private_address_is_refused_at_delivery(
    database: Database, settings_for: Callable[..., Settings], box: SecretBox
) -> None:
    with database.transaction() as session:
        endpoint = webhooks.add_endpoint(
            session,
            box,
            url="https://hooks.example.com/in",
            events=["*"],
            allow_private=False,
            actor="admin",
            context=_CLI,
            resolve=lambda host, port: ["93.184.215.14"],  # public when it was added
        ).endpoint
    rebound = WebhookSender(
        database,
        settings_for(),  # private addresses not allowed
        box,
        resolve=lambda host, port: ["127.0.0.1"],  # then the name moves (DNS rebinding)
    )
    record(database, "user.enabled", subject=str(uuid.uuid4()))
    assert run_round(rebound) == 0
    refused = delivery(database)
    assert refused.status == "pending" and refused.last_status_code is None
    assert refused.last_error and "127.0.0.1, which is not a public address" in refused.last_error
    assert refused.endpoint_id == endpoint.id


def test_the_address_check_refuses_any_private_address_among_several() -> None:
    def mixed(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    with pytest.raises(webhooks.WebhookError, match=r"10\.0\.0\.7"):
        webhooks.checked_addresses("hooks.example.com", 443, allow_private=False, resolve=mixed)
    allowed = webhooks.checked_addresses("x.test", 443, allow_private=True, resolve=mixed)
    assert [str(a) for a in allowed] == ["93.184.215.14", "10.0.0.7"]


def test_the_outbox_is_left_alone_when_no_endpoint_is_enabled(
    database: Database, box: SecretBox, sender: WebhookSender
) -> None:
    webhook_events.PRESENCE.forget()
    record(database, "login.succeeded", subject=str(uuid.uuid4()))
    with database.transaction() as session:
        assert repositories.count_webhook_events(session) == 0
        assert session.scalars(select(WebhookEndpoint)).all() == []
    assert run_round(sender) == 0


def test_settled_deliveries_are_forgotten_after_thirty_days_pending_ones_never(
    database: Database, box: SecretBox, sender: WebhookSender, clock: Clock
) -> None:
    with Receiver(statuses=[204, 500]) as half:
        add(database, box, half.url)
        record(database, "client.created")
        run_round(sender)  # delivered
        record(database, "client.updated")
        run_round(sender)  # pending, retried later
    clock.advance(days=31)
    assert sender.prune() == 1
    with database.transaction() as session:
        left = session.scalars(select(WebhookDelivery)).all()
        assert [d.status for d in left] == ["pending"]
        assert repositories.count_webhook_events(session) == 1
        attempts = session.scalars(select(WebhookAttempt)).all()
        assert [a.delivery_id for a in attempts] == [left[0].id]  # the others' went with them


# -- a served instance: the CLI's event delivered once by one of two workers --------------------


@pytest.mark.system
def test_a_served_instance_delivers_an_event_of_the_command_line_once(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    port = free_port()
    env = served_environment(database_url, redis_url, f"{redis_prefix}hooks:", tmp_path, port)
    env["IDENTITY_WEBHOOKS_ALLOW_PRIVATE"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port), "--workers", "2"], env=env
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        added = run_cli(env, "webhooks", "add", "--url", receiver.url, "--events", "user.*")
        remember_secret(added["secret"])
        user = run_cli(
            env, "users", "create", "--email", "sam@example.com", "--name", "Sam",
            "--password", PASSWORD, "--verified",
        )  # fmt: skip
        receiver.wait_for(1)
        time.sleep(2)  # time enough for a second worker to send it again, were it to
    finally:
        stop_process(process)
    assert len(receiver.requests) == 1
    message = receiver.verified(added["secret"])
    assert message["data"] == {"id": user["id"], "email": "sam@example.com"}
