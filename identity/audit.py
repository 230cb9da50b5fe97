"""Security events: ``record`` writes one in the caller's transaction."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from identity import repositories, webhook_events
from identity.models import AuditEvent, utcnow

# Keys that would carry a secret. ``record`` refuses them so that a careless caller fails a
# test instead of writing a credential into the audit log.
_SECRET_KEYS = frozenset(
    {
        "password",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "code_verifier",
    }
)


@dataclass(frozen=True)
class RequestContext:
    """Where an event came from: the client IP (after trusted proxies) and user agent."""

    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def command_line(cls) -> RequestContext:
        return cls(ip=None, user_agent="identity-cli")


def record(
    session: Session,
    type: str,
    *,
    context: RequestContext | None = None,
    outcome: str = "success",
    actor: str | None = None,
    subject: str | None = None,
    client_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Add an audit event to ``session``; it commits or rolls back with the change it records,
    and so does the webhook event it makes (identity.webhook_events). Returns the event's id."""
    row = event_row(
        type,
        context=context,
        outcome=outcome,
        actor=actor,
        subject=subject,
        client_id=client_id,
        detail=detail,
    )
    event_id = repositories.add_audit_event(session, **row)
    webhook_events.enqueue_for_audit(
        session,
        type,
        subject=row["subject"],
        actor=row["actor"],
        client_id=row["client_id"],
        outcome=outcome,
        detail=row["detail"],
    )
    return event_id


def event_row(
    type: str,
    *,
    context: RequestContext | None = None,
    outcome: str = "success",
    actor: str | None = None,
    subject: str | None = None,
    client_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns of an audit event, checked and clipped: for ``record`` and for writers
    that insert many at once (``identity.group_commit``)."""
    detail = dict(detail or {})
    leaked = _SECRET_KEYS.intersection(detail)
    if leaked:
        raise ValueError(f"audit detail must not carry secrets: {sorted(leaked)}")
    context = context or RequestContext()
    return {
        # Stamped now, not when a batch is written: the time the event happened.
        "occurred_at": utcnow(),
        "type": type,
        "outcome": outcome,
        "actor": _clip(actor, 128),
        "subject": _clip(subject, 128),
        "client_id": _clip(client_id, 64),
        "ip": _clip(context.ip, 45),
        "user_agent": _clip(context.user_agent, 512),
        "detail": detail,
    }


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


def as_dict(event: AuditEvent) -> dict[str, Any]:
    """The JSON shape of an event, for the CLI and the admin API."""
    return {
        "id": event.id,
        "occurred_at": event.occurred_at.isoformat(),
        "type": event.type,
        "outcome": event.outcome,
        "actor": event.actor,
        "subject": event.subject,
        "client_id": event.client_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "detail": event.detail,
    }


# -- reading and pruning (the `identity audit` commands) ----------------------------------------

_DURATION = re.compile(r"(\d+)([smhdw])")
_DURATION_LIKE = re.compile(r"[+-]?\d+\s*[a-zA-Z]+")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class AuditQueryError(ValueError):
    """Input the audit commands cannot use: a bad duration or timestamp."""


def parse_duration(text: str) -> timedelta:
    """``15m``, ``2h``, ``7d``, ``90d``: a number and one of s, m, h, d, w."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise AuditQueryError(
            f"unknown duration {text!r}: use a number and s, m, h, d or w (15m, 2h, 7d)"
        )
    try:
        duration = timedelta(**{_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise AuditQueryError(f"duration {text!r} is too long") from None
    if duration <= timedelta(0):
        raise AuditQueryError(f"duration {text!r} must be longer than zero")
    return duration


def ago(duration: timedelta, now: datetime, text: str) -> datetime:
    """``now - duration``; ``text`` (the duration as typed) names it in the error."""
    try:
        return now - duration
    except OverflowError:
        raise AuditQueryError(f"duration {text!r} is too long") from None


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO 8601 timestamp (UTC when it has no offset) or a duration back from ``now``."""
    if _DURATION_LIKE.fullmatch(text.strip()):  # 15m, but also 3mo or 2 h: said as durations
        return ago(parse_duration(text), now, text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AuditQueryError(
            f"bad time {text!r}: give an ISO timestamp (2025-01-31T09:00:00Z) "
            "or a duration (15m, 2h, 7d)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class AuditFilter:
    """What ``identity audit list`` and ``tail`` select; None matches everything."""

    subject: str | None = None
    client_id: str | None = None
    type_prefix: str | None = None
    since: datetime | None = None

    def query(
        self,
        session: Session,
        *,
        after_id: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        return list(
            repositories.list_audit_events(
                session,
                subject=self.subject,
                client_id=self.client_id,
                type_prefix=self.type_prefix,
                since=self.since,
                after_id=after_id,
                before_id=before_id,
                limit=limit,
                newest_first=newest_first,
            )
        )


def latest(session: Session, selection: AuditFilter, limit: int) -> list[AuditEvent]:
    """The newest ``limit`` matching events, oldest first."""
    return list(reversed(selection.query(session, limit=limit, newest_first=True)))


def poll(
    session: Session, selection: AuditFilter, after_id: int | None, batch: int = 500
) -> list[AuditEvent]:
    """Every matching event with an id above ``after_id``, oldest first (in batches)."""
    found: list[AuditEvent] = []
    while True:
        page = selection.query(session, after_id=after_id, limit=batch)
        found.extend(page)
        if len(page) < batch:
            return found
        after_id = page[-1].id


def follow(
    transaction: Callable[[], AbstractContextManager[Session]],
    selection: AuditFilter,
    after_id: int | None,
    *,
    interval: float,
    max_polls: int | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Matching events newer than ``after_id`` as they are written, each as ``as_dict``.

    Polls by id every ``interval`` seconds, each time in a fresh transaction, forever or
    ``max_polls`` times. ``transaction`` is ``Database.transaction``."""
    polls = 0
    while max_polls is None or polls < max_polls:
        if polls:
            (sleep or time.sleep)(interval)
        polls += 1
        with transaction() as session:
            rows = [as_dict(event) for event in poll(session, selection, after_id)]
        for row in rows:
            after_id = row["id"]
            yield row


def prune(session: Session, before: datetime, *, forced: bool) -> int:
    """Delete the events that occurred before ``before``, then record ``audit.pruned`` (which
    is written after the delete, so it survives it). Returns how many were deleted."""
    count = repositories.prune_audit_events(session, before)
    record(
        session,
        "audit.pruned",
        context=RequestContext.command_line(),
        actor="admin",
        detail={"count": count, "before": before.isoformat(), "forced": forced},
    )
    return count
