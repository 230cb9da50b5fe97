"""Which audit events are published to webhook endpoints, and the outbox writer ``audit.record``
calls: one ``WebhookEvent`` row in the transaction of the change, so an event is never lost
and never sent for a change that rolled back (identity.webhook_delivery sends it)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.orm import Session

from identity import repositories
from identity.admin_models import WebhookEvent
from identity.models import utcnow

# The events an endpoint may subscribe to by name.
EVENT_TYPES = (
    "user.created",
    "user.verified",
    "user.disabled",
    "user.enabled",
    "user.deleted",
    "user.role_added",
    "user.role_removed",
    "login.succeeded",
    "login.failed",
    "password.changed",
    "password.reset",
    "email.changed",
    "token.revoked",
    "refresh.reuse_detected",
)
# Families published whole: every audit type in them is an event (mfa.added, client.created...).
OPEN_FAMILIES = ("mfa", "client")
FAMILIES = tuple(dict.fromkeys([t.partition(".")[0] for t in EVENT_TYPES] + list(OPEN_FAMILIES)))

# Audit types published under another name: what a receiver cares about is that an account
# appeared or signed in, whichever way it did.
_PUBLISHED_AS = {
    "email.verified": "user.verified",
    "signup": "user.created",  # unverified; user.verified follows
    "federation.account_created": "user.created",
    "federation.signed_in": "login.succeeded",
}
_KNOWN = frozenset(EVENT_TYPES)


def published_type(audit_type: str) -> str | None:
    """The webhook event type an audit event is published as, or None."""
    audit_type = _PUBLISHED_AS.get(audit_type, audit_type)
    if audit_type in _KNOWN or audit_type.partition(".")[0] in OPEN_FAMILIES:
        return audit_type
    return None


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """True when one of an endpoint's patterns (``user.created``, ``user.*``, ``*``) takes it."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


class EndpointPresence:
    """Whether any endpoint is enabled, asked before each event is written. Most servers have
    none, and login.succeeded is frequent: so the answer is kept, and the ``webhooks`` cache
    generation (bumped by every endpoint change) is read at most every ``check_seconds``. An
    endpoint added on another instance therefore gets events from within that time."""

    def __init__(self, check_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._present = False
        self._checked_at = -float("inf")

    def any_enabled(self, session: Session) -> bool:
        now = self._clock()
        if now - self._checked_at < self._check_seconds:
            return self._present
        generation = repositories.cache_generation(session, "webhooks")
        if generation != self._generation:
            present = repositories.any_enabled_webhook_endpoint(session)
            with self._lock:
                self._generation, self._present = generation, present
        self._checked_at = now
        return self._present

    def forget(self) -> None:
        """Ask again next time: this process changed the endpoints."""
        with self._lock:
            self._generation = None
            self._checked_at = -float("inf")


PRESENCE = EndpointPresence()


def new_message_id() -> str:
    """A ``webhook-id``: unique per event, the same on every attempt and redelivery."""
    return "msg_" + uuid.uuid4().hex


def enqueue_for_audit(
    session: Session,
    type: str,
    *,
    subject: str | None,
    actor: str | None,
    client_id: str | None,
    outcome: str,
    detail: dict[str, Any],
    presence: EndpointPresence = PRESENCE,
) -> None:
    """Add the webhook event an audit event makes, if it makes one and any endpoint could
    want it. ``detail`` holds no secret (``audit.record`` checked)."""
    event_type = published_type(type)
    if event_type is None or not presence.any_enabled(session):
        return
    if event_type.startswith("user."):
        data = _user_data(session, subject)
        if "role" in detail:
            data["role"] = detail["role"]
    else:
        data = {
            "subject": subject,
            "client_id": client_id,
            "outcome": outcome,
            "actor": actor,
            "detail": detail,
        }
    event = WebhookEvent(
        message_id=new_message_id(), type=event_type, occurred_at=utcnow(), data=data
    )
    repositories.add_webhook_event(session, event)


def _user_data(session: Session, subject: str | None) -> dict[str, Any]:
    # The email as it is now: user.deleted is recorded before the row goes.
    try:
        user = repositories.get_user(session, uuid.UUID(subject or ""))
    except ValueError:
        user = None
    return {"id": subject, "email": user.email if user is not None else None}
