"""``identity mail last``: the newest code or link mailed to an address, for development and
for trying the JSON API from a shell (the README's walk-through uses it)."""

from __future__ import annotations

import argparse
import email
import email.policy
import re
import time
from email.message import EmailMessage
from typing import Any

from identity import repositories
from identity.cli.common import CommandError, database_name, emit, open_database
from identity.config import Settings
from identity.mail import outbox_file
from identity.models import OutboxMessage

# The code stands on a line of its own in the mails that carry one (templates/email).
_CODE = re.compile(r"^\s*(\d{6})\s*$", re.MULTILINE)
_LINK = re.compile(r"https?://\S+")
_POLL_SECONDS = 0.1


def _find(settings: Settings, to: str, wait: float) -> tuple[OutboxMessage, str | None]:
    """The newest message to ``to`` and its text while the outbox still holds it. A mail is
    committed with the request that sends it, so the table has it as soon as the request
    answered; ``wait`` only covers a request still under way."""
    database = open_database(settings, reading=True)
    deadline = time.monotonic() + wait
    try:
        while True:
            with database.transaction() as session:
                message = repositories.latest_outbox_message(session, to)
                if message is not None:
                    return message, message.text_body or None
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"no mail to {to} in the outbox of {database_name(settings.database_url)}"
                )
            time.sleep(_POLL_SECONDS)
    finally:
        database.dispose()


def _delivered_text(settings: Settings, message: OutboxMessage) -> str:
    """The text of a mail the sender delivered: its row was blanked (codes are secrets), so
    it is read from the ``.eml`` file the file outbox wrote."""
    if settings.smtp_url is not None:
        raise CommandError(
            f"the newest mail to {message.to_address} ({message.template}) went out over SMTP "
            "and its text is not kept: read it in that mailbox"
        )
    path = outbox_file(settings.outbox_dir, message)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CommandError(
            f"the newest mail to {message.to_address} was written to {path.resolve()}, which "
            "is not there: run this in the folder of the server, or set IDENTITY_OUTBOX_DIR "
            "as it has it"
        ) from None
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    return str(body.get_content()) if body is not None else ""  # type: ignore[attr-defined]


def mail_last(args: argparse.Namespace, settings: Settings) -> None:
    if args.wait < 0:
        raise CommandError(f"--wait must be 0 or more seconds, not {args.wait}")
    message, text = _find(settings, args.to, args.wait)
    if text is None:
        text = _delivered_text(settings, message)
    code = _CODE.search(text)
    links = _LINK.findall(text)
    data: dict[str, Any] = {
        "to": message.to_address,
        "template": message.template,
        "subject": message.subject,
        "created_at": message.created_at.isoformat(),
        "sent_at": message.sent_at.isoformat() if message.sent_at else None,
        "code": code.group(1) if code else None,
        "link": links[0] if links else None,
    }
    shown = data["code"] or data["link"]
    if shown is None:
        raise CommandError(f"the newest mail to {message.to_address} has no code or link")
    emit(args, data, shown)


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``mail last``."""
    mail_commands = commands.add_parser(
        "mail", help="read the mail identity sent (the outbox)"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    last = mail_commands.add_parser(
        "last",
        parents=[common],
        help="the code (else the link) of the newest mail to an address",
        description="Print the code of the newest mail to an address, or its first link "
        "when it has no code (--json: both, and what the mail was). Reads the outbox table, "
        "and the .eml files of IDENTITY_OUTBOX_DIR for mail already delivered there.",
    )
    last.add_argument("--to", required=True, metavar="EMAIL", help="the address it was sent to")
    last.add_argument(
        "--wait",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for a first mail to that address (2)",
    )
    last.set_defaults(handler=mail_last)
