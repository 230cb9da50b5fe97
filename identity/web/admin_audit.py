"""The console's audit trail: the events that match the filters (user, client, type prefix,
since), newest first, a page at a time: an operator opening the page looks for what just
happened (the API and ``identity audit`` read oldest first, as pollers do). Reading the trail
is not itself recorded (a page left open would fill it)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from identity import audit, repositories
from identity.accounts import operators
from identity.accounts.errors import InvalidInput
from identity.models import AuditEvent
from identity.web.admin_console import Console, ConsolePage, ConsoleRoute

_PAGE_SIZE = 50
_MAX_ID = 2**63  # the id column is a signed 64-bit integer
_FILTERS = ("user", "client", "type", "since")
_USER = "Give a user id or an email address."
_NO_ONE = "__nobody__"  # an email without an account: no events, not an error


def _subject(console: Console, text: str) -> str:
    """The subject events keep for ``text``: the id as given (the account may be deleted,
    its events are not), or the id of the account with that email."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if "@" not in text:
        raise InvalidInput({"user": _USER})
    try:
        return str(operators.find_user(console.db, text).id)
    except LookupError:
        return _NO_ONE
    except InvalidInput:
        raise InvalidInput({"user": _USER}) from None


def _selection(console: Console, values: dict[str, str]) -> audit.AuditFilter:
    """The filter the form describes; InvalidInput naming each field it cannot use."""
    errors: dict[str, str] = {}
    subject = since = None
    if values["user"]:
        try:
            subject = _subject(console, values["user"])
        except InvalidInput as error:
            errors.update(error.fields)
    if values["since"]:
        try:
            since = audit.parse_since(values["since"], console.accounts.now())
        except (audit.AuditQueryError, ValueError, OverflowError) as error:
            errors["since"] = (
                str(error)
                if isinstance(error, audit.AuditQueryError)
                else ("Give an ISO timestamp (2025-01-31T09:00:00Z) or a duration (15m, 2h, 7d).")
            )
    if errors:
        raise InvalidInput(errors)
    return audit.AuditFilter(
        subject=subject,
        client_id=values["client"] or None,
        type_prefix=values["type"] or None,
        since=since,
    )


def _row(console: Console, event: AuditEvent) -> dict[str, Any]:
    """An event as the page shows it: its detail as JSON text, and the email of each
    account it names by id (None when that account is gone)."""
    row = audit.as_dict(event)
    row["detail_text"] = json.dumps(event.detail or {}, sort_keys=True, separators=(", ", ": "))
    for field in ("actor", "subject"):
        row[f"{field}_email"] = _email_of(console, row[field])
    return row


def _email_of(console: Console, text: str | None) -> str | None:
    try:
        user_id = uuid.UUID(text or "")
    except ValueError:
        return None
    user = repositories.get_user(console.db, user_id)  # the identity map keeps repeats cheap
    return None if user is None else user.email


def _audit(console: Console) -> Response:
    params = console.request.query_params
    values = {name: params.get(name, "").strip()[:320] for name in _FILTERS}
    before_text = params.get("before", "")
    try:
        selection = _selection(console, values)
        before = int(before_text) if before_text else None
        if before is not None and not 0 <= before < _MAX_ID:
            raise ValueError(before_text)
    except InvalidInput as error:
        return _page(console, values, [], None, 400, {"form": "Check the filters", **error.fields})
    except ValueError:
        errors = {"form": "That page link doesn't work. Start from the first page."}
        return _page(console, values, [], None, 400, errors)
    if selection.subject == _NO_ONE:
        return _page(console, values, [], None)
    events = selection.query(console.db, before_id=before, limit=_PAGE_SIZE + 1, newest_first=True)
    page = events[:_PAGE_SIZE]
    more = None
    if len(events) > _PAGE_SIZE:
        filters = {k: v for k, v in values.items() if v}
        more = "/admin/audit?" + urlencode({**filters, "before": page[-1].id})
    return _page(console, values, [_row(console, e) for e in page], more, first_page=before is None)


def _page(
    console: Console,
    values: dict[str, str],
    events: list[dict[str, Any]],
    next_href: str | None,
    status: int = 200,
    errors: dict[str, str] | None = None,
    first_page: bool = True,
) -> Response:
    filters = {k: v for k, v in values.items() if v}
    return console.page(
        "admin/audit.html",
        status,
        events=events,
        next_href=next_href,
        first_href="" if first_page else "/admin/audit?" + urlencode(filters),
        values=values,
        errors=errors or {},
    )


def audit_routes() -> list[ConsoleRoute]:
    """The audit page of the console."""
    return [ConsolePage("/admin/audit", _audit)]
