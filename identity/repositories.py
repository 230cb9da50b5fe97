"""The queries. Nothing else in identity builds SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from identity.models import AuditEvent, Client, RevokedToken


def _insert_ignoring_duplicates(session: Session, model: Any, values: dict[str, Any]) -> None:
    # Two racing requests may write the same key; the loser must not turn into a 500.
    insert = (
        postgresql_insert
        if session.bind and session.bind.dialect.name == "postgresql"
        else sqlite_insert
    )
    session.execute(insert(model).values(**values).on_conflict_do_nothing())


# -- clients ------------------------------------------------------------------------------


def get_client(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


def list_clients(session: Session) -> Sequence[Client]:
    return session.scalars(select(Client).order_by(Client.created_at, Client.client_id)).all()


def add_client(session: Session, client: Client) -> None:
    session.add(client)
    session.flush()


def delete_client(session: Session, client_id: str) -> bool:
    result = session.execute(delete(Client).where(Client.client_id == client_id))
    return int(result.rowcount) > 0  # type: ignore[attr-defined]


# -- the denylist ---------------------------------------------------------------------------


def add_revoked_token(session: Session, jti: str, expires_at: datetime) -> None:
    _insert_ignoring_duplicates(session, RevokedToken, {"jti": jti, "expires_at": expires_at})


def is_token_revoked(session: Session, jti: str) -> bool:
    return bool(session.scalar(select(exists().where(RevokedToken.jti == jti))))


def live_revoked_tokens(session: Session, now: datetime) -> Sequence[tuple[str, datetime]]:
    rows = session.execute(
        select(RevokedToken.jti, RevokedToken.expires_at).where(RevokedToken.expires_at > now)
    )
    return [(jti, expires_at) for jti, expires_at in rows]


def prune_revoked_tokens(session: Session, now: datetime) -> int:
    result = session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- audit ----------------------------------------------------------------------------------


def add_audit_event(session: Session, event: AuditEvent) -> None:
    session.add(event)


def list_audit_events(
    session: Session,
    *,
    subject: str | None = None,
    client_id: str | None = None,
    type_prefix: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> Sequence[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id).limit(limit)
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
    return session.scalars(query).all()
