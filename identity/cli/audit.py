"""The ``identity audit`` commands: list, tail and prune the security event log."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from identity import audit
from identity.accounts import operators
from identity.accounts.errors import AccountError
from identity.cli.common import CommandError, emit, open_database, write
from identity.config import Settings
from identity.models import utcnow


def _columns(when: str, kind: str, outcome: str, subject: str, client: str, ip: str) -> str:
    return f"{when:<25}  {kind:<24} {outcome:<8} {subject:<36}  {client}  {ip}"


# Over the columns of the text output, so a reader knows a subject from a client.
_HEADER = _columns("TIME", "TYPE", "OUTCOME", "SUBJECT", "CLIENT", "IP")


def _audit_line(row: dict[str, Any]) -> str:
    when = datetime.fromisoformat(row["occurred_at"]).isoformat(timespec="seconds")
    return _columns(
        when,
        row["type"],
        row["outcome"],
        row["subject"] or "-",
        row["client_id"] or "-",
        row["ip"] or "-",
    )


def _positive(text: str, option: str, kind: Callable[[str], Any] = int) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise CommandError(f"{option} must be a positive number, not {text!r}")
    return value


def _audit_subject(session: Session, user: str) -> str:
    """Events keep the user id: an email is looked up; an id is taken as it is (the account
    may be deleted by now, its events are not)."""
    try:
        return str(uuid.UUID(user))
    except ValueError:
        pass
    if "@" not in user:
        raise CommandError(f"no user {user!r}: give a user id or an email")
    try:
        return str(operators.find_user(session, user).id)
    except AccountError:
        raise CommandError(f"no user {user!r}") from None


def _audit_selection(args: argparse.Namespace, session: Session) -> audit.AuditFilter:
    try:
        since = audit.parse_since(args.since, utcnow()) if args.since else None
    except audit.AuditQueryError as error:
        raise CommandError(f"--since: {error}") from None
    return audit.AuditFilter(
        subject=_audit_subject(session, args.user) if args.user else None,
        client_id=args.client,
        type_prefix=args.type,
        since=since,
    )


def audit_list(args: argparse.Namespace, settings: Settings) -> None:
    limit = _positive(args.limit, "--limit")
    with open_database(settings, reading=True).transaction() as session:
        selection = _audit_selection(args, session)
        rows = [audit.as_dict(event) for event in audit.latest(session, selection, limit)]
    lines = [_HEADER, *(_audit_line(row) for row in rows)] if rows else ["no events"]
    emit(args, rows, "\n".join(lines))


def audit_tail(args: argparse.Namespace, settings: Settings) -> None:
    limit = _positive(args.limit, "--limit")
    interval = _positive(args.interval, "--interval", float)
    database = open_database(settings, reading=True)

    def show(row: dict[str, Any]) -> None:
        write(json.dumps(row, default=str) if args.json else _audit_line(row))

    try:
        with database.transaction() as session:
            selection = _audit_selection(args, session)
            rows = [audit.as_dict(event) for event in audit.latest(session, selection, limit)]
        if not args.json:
            write(_HEADER)  # once the filters were found good: an error is then the only line
        for row in rows:
            show(row)
        after_id = rows[-1]["id"] if rows else None
        for row in audit.follow(
            database.transaction, selection, after_id, interval=interval, max_polls=args.max_polls
        ):
            show(row)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how tail ends


def audit_prune(args: argparse.Namespace, settings: Settings) -> None:
    try:
        older_than = audit.parse_duration(args.older_than)
        before = audit.ago(older_than, utcnow(), args.older_than)
    except audit.AuditQueryError as error:
        raise CommandError(f"--older-than: {error}") from None
    if older_than < timedelta(days=1) and not args.force:
        raise CommandError(
            f"--older-than {args.older_than} would delete events of the last day; "
            "add --force if that is what you mean"
        )
    with open_database(settings).transaction() as session:
        count = audit.prune(session, before, forced=args.force)
    emit(
        args,
        {"deleted": count, "before": before.isoformat()},
        f"deleted {count} event(s) from before {before.isoformat(timespec='seconds')}",
    )


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``audit list|tail|prune`` to the command parser."""
    audit_commands = commands.add_parser(
        "audit", help="list, follow and prune the security event log"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    audit_filters = argparse.ArgumentParser(add_help=False)
    audit_filters.add_argument("--user", metavar="ID|EMAIL", help="events about this account")
    audit_filters.add_argument("--client", metavar="CLIENT_ID", help="events of this client")
    audit_filters.add_argument(
        "--type", metavar="PREFIX", help="event types that start so (login.)"
    )
    audit_filters.add_argument(
        "--since", metavar="WHEN", help="an ISO timestamp (UTC if no offset) or 15m, 2h, 7d"
    )
    listing = audit_commands.add_parser(
        "list", parents=[common, audit_filters], help="matching events, oldest first"
    )
    listing.add_argument("--limit", default="100", metavar="N", help="the newest N (100)")
    listing.set_defaults(handler=audit_list)
    tail = audit_commands.add_parser(
        "tail", parents=[common, audit_filters], help="the last events, then new ones (Ctrl-C)"
    )
    tail.add_argument(
        "--limit", default="20", metavar="N", help="how many existing events first (20)"
    )
    tail.add_argument(
        "--interval", default="2", metavar="SECONDS", help="seconds between polls (2)"
    )
    tail.add_argument("--max-polls", type=int, help=argparse.SUPPRESS)  # for tests
    tail.set_defaults(handler=audit_tail)
    prune = audit_commands.add_parser(
        "prune", parents=[common], help="delete events older than a duration"
    )
    prune.add_argument("--older-than", required=True, metavar="DURATION", help="age: 90d, 26w")
    prune.add_argument("--force", action="store_true", help="allow a duration under one day")
    prune.set_defaults(handler=audit_prune)
