"""The queries of audit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select
from sqlalchemy.orm import Session

from identity.models import AuditEvent

__all__ = ["add_audit_event", "add_audit_events", "list_audit_events", "prune_audit_events"]


# A plain Core INSERT built once, not an object for the unit of work nor an ORM-enabled
# insert: the token endpoint records one event per token, and the ORM's bookkeeping cost
# several times the insert itself. Column defaults (occurred_at...) still apply.
_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]
_INSERT = insert(_TABLE).returning(_TABLE.c.id)


def add_audit_event(session: Session, **values: Any) -> int:
    return int(session.execute(_INSERT, values).scalar_one())


def add_audit_events(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Many events in one statement (SQLAlchemy's multi-row VALUES), for group commit."""
    connection.execute(insert(_TABLE), list(rows))


def list_audit_events(
    session: Session,
    *,
    subject: str | None = None,
    client_id: str | None = None,
    type_prefix: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
    newest_first: bool = False,
) -> Sequence[AuditEvent]:
    order = AuditEvent.id.desc() if newest_first else AuditEvent.id
    query = select(AuditEvent).order_by(order).limit(limit)
    if subject is not None:
        query = query.where(AuditEvent.subject == subject)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    if type_prefix is not None:
        query = query.where(AuditEvent.type.startswith(type_prefix, autoescape=True))
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if after_id is not None:
        query = query.where(AuditEvent.id > after_id)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return session.scalars(query).all()


def prune_audit_events(session: Session, before: datetime) -> int:
    result = session.execute(delete(AuditEvent).where(AuditEvent.occurred_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
