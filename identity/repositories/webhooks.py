"""The queries of webhook endpoints, their event outbox and deliveries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from identity.admin_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from identity.repositories._base import is_postgresql

__all__ = [
    "add_webhook_attempt",
    "add_webhook_deliveries",
    "add_webhook_endpoint",
    "add_webhook_event",
    "any_enabled_webhook_endpoint",
    "claim_due_webhook_deliveries",
    "claim_undispatched_webhook_events",
    "count_webhook_events",
    "delete_webhook_endpoint",
    "enabled_webhook_endpoints",
    "get_webhook_delivery",
    "get_webhook_endpoint",
    "get_webhook_events",
    "has_due_webhook_deliveries",
    "has_undispatched_webhook_events",
    "list_webhook_endpoints",
    "prune_webhook_history",
    "recent_webhook_deliveries",
    "webhook_attempts",
]


# -- endpoints -----------------------------------------------------------------------------


def add_webhook_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    session.add(endpoint)
    session.flush()


def get_webhook_endpoint(
    session: Session, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def list_webhook_endpoints(session: Session) -> Sequence[WebhookEndpoint]:
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    return session.scalars(query).all()


def enabled_webhook_endpoints(session: Session) -> Sequence[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.enabled).order_by(WebhookEndpoint.id)
    return session.scalars(query).all()


def any_enabled_webhook_endpoint(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(WebhookEndpoint.enabled))))


def delete_webhook_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint; its deliveries and their attempts go with it (cascade)."""
    session.delete(endpoint)
    session.flush()


# -- the event outbox ------------------------------------------------------------------------


def add_webhook_event(session: Session, event: WebhookEvent) -> None:
    session.add(event)
    session.flush()


def has_undispatched_webhook_events(session: Session) -> bool:
    """A plain read first: claiming is a write, which SQLite serialises."""
    return bool(session.scalar(select(exists().where(WebhookEvent.dispatched.is_(False)))))


def claim_undispatched_webhook_events(session: Session, *, limit: int) -> Sequence[WebhookEvent]:
    """Mark up to ``limit`` events dispatched and return them, oldest first, in one UPDATE ...
    RETURNING: the caller fans them out in the same transaction, so two dispatchers never take
    the same event (SKIP LOCKED on PostgreSQL lets them take different ones at once)."""
    pending = (
        select(WebhookEvent.id)
        .where(WebhookEvent.dispatched.is_(False))
        .order_by(WebhookEvent.id)
        .limit(limit)
    )
    if is_postgresql(session):
        pending = pending.with_for_update(skip_locked=True)
    claim = (
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(pending.scalar_subquery()))
        .values(dispatched=True)
        .returning(WebhookEvent)
        .execution_options(synchronize_session=False)
    )
    return sorted(session.scalars(claim).all(), key=lambda event: event.id)


def get_webhook_events(session: Session, event_ids: Iterable[int]) -> dict[int, WebhookEvent]:
    ids = set(event_ids)
    if not ids:
        return {}
    return {e.id: e for e in session.scalars(select(WebhookEvent).where(WebhookEvent.id.in_(ids)))}


# -- deliveries ------------------------------------------------------------------------------


def add_webhook_deliveries(session: Session, deliveries: Iterable[WebhookDelivery]) -> None:
    session.add_all(list(deliveries))
    session.flush()


def get_webhook_delivery(session: Session, delivery_id: int) -> WebhookDelivery | None:
    return session.get(WebhookDelivery, delivery_id)


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    enabled = select(WebhookEndpoint.id).where(WebhookEndpoint.enabled)
    return (
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= now,
        WebhookDelivery.claimed_until.is_(None) | (WebhookDelivery.claimed_until < now),
        # A disabled endpoint's deliveries wait: enabling it again sends them.
        WebhookDelivery.endpoint_id.in_(enabled.scalar_subquery()),
    )


def has_due_webhook_deliveries(session: Session, now: datetime) -> bool:
    return bool(session.scalar(select(exists().where(*_due(now)))))


def claim_due_webhook_deliveries(
    session: Session, now: datetime, *, limit: int, claim_for: timedelta
) -> Sequence[WebhookDelivery]:
    """Claim up to ``limit`` due deliveries for ``claim_for`` in one UPDATE ... RETURNING (the
    mail outbox's pattern): two senders never claim the same delivery, SKIP LOCKED lets them
    take different ones on PostgreSQL, and a crashed sender's claim lapses."""
    due = (
        select(WebhookDelivery.id)
        .where(*_due(now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if is_postgresql(session):
        due = due.with_for_update(skip_locked=True, of=WebhookDelivery)
    claim = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + claim_for)
        .returning(WebhookDelivery)
        .execution_options(synchronize_session=False)
    )
    return sorted(session.scalars(claim).all(), key=lambda delivery: delivery.id)


def recent_webhook_deliveries(
    session: Session, endpoint_id: str, limit: int
) -> Sequence[tuple[WebhookDelivery, WebhookEvent]]:
    """The endpoint's newest deliveries with their events, newest first."""
    query = (
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return [(delivery, event) for delivery, event in session.execute(query)]


# -- the attempt log -------------------------------------------------------------------------


def add_webhook_attempt(session: Session, attempt: WebhookAttempt) -> None:
    session.add(attempt)
    session.flush()


def webhook_attempts(session: Session, delivery_id: int) -> Sequence[WebhookAttempt]:
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == delivery_id)
        .order_by(WebhookAttempt.id)
    )
    return session.scalars(query).all()


def count_webhook_events(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


def prune_webhook_history(session: Session, before: datetime) -> int:
    """Delete settled deliveries made before ``before`` (their attempts go with them), then
    the events of before then that no delivery refers to. Returns the deliveries deleted."""
    settled = session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.status.in_(("delivered", "failed")),
            WebhookDelivery.created_at < before,
        )
    )
    referred = exists().where(WebhookDelivery.event_id == WebhookEvent.id)
    session.execute(
        delete(WebhookEvent).where(
            WebhookEvent.dispatched.is_(True), WebhookEvent.occurred_at < before, ~referred
        )
    )
    return int(settled.rowcount)  # type: ignore[attr-defined]
