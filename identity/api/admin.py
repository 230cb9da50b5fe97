"""JSON API handlers for operators: the audit trail (``/api/v1/admin/audit``). The other
admin operations are one module per noun (``admin_users``, ``admin_clients``, ``admin_keys``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from identity import audit, repositories
from identity.accounts.errors import InvalidInput
from identity.accounts.fields import normalise_email
from identity.api.admin_bodies import AdminAuditEvent, AdminAuditEvents, AdminAuditQuery
from identity.api.calls import ApiCall, Result
from identity.api.problems import invalid_input

_SINCE = "Give an ISO 8601 timestamp (2025-01-31T09:00:00Z) or a duration (15m, 2h, 7d)."
_USER = "Give a user id or an email address."


def _since(text: str, now: datetime) -> datetime:
    try:
        return audit.parse_since(text, now)
    except (audit.AuditQueryError, ValueError, OverflowError):
        # Our own words: AuditQueryError's message quotes the input.
        raise invalid_input({"since": _SINCE}) from None


def _subject(call: ApiCall, user: str) -> str | None:
    """The subject events keep for ``user``: the id as given (the account may be deleted by
    now, its events are not), or the id of the account with that email; None if none has."""
    try:
        return str(uuid.UUID(user))
    except ValueError:
        pass
    if "@" not in user:
        raise invalid_input({"user": _USER})
    try:
        email = normalise_email(user)
    except InvalidInput:
        raise invalid_input({"user": _USER}) from None
    found = repositories.get_user_by_email(call.db, email)
    return None if found is None else str(found.id)


def list_audit(call: ApiCall) -> Result:
    """Audit events matching every filter given, oldest first, a page at a time. Reading
    the trail is not itself recorded (a poller would fill the trail with its own reads)."""
    query = call.query_as(AdminAuditQuery)
    since = _since(query.since, call.accounts.now()) if query.since is not None else None
    subject = _subject(call, query.user) if query.user is not None else None
    if query.user is not None and subject is None:
        return AdminAuditEvents(events=[], next_after=None)  # an unknown email: no events
    selection = audit.AuditFilter(
        subject=subject, client_id=query.client_id, type_prefix=query.type, since=since
    )
    rows = selection.query(call.db, after_id=query.after, limit=query.limit + 1)
    page = rows[: query.limit]
    return AdminAuditEvents(
        events=[
            AdminAuditEvent.model_validate({**audit.as_dict(row), "detail": dict(row.detail or {})})
            for row in page
        ],
        next_after=page[-1].id if len(rows) > query.limit else None,
    )
