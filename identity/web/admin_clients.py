"""The console's client and key pages: the clients (create, edit, rotate the secret, delete)
and the signing keys (list, rotate).

A client's secret is shown once: after it is made (registration or rotation) it waits,
sealed, in the administrator's server-side session until the next page shows it and drops
it. A reload shows it no more, and nothing here ever reads it back from the client."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from identity import key_admin, repositories
from identity.accounts.errors import InvalidInput
from identity.keys import KeyStore, KeyStoreError
from identity.models import Client
from identity.protocol import clients
from identity.web.admin_console import Console, ConsoleForm, ConsolePage, ConsoleRoute
from identity.web.pages import form_errors

# One checkbox per grant type: a form sends the last value of a repeated name only.
GRANTS = (
    ("grant_authorization_code", "authorization_code", "Authorization code (browser sign-in)"),
    ("grant_refresh_token", "refresh_token", "Refresh token"),
    ("grant_client_credentials", "client_credentials", "Client credentials (machine to machine)"),
    ("grant_device_code", "urn:ietf:params:oauth:grant-type:device_code", "Device code"),
    ("grant_password", "password", "Password (first-party apps only)"),
)
# How long the old secret keeps working after a rotation: (form value in seconds, words).
GRACE_CHOICES = (
    ("0", "No overlap: the old secret stops working now"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("604800", "7 days"),
)
_DEFAULT_GRACE = "86400"
_FLAGS = ("first_party", "require_mfa")
_NOT_FOUND = "There is no such client. It may have been deleted."


def _client_path(request: Request) -> str:
    return f"/admin/clients/{request.path_params['client_id']}"


def _words(text: str) -> list[str]:
    """A list typed one a line, or separated by spaces or commas."""
    return [word for word in text.replace(",", " ").split() if word]


def _settings_from(form: dict[str, str]) -> dict[str, Any]:
    """The client settings a create or edit form sent."""
    return {
        "name": form.get("name", ""),
        "redirect_uris": _words(form.get("redirect_uris", "")),
        "scope": " ".join(_words(form.get("scope", ""))),
        "audience": _words(form.get("audience", "")),
        "grant_types": [grant for field, grant, _ in GRANTS if form.get(field)],
        "role_prefixes": _words(form.get("role_prefixes", "")),
        **{flag: bool(form.get(flag)) for flag in _FLAGS},
    }


def _values_of(client: Client) -> dict[str, str]:
    """What an edit form shows for ``client``."""
    values = {
        "name": client.name,
        "redirect_uris": "\n".join(client.redirect_uris),
        "scope": client.scope,
        "audience": "\n".join(client.audience),
        "role_prefixes": " ".join(client.role_prefixes or []),
        **{field: "on" for field, grant, _ in GRANTS if grant in client.grant_types},
    }
    if client.is_first_party:
        values["first_party"] = "on"
    if client.require_mfa:
        values["require_mfa"] = "on"
    return values


def _refusal(error: Exception) -> dict[str, str]:
    if isinstance(error, InvalidInput):
        return form_errors(error)
    return {"form": f"This client can't be saved: {error}."}


# -- the list and a new client --------------------------------------------------------------


def _list_page(
    console: Console,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    return console.page(
        "admin/clients.html",
        status,
        clients=repositories.list_clients(console.db),
        grants=GRANTS,
        errors=errors or {},
        values=values or {"grant_authorization_code": "on", "grant_refresh_token": "on"},
    )


def _list(console: Console) -> Response:
    count = len(repositories.list_clients(console.db))
    console.record_read("admin.clients_listed", detail={"count": count})
    return _list_page(console)


def _create(console: Console, form: dict[str, str]) -> Response:
    settings = _settings_from(form)
    try:
        with console.savepoint():
            registered = clients.register_client(
                console.db,
                **settings,
                public=bool(form.get("public")),
                context=console.context,
                actor=console.actor,
            )
    except (clients.ClientRegistrationError, InvalidInput) as error:
        return _list_page(console, 400, _refusal(error), form)
    client = registered.client
    if registered.secret is not None:
        console.keep_secret("client", client.client_id, registered.secret)
    return console.done(f"Created the client {client.name}", f"/admin/clients/{client.client_id}")


# -- one client -----------------------------------------------------------------------------


def _find(console: Console) -> Client | None:
    return repositories.get_client(console.db, console.request.path_params["client_id"][:64])


def _detail_page(
    console: Console,
    client: Client,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    return console.page(
        "admin/client.html",
        status,
        client=client,
        secret=console.take_secret("client", client.client_id),
        grants=GRANTS,
        grace_choices=GRACE_CHOICES,
        default_grace=_DEFAULT_GRACE,
        errors=errors or {},
        values=values if values is not None else _values_of(client),
    )


def _detail(console: Console) -> Response:
    client = _find(console)
    if client is None:
        return console.not_found(_NOT_FOUND, "/admin/clients")
    console.record_read("admin.client_viewed", subject=client.client_id, client_id=client.client_id)
    return _detail_page(console, client)


def _update(console: Console, form: dict[str, str]) -> Response:
    client = _find(console)
    if client is None:
        return console.not_found(_NOT_FOUND, "/admin/clients")
    try:
        with console.savepoint():
            clients.update_client(
                console.db,
                client.client_id,
                **_settings_from(form),
                actor=console.actor,
                context=console.context,
            )
    except (clients.ClientRegistrationError, InvalidInput) as error:
        return _detail_page(console, client, 400, _refusal(error), form)
    return console.done(f"Saved the client {client.name}", f"/admin/clients/{client.client_id}")


def _rotate(console: Console, form: dict[str, str]) -> Response:
    client = _find(console)
    if client is None:
        return console.not_found(_NOT_FOUND, "/admin/clients")
    grace = form.get("grace", "")
    if grace not in dict(GRACE_CHOICES):
        errors = {"form": "Check the form", "grace": "Choose how long the old secret works."}
        return _detail_page(console, client, 400, errors)
    try:
        with console.savepoint():
            secret = clients.rotate_client_secret(
                console.db,
                client.client_id,
                grace=timedelta(seconds=int(grace)),
                actor=console.actor,
                context=console.context,
            )
    except (clients.ClientRegistrationError, InvalidInput) as error:
        return _detail_page(console, client, 400, _refusal(error))
    console.keep_secret("client", client.client_id, secret)
    return console.done(
        f"Rotated the secret of {client.name}", f"/admin/clients/{client.client_id}"
    )


def _confirm_delete(console: Console) -> Response:
    client = _find(console)
    if client is None:
        return console.not_found(_NOT_FOUND, "/admin/clients")
    return console.page(
        "admin/confirm.html",
        heading=f"Delete the client {client.name}?",
        text=(
            "Its secret stops working, and the tokens, consents and sign-ins of this app "
            "end with it. This cannot be undone."
        ),
        action=f"/admin/clients/{client.client_id}/delete",
        button="Delete the client",
        back=f"/admin/clients/{client.client_id}",
    )


def _delete(console: Console, form: dict[str, str]) -> Response:
    client = _find(console)
    if client is None:
        return console.not_found(_NOT_FOUND, "/admin/clients")
    name = client.name
    clients.delete_client(
        console.db, client.client_id, context=console.context, actor=console.actor
    )
    return console.done(f"Deleted the client {name}", "/admin/clients")


# -- signing keys ---------------------------------------------------------------------------


def _store(console: Console) -> KeyStore:
    store: KeyStore = console.request.app.state.services.keys
    return store


def _keys_page(console: Console, status: int = 200, error: str | None = None) -> Response:
    records = [record.as_dict() for record in key_admin.list_keys(_store(console))]
    return console.page(
        "admin/keys.html", status, keys=records, errors={"form": error} if error else {}
    )


def _keys(console: Console) -> Response:
    return _keys_page(console)


def _rotate_keys(console: Console, form: dict[str, str]) -> Response:
    try:
        promoted = key_admin.rotate_signing_key(
            _store(console), console.db, actor=console.actor, context=console.context
        )
    except KeyStoreError as error:
        return _keys_page(console, 400, f"The keys were not rotated: {error}")
    return console.done(f"Rotated the signing keys: {promoted.kid} signs now", "/admin/keys")


def client_routes() -> list[ConsoleRoute]:
    """The client and key pages of the console."""
    on_page = _client_path
    return [
        ConsolePage("/admin/clients", _list),
        ConsoleForm("/admin/clients", _create, lambda request: "/admin/clients"),
        ConsolePage("/admin/clients/{client_id}", _detail),
        ConsoleForm("/admin/clients/{client_id}", _update, on_page),
        ConsoleForm("/admin/clients/{client_id}/rotate-secret", _rotate, on_page),
        ConsolePage("/admin/clients/{client_id}/delete", _confirm_delete),
        ConsoleForm("/admin/clients/{client_id}/delete", _delete, on_page),
        ConsolePage("/admin/keys", _keys),
        ConsoleForm("/admin/keys/rotate", _rotate_keys, lambda request: "/admin/keys"),
    ]
