"""Rows of the operators' features: roles given to users, and webhook endpoints with their
outbox of events and log of deliveries. Kept apart from ``models`` by noun, on the same
``Base`` (``model_base``); ``models`` re-exports them, so importing it registers every table."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from identity.model_base import Base, BigId, utcnow


class UserRole(Base):
    """A named role given to a user (``admin``, ``app1:editor``); tokens carry them in the
    ``roles`` claim when the ``roles`` scope is granted."""

    __tablename__ = "user_roles"
    __table_args__ = (Index(None, "role"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """A receiver of signed event deliveries (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # "wh_..."
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]]  # patterns: "user.created", "user.*", "*"
    # Encrypted (identity.secret_box): signing needs the secret itself.
    secret_sealed: Mapped[str] = mapped_column(Text)
    # After a rotation the old secret signs too until ``previous_secret_until``, so a
    # receiver can switch without dropping a delivery.
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # The first failure of the current run of failures; cleared by a success.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """The outbox: one row per event, written in the transaction of the change it reports,
    so an event is never lost and never sent for a change that rolled back. A dispatcher
    fans it out into one delivery per subscribed endpoint."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index(None, "dispatched", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(40), unique=True)  # webhook-id: "msg_..."
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dispatched: Mapped[bool] = mapped_column(default=False)


class WebhookDelivery(Base):
    """One event for one endpoint: retried until delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "status", "next_attempt_at"), Index(None, "endpoint_id", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_response_ms: Mapped[int | None]


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index(None, "delivery_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    response_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(String(500))
