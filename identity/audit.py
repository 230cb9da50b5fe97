"""Security events: ``record`` writes one in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from identity import repositories
from identity.models import AuditEvent

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
) -> AuditEvent:
    """Add an audit event to ``session``; it commits or rolls back with the change it records."""
    detail = dict(detail or {})
    leaked = _SECRET_KEYS.intersection(detail)
    if leaked:
        raise ValueError(f"audit detail must not carry secrets: {sorted(leaked)}")
    context = context or RequestContext()
    event = AuditEvent(
        type=type,
        outcome=outcome,
        actor=_clip(actor, 128),
        subject=_clip(subject, 128),
        client_id=_clip(client_id, 64),
        ip=_clip(context.ip, 45),
        user_agent=_clip(context.user_agent, 512),
        detail=detail,
    )
    repositories.add_audit_event(session, event)
    return event


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
