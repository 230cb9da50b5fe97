"""Mail through a transactional outbox: requests add rows in their own transaction, and a
background sender delivers them over SMTP (or into ``.eml`` files), so no request waits on SMTP.

Bodies hold codes and links, which are secrets: nothing here logs a body, and sent rows are
blanked. Delivery is at least once: a mail sent just before its "sent" mark fails is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jinja2
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from identity import audit, metrics, repositories
from identity.config import Settings
from identity.db import Database
from identity.limits import RateLimiter
from identity.models import OutboxMessage, utcnow

log = logging.getLogger("identity.mail")

# Template name -> subject (a Jinja string, rendered with the mail's context).
SUBJECTS: dict[str, str] = {
    "verify_email": "Confirm your email address",
    "signup_exists": "Someone tried to create an account with your email",
    "password_reset": "Reset your password",
    "password_changed": "Your password was changed",
    "email_change_confirm": "Confirm your new email address",
    "email_change_notice": "Your email address is being changed",
    "second_factor_added": "A second factor was added to your account",
    "second_factor_removed": "A second factor was removed from your account",
    "recovery_code_used": "A recovery code was used to sign in to your account",
    "provider_linked": "{{ provider }} was linked to your account",
    "link_code": "Your code to link {{ provider }} to your account",
    "invitation": "You are invited to {{ product }}",
}

# Mails anyone can have sent to any address (by typing it into a form): they carry no text
# the requester chose, such as a display name (a "Hi Visit http://evil..." is phishing in our
# name), and over the address's cap they are dropped.
OPEN_TEMPLATES = frozenset(
    {"verify_email", "signup_exists", "password_reset", "email_change_confirm", "link_code"}
)
# Notices of a change to an account, sent to its own address by someone holding its
# password or mailbox. They count against the cap but are never dropped: whoever filled the
# cap with the mails above could otherwise hide a password or email change from the owner.
NOTICES = frozenset(
    {
        "password_changed",
        "email_change_notice",
        "second_factor_added",
        "second_factor_removed",
        "recovery_code_used",
        "provider_linked",
        # An operator's invitation to a new account (identity.accounts.operators): sent once,
        # by someone trusted, and the invitee has no other way in, so it is never dropped.
        "invitation",
    }
)
# Every mail to one address counts against this named limiter (identity.limits).
MAIL_CAP = "mail.address"

PRODUCT = "identity"
_CLAIM_FOR = timedelta(seconds=60)
# Stop starting sends well before the claim lapses, or another sender could take them too.
_SEND_BUDGET_SECONDS = 30.0
_SMTP_TIMEOUT_SECONDS = 10.0
_MAX_BACKOFF_SECONDS = 3600


_LINK_LIKE = re.compile(r"\S*(?:://|www\.|@)\S*|\S+\.[a-z]{2,}\S*", re.IGNORECASE)


def without_links(text: str) -> str:
    """``text`` without anything a mail client could turn into a link (URLs, domains,
    addresses): for the display names the notices greet people with."""
    return " ".join(_LINK_LIKE.sub(" ", text).split())


class Mailer:
    """Render a mail from ``templates_dir/email`` and add it to the outbox of a transaction.

    Every mail goes through ``enqueue``, so the per-address cap is kept here, once, whatever
    flow sends the mail. ``limiter`` is None only for tests that render or store mail alone."""

    def __init__(
        self, settings: Settings, templates_dir: Path, limiter: RateLimiter | None = None
    ) -> None:
        if set(SUBJECTS) != OPEN_TEMPLATES | NOTICES or OPEN_TEMPLATES & NOTICES:
            raise AssertionError("every mail template is either open or a notice")
        self._settings = settings
        self._limiter = limiter
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir),
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False, default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._env.filters["without_links"] = without_links
        # A missing template should stop the server at start, not fail a request later.
        for template in SUBJECTS:
            self._env.get_template(f"email/{template}.txt")
            self._env.get_template(f"email/{template}.html")

    def render(self, template: str, **context: Any) -> tuple[str, str, str]:
        """(subject, text body, HTML body) of ``template``; ValueError for an unknown one."""
        if template not in SUBJECTS:
            raise ValueError(f"unknown mail template {template!r}")
        if template in OPEN_TEMPLATES and "name" in context:
            raise ValueError(f"mail {template!r} must not carry text the requester chose")
        for key, value in context.items():
            # Links built from the request's Host header would let anyone aim reset mails
            # at their own site; only the configured issuer is trusted.
            if (key == "link" or key.endswith("_link")) and not str(value).startswith(
                self._settings.issuer + "/"
            ):
                raise ValueError(f"mail link {key!r} must start with the issuer")
        values = {"issuer": self._settings.issuer, "product": PRODUCT, **context}
        subject = self._env.from_string(SUBJECTS[template]).render(values)
        text = self._env.get_template(f"email/{template}.txt").render(values)
        html = self._env.get_template(f"email/{template}.html").render(values)
        # A line break in a header would start a header of its own.
        return " ".join(subject.split()), text, html

    def enqueue(
        self, session: Session, to: str, template: str, **context: Any
    ) -> OutboxMessage | None:
        """Add the mail to ``session``'s transaction: it is sent only if that commits. None
        when ``to`` is over its cap: the mail is dropped and audited, and the caller's answer
        to whoever asked must not change (it would tell them about the address)."""
        if "@" not in to or any(char in to for char in "\r\n"):
            raise ValueError("not a mail address")
        # Rendered before the cap is checked, so a dropped mail costs what a sent one does.
        subject, text, html = self.render(template, **context)
        if not self._within_cap(session, to, template):
            return None
        message = OutboxMessage(
            to_address=to, subject=subject, template=template, text_body=text, html_body=html
        )
        repositories.add_outbox_message(session, message)
        return message

    def _within_cap(self, session: Session, to: str, template: str) -> bool:
        if self._limiter is None:
            return True
        decision = self._limiter.hit(MAIL_CAP, to.strip().lower())
        if decision.allowed or template in NOTICES:
            return True
        # No address in the row: the limiter's name and the template say what happened.
        audit.record(
            session,
            "mail.dropped",
            outcome="failure",
            detail={"template": template, "limiter": MAIL_CAP},
        )
        log.info("mail %s to one address over its cap: dropped", template)
        return False


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send: parsed from ``smtp://`` or ``smtps://`` URLs."""

    host: str
    port: int
    implicit_tls: bool
    require_starttls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpServer:
    """Parse ``smtp[s]://[user[:pass]@]host[:port][?starttls=require]``.

    Errors never repeat the URL: it may hold the password."""
    parts = urlsplit(url)
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        raise ValueError("IDENTITY_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
    query = parse_qs(parts.query, keep_blank_values=True)
    if set(query) - {"starttls"} or query.get("starttls", ["require"]) != ["require"]:
        raise ValueError("IDENTITY_SMTP_URL accepts only the query ?starttls=require")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("IDENTITY_SMTP_URL has an invalid port") from None
    implicit_tls = parts.scheme == "smtps"
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 587),
        implicit_tls=implicit_tls,
        require_starttls="starttls" in query,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


class OutboxSender:
    """Deliver due outbox rows. Safe to run in several workers at once."""

    def __init__(
        self, database: Database, settings: Settings, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._database = database
        self._settings = settings
        self._clock = clock
        self._smtp = parse_smtp_url(settings.smtp_url) if settings.smtp_url else None
        domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
        self._domain = domain or "localhost"

    def deliver_due(self, limit: int = 20, halt: threading.Event | None = None) -> int:
        """Claim due messages (one short transaction), send each outside any transaction, then
        record sent/failed (one short transaction each). Returns how many were delivered."""
        with self._database.transaction() as session:
            claimed = repositories.claim_due_messages(
                session, self._clock(), limit=limit, claim_for=_CLAIM_FOR
            )
        delivered = 0
        deadline = time.monotonic() + _SEND_BUDGET_SECONDS
        for message in claimed:
            if (halt is not None and halt.is_set()) or time.monotonic() > deadline:
                break  # stopping, or the claim nears its end: the rest wait for it to lapse
            try:
                self._deliver(message)
            except Exception as error:  # any failure of one mail must not block the others
                self._record_failure(message, error)
                continue
            with self._database.transaction() as session:
                repositories.mark_message_sent(session, message.id, self._clock())
            delivered += 1
        return delivered

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Deliver due mail every ``interval`` seconds until ``stop`` is set; never dies."""
        # The batch runs in a thread, which cannot wait on an asyncio.Event: mirror it.
        halt = threading.Event()
        watcher = asyncio.create_task(stop.wait())
        watcher.add_done_callback(lambda _: halt.set())
        try:
            await self._loop(stop, interval, halt)
        finally:
            watcher.cancel()

    async def _loop(self, stop: asyncio.Event, interval: float, halt: threading.Event) -> None:
        while not stop.is_set():
            busy = False
            try:
                busy = await run_in_threadpool(self.deliver_due, 20, halt) > 0
            except DBAPIError as error:
                # The type only: the message may carry statement parameters.
                log.warning("mail outbox: database error, retrying: %s", type(error).__name__)
            except Exception:
                log.exception("mail outbox: delivery round failed")
            if busy:
                continue  # a backlog drains without waiting between batches
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def _record_failure(self, message: OutboxMessage, error: Exception) -> None:
        metrics.count_mail_failure()
        reason = f"{type(error).__name__}: {error}"
        if self._smtp is not None and self._smtp.password:
            reason = reason.replace(self._smtp.password, "***")
        delay = min(5 * 2 ** min(message.attempts, 20), _MAX_BACKOFF_SECONDS)
        retry_at = self._clock() + timedelta(seconds=delay)
        with self._database.transaction() as session:
            repositories.mark_message_failed(session, message.id, reason, retry_at)
        log.warning(
            "mail %s (%s) not delivered (attempt %d), retrying at %s: %s",
            message.id,
            message.template,
            message.attempts + 1,
            retry_at.isoformat(timespec="seconds"),
            reason,
        )

    def _deliver(self, message: OutboxMessage) -> None:
        email = self._email(message)
        if self._smtp is None:
            path = self._write_eml(message, email)
            log.info(
                "mail %s (%s) to %s written to %s",
                message.id,
                message.template,
                message.to_address,
                path,
            )
        else:
            _send(self._smtp, email)

    def _email(self, message: OutboxMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self._settings.mail_from
        email["To"] = message.to_address
        email["Subject"] = message.subject
        email["Date"] = format_datetime(message.created_at)
        # Stable across retries, so a receiver can drop a mail sent twice.
        stamp = int(message.created_at.timestamp())
        email["Message-ID"] = f"<{PRODUCT}.{message.id}.{stamp}@{self._domain}>"
        email.set_content(message.text_body)
        email.add_alternative(message.html_body, subtype="html")
        return email

    def _write_eml(self, message: OutboxMessage, email: EmailMessage) -> Path:
        directory = self._settings.outbox_dir
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = outbox_file(directory, message)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(path, flags, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # a file left by an earlier attempt keeps its mode
            file.write(email.as_bytes())
        return path


def outbox_file(directory: Path, message: OutboxMessage) -> Path:
    """Where the sender writes ``message`` when no SMTP server is set (``identity mail
    last`` reads it there once the row's body is blanked)."""
    return directory / f"{message.id:06d}-{message.template}.eml"


def _send(server: SmtpServer, email: EmailMessage) -> None:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if server.implicit_tls:
        client = smtplib.SMTP_SSL(
            server.host, server.port, timeout=_SMTP_TIMEOUT_SECONDS, context=context
        )
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=_SMTP_TIMEOUT_SECONDS)
    with client:
        client.ehlo()
        encrypted = server.implicit_tls
        if not encrypted and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
            encrypted = True
        if not encrypted and server.require_starttls:
            raise smtplib.SMTPNotSupportedError("the SMTP server does not offer STARTTLS")
        if server.username is not None:
            if not encrypted:
                raise smtplib.SMTPNotSupportedError("refusing to send SMTP credentials without TLS")
            client.login(server.username, server.password or "")
        client.send_message(email)
