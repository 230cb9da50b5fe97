"""JSON API handlers for operators' work on OAuth clients (``/api/v1/admin/clients...``):
thin calls into ``protocol.clients``, whose rules are registration's for every update too,
and which moves the clients' cache generation so every instance drops its copy. A secret
is in an answer once: the creation's or the rotation's."""

from __future__ import annotations

import re
from datetime import timedelta

from identity import repositories
from identity.api.admin_bodies import (
    AdminClient,
    AdminClients,
    AdminCreateClientRequest,
    AdminCreatedClient,
    AdminRotatedSecret,
    AdminRotateSecretRequest,
    AdminUpdateClientRequest,
)
from identity.api.calls import ApiCall, Result
from identity.api.problems import Problem, conflict, invalid_input, not_found
from identity.models import Client
from identity.protocol import clients
from identity.protocol.clients import ClientRegistrationError

# Client ids are of this shape; anything else (a NUL byte PostgreSQL would refuse, a
# megabyte of text) is a 404 before any query.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NO_CLIENT = "There is no client with this id."
# Which field a refusal of ``protocol.clients`` is about, by the words of its message (the
# first match wins: "authorization_code needs a --redirect-uri" is about redirect URIs).
_FIELDS = (
    ("role prefix", "role_prefixes"),
    ("redirect", "redirect_uris"),
    ("audience", "audience"),
    ("grace", "grace_seconds"),
    ("grant", "grant_types"),
    ("client_credentials", "grant_types"),
    ("scope", "scope"),
    ("name", "name"),
)


def _sentence(error: ClientRegistrationError) -> str:
    message = str(error)
    return message[:1].upper() + message[1:] + "."


def _refused(error: ClientRegistrationError) -> Problem:
    """A 400 naming the field the refused rule is about."""
    lower = str(error).lower()
    field = next((name for words, name in _FIELDS if words in lower), "body")
    return invalid_input({field: _sentence(error)})


def _client_id(call: ApiCall) -> str:
    client_id = call.path["client_id"]
    if not _ID.fullmatch(client_id):
        raise not_found(_NO_CLIENT)
    return client_id


def _client(call: ApiCall) -> Client:
    client = repositories.get_client(call.db, _client_id(call))
    if client is None:
        raise not_found(_NO_CLIENT)
    return client


def _shown(client: Client) -> AdminClient:
    return AdminClient.model_validate(clients.describe(client))


def _check_post_logout_uris(uris: list[str] | None) -> None:
    """Post-logout URIs follow the redirect URIs' rule, whose refusal reads the same: told
    apart here, on their own field."""
    for uri in uris or ():
        try:
            clients.validate_redirect_uri(uri)
        except ClientRegistrationError as error:
            raise invalid_input({"post_logout_redirect_uris": _sentence(error)}) from None


def list_clients(call: ApiCall) -> Result:
    rows = repositories.list_clients(call.db)
    call.record("admin.clients_listed", detail={"count": len(rows)})
    return AdminClients(clients=[_shown(client) for client in rows])


def get_client(call: ApiCall) -> Result:
    client = _client(call)
    call.record("admin.client_viewed", subject=client.client_id, client_id=client.client_id)
    return _shown(client)


def create_client(call: ApiCall) -> Result:
    body = call.body_as(AdminCreateClientRequest)
    _check_post_logout_uris(body.post_logout_redirect_uris)
    try:
        registered = clients.register_client(
            call.db, **body.model_dump(), actor=call.operator, context=call.context
        )
    except ClientRegistrationError as error:
        raise _refused(error) from None
    shown = clients.describe(registered.client)
    return AdminCreatedClient.model_validate({**shown, "client_secret": registered.secret})


def update_client(call: ApiCall) -> Result:
    body = call.body_as(AdminUpdateClientRequest)
    client_id = _client_id(call)
    _check_post_logout_uris(body.post_logout_redirect_uris)
    try:
        client = clients.update_client(
            call.db,
            client_id,
            **body.model_dump(exclude_none=True),
            actor=call.operator,
            context=call.context,
        )
    except LookupError:
        raise not_found(_NO_CLIENT) from None
    except ClientRegistrationError as error:
        raise _refused(error) from None
    return _shown(client)


def delete_client(call: ApiCall) -> Result:
    try:
        clients.delete_client(call.db, _client_id(call), context=call.context, actor=call.operator)
    except LookupError:
        raise not_found(_NO_CLIENT) from None
    return None


def rotate_secret(call: ApiCall) -> Result:
    """A new secret, shown once; the old one works for ``grace_seconds`` more."""
    grace = timedelta(seconds=call.body_as(AdminRotateSecretRequest).grace_seconds)
    client = _client(call)
    if client.is_public:
        raise conflict("A public client has no secret.", "public-client", "Public client")
    try:
        secret = clients.rotate_client_secret(
            call.db, client.client_id, grace=grace, actor=call.operator, context=call.context
        )
    except ClientRegistrationError as error:
        raise _refused(error) from None
    return AdminRotatedSecret(
        client_id=client.client_id,
        client_secret=secret,
        previous_secret_expires_at=client.previous_secret_expires_at,
    )
