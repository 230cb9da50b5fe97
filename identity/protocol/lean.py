"""The token endpoint's lean path for client_credentials, in the event loop.

Machine clients ask for tokens far more often than people sign in, and for them Authlib's
path costs most of a request: per-request grant objects, a threadpool hop, a session and a
transaction of its own for one audit row. Here a well-formed request from a cached client
with the right secret is answered without any of it: the client from the client cache, the
secret's digest compared in constant time, one signature in the loop (on one core a thread
would only add a hop: the signature's CPU is spent either way), and the ``token.issued`` row
through group commit (``identity.group_commit``), which the response waits for, so no token
is handed out before its audit row is durable.

It decides nothing on its own: the scope, audience and claims come from the same functions
the Authlib grant uses (``granted_scope``, ``resolve_audience``, ``within_grant``,
``with_account_audience``, ``token_body``, ``token_issued_row``). Anything it is not sure
of (a client not cached or whose cache is due for its check, a wrong or missing secret, a
grant or scope the client may not use) returns None and goes the full way through Authlib,
which gives the error, records a failed client authentication and fills the cache.
"""

from __future__ import annotations

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.responses import Response

from identity import logs, metrics
from identity.protocol.grants import (
    granted_scope,
    resolve_audience,
    token_body,
    with_account_audience,
    within_grant,
)
from identity.protocol.requests import StarletteOAuth2Request
from identity.protocol.server import IdentityServer, token_issued_row

GRANT_TYPE = "client_credentials"


async def client_credentials(
    server: IdentityServer, request: StarletteOAuth2Request
) -> Response | None:
    """The token response for a client_credentials request that checks out in memory; None
    when the full path must answer."""
    if request.payload.grant_type != GRANT_TYPE:
        return None
    client = server.client_in_memory(request, "token")
    if client is None or not client.check_grant_type(GRANT_TYPE):
        return None
    request.client = client
    try:
        scope = granted_scope(client, request.payload.scope)
        audience = within_grant(resolve_audience(client, request), request)
    except OAuth2Error:
        return None  # the full path raises the same error, in Authlib's response
    issuer = server.issuer
    issued = issuer.issue(
        client_id=client.client_id,
        subject=client.client_id,
        audience=with_account_audience(audience, scope, None, issuer.issuer, client.client_id),
        scope=scope,
    )
    await server.audit_writer.record(token_issued_row(request, issued))
    metrics.count_token(GRANT_TYPE)
    logs.note(client_id=client.client_id)
    return server.handle_response(200, token_body(issued, scope), default_json_headers)
