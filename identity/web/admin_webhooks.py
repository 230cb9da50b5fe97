"""The console's webhook pages: the endpoints (add one), and one endpoint with its recent
deliveries and the actions on it (redeliver, rotate the secret, enable, disable, remove).

Every change is ``webhooks``' own function, the one the CLI and the admin API call, with the
administrator as the actor. A signing secret is shown once: after it is made (adding or
rotating) it waits, sealed, in the administrator's server-side session until the endpoint's
page shows it and drops it. Reading these pages is not recorded: endpoints and deliveries
hold no one's personal data, and never a secret (``webhooks.describe_endpoint``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from identity import repositories, webhook_events, webhooks
from identity.admin_models import WebhookEndpoint
from identity.web.admin_console import Console, ConsoleForm, ConsolePage, ConsoleRoute

# How long the old secret signs too after a rotation: (form value in seconds, words).
OVERLAP_CHOICES = (
    ("0", "No overlap: only the new secret signs, from now on"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("604800", "7 days"),
)
_DEFAULT_OVERLAP = "86400"
_KIND = "webhook"  # the kind of secret Console.keep_secret keeps
_LIST = "/admin/webhooks"
_NOT_FOUND = "There is no such webhook endpoint. It may have been removed."
_MAX_ID = 2**63  # delivery ids are signed 64-bit integers
_MAX_URL = 2000
_MAX_EVENTS = 2000


def _endpoint_path(request: Request) -> str:
    return f"{_LIST}/{request.path_params['endpoint_id']}"


def _find(console: Console) -> WebhookEndpoint | None:
    try:
        return webhooks.get_endpoint(console.db, console.request.path_params["endpoint_id"][:64])
    except LookupError:
        return None


def _sentence(error: Exception) -> str:
    """A service's refusal ("the URL must...") as a sentence of its own."""
    text = str(error)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _allow_private(console: Console) -> bool:
    return console.accounts.settings.webhooks_allow_private


# -- the list and a new endpoint ------------------------------------------------------------


def _list_page(
    console: Console,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    endpoints = [webhooks.describe_endpoint(e) for e in webhooks.list_endpoints(console.db)]
    return console.page(
        "admin/webhooks.html",
        status,
        endpoints=endpoints,
        allow_private=_allow_private(console),
        event_types=webhook_events.EVENT_TYPES,
        families=[f"{family}.*" for family in webhook_events.FAMILIES],
        errors=errors or {},
        values=values or {},
    )


def _list(console: Console) -> Response:
    return _list_page(console)


def _add(console: Console, form: dict[str, str]) -> Response:
    values = {"url": form.get("url", "")[:_MAX_URL], "events": form.get("events", "")[:_MAX_EVENTS]}
    errors: dict[str, str] = {}
    if not values["url"].strip():
        errors["url"] = "Give the URL the events are sent to."
    if not values["events"].strip():
        errors["events"] = "Name the events to send, e.g. user.created user.*"
    if errors:
        return _list_page(console, 400, {"form": "Check the form", **errors}, values)
    try:
        webhooks.checked_events([values["events"]])  # to name the field a refusal is about
    except webhooks.WebhookError as error:
        errors = {"form": "Check the form", "events": _sentence(error)}
        return _list_page(console, 400, errors, values)
    try:
        with console.savepoint():
            added = webhooks.add_endpoint(
                console.db,
                console.accounts.secret_box,
                url=values["url"],
                events=[values["events"]],
                allow_private=_allow_private(console),
                actor=console.actor,
                context=console.context,
            )
    except webhooks.WebhookError as error:  # the events passed: it is about the URL
        errors = {"form": "Check the form", "url": _sentence(error)}
        return _list_page(console, 400, errors, values)
    endpoint = added.endpoint
    console.keep_secret(_KIND, endpoint.id, added.secret)
    return console.done(f"Added the webhook {endpoint.url}", f"{_LIST}/{endpoint.id}")


# -- one endpoint ---------------------------------------------------------------------------


def _detail_page(
    console: Console,
    endpoint: WebhookEndpoint,
    status: int = 200,
    errors: dict[str, str] | None = None,
) -> Response:
    return console.page(
        "admin/webhook.html",
        status,
        endpoint=webhooks.describe_endpoint(endpoint),
        deliveries=webhooks.recent_deliveries(console.db, endpoint.id),
        secret=console.take_secret(_KIND, endpoint.id),
        overlap_choices=OVERLAP_CHOICES,
        default_overlap=_DEFAULT_OVERLAP,
        errors=errors or {},
    )


def _detail(console: Console) -> Response:
    endpoint = _find(console)
    if endpoint is None:
        return console.not_found(_NOT_FOUND, _LIST)
    return _detail_page(console, endpoint)


def _redeliver(console: Console, form: dict[str, str]) -> Response:
    endpoint = _find(console)
    if endpoint is None:
        return console.not_found(_NOT_FOUND, _LIST)
    text = form.get("delivery", "")
    delivery = None
    if text.isascii() and text.isdigit() and 0 < int(text) < _MAX_ID:
        delivery = repositories.get_webhook_delivery(console.db, int(text))
    if delivery is None or delivery.endpoint_id != endpoint.id:
        errors = {"form": "That delivery is not in this endpoint's log any more. Reload the page."}
        return _detail_page(console, endpoint, 400, errors)
    try:
        with console.savepoint():
            webhooks.redeliver(
                console.db, delivery.id, actor=console.actor, context=console.context
            )
    except webhooks.WebhookError as error:
        return _detail_page(console, endpoint, 400, {"form": f"Not redelivered: {error}."})
    return console.done("Queued the event for delivery again", f"{_LIST}/{endpoint.id}")


def _rotate(console: Console, form: dict[str, str]) -> Response:
    endpoint = _find(console)
    if endpoint is None:
        return console.not_found(_NOT_FOUND, _LIST)
    overlap = form.get("overlap", "")
    if overlap not in dict(OVERLAP_CHOICES):
        errors = {"form": "Check the form", "overlap": "Choose how long the old secret signs too."}
        return _detail_page(console, endpoint, 400, errors)
    try:
        with console.savepoint():
            secret = webhooks.rotate_secret(
                console.db,
                console.accounts.secret_box,
                endpoint.id,
                overlap=timedelta(seconds=int(overlap)),
                actor=console.actor,
                context=console.context,
            )
    except webhooks.WebhookError as error:
        return _detail_page(console, endpoint, 400, {"form": f"Not rotated: {error}."})
    console.keep_secret(_KIND, endpoint.id, secret)
    return console.done("Rotated the signing secret", f"{_LIST}/{endpoint.id}")


def _switch(enabled: bool) -> Callable[[Console, dict[str, str]], Response]:
    """The enable or the disable form of an endpoint's page."""

    def work(console: Console, form: dict[str, str]) -> Response:
        endpoint = _find(console)
        if endpoint is None:
            return console.not_found(_NOT_FOUND, _LIST)
        webhooks.set_enabled(
            console.db, endpoint.id, enabled, actor=console.actor, context=console.context
        )
        verb = "Enabled" if enabled else "Disabled"
        return console.done(f"{verb} the webhook {endpoint.url}", f"{_LIST}/{endpoint.id}")

    return work


def _confirm_remove(console: Console) -> Response:
    endpoint = _find(console)
    if endpoint is None:
        return console.not_found(_NOT_FOUND, _LIST)
    return console.page(
        "admin/confirm.html",
        heading=f"Remove the webhook {endpoint.url}?",
        text=(
            "No more events are sent there, and its delivery log goes with it, so nothing "
            "can be redelivered. This cannot be undone; disabling the endpoint instead keeps "
            "it and its log."
        ),
        action=f"{_LIST}/{endpoint.id}/remove",
        button="Remove the webhook",
        back=f"{_LIST}/{endpoint.id}",
    )


def _remove(console: Console, form: dict[str, str]) -> Response:
    endpoint = _find(console)
    if endpoint is None:
        return console.not_found(_NOT_FOUND, _LIST)
    url = endpoint.url
    webhooks.remove_endpoint(console.db, endpoint.id, actor=console.actor, context=console.context)
    return console.done(f"Removed the webhook {url}", _LIST)


def webhook_routes() -> list[ConsoleRoute]:
    """The webhook pages of the console."""
    on_page = _endpoint_path
    return [
        ConsolePage(_LIST, _list),
        ConsoleForm(_LIST, _add, lambda request: _LIST),
        ConsolePage(f"{_LIST}/{{endpoint_id}}", _detail),
        ConsoleForm(f"{_LIST}/{{endpoint_id}}/redeliver", _redeliver, on_page),
        ConsoleForm(f"{_LIST}/{{endpoint_id}}/rotate-secret", _rotate, on_page),
        ConsoleForm(f"{_LIST}/{{endpoint_id}}/enable", _switch(True), on_page),
        ConsoleForm(f"{_LIST}/{{endpoint_id}}/disable", _switch(False), on_page),
        ConsolePage(f"{_LIST}/{{endpoint_id}}/remove", _confirm_remove),
        ConsoleForm(f"{_LIST}/{{endpoint_id}}/remove", _remove, on_page),
    ]
