"""Introspection of access tokens in the event loop (RFC 7662), for the common case.

A resource server introspecting a well-formed access token with its own credentials needs no
database: the client is in the client cache, the token's signature and claims are checked
against the key ring in memory, the token's user (if it has one) is in the user cache, and
the denylist answers from Redis in the same round trip that counts the client's limit (or,
embedded, from the SQLite file, whose readers never wait: ``Database.read_in_loop``). That
case is answered here without a thread. Everything else (a client or user not cached or
whose cache is due for its check, bad credentials, a refresh token, a token that does not
verify, a denylist only a thread can ask) returns None and goes through Authlib in a
thread, which also records failed client authentication. Both paths give the same answers:
they share the rules (``access_token_shown_to``, ``IdentityServer.subject_is_active``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from identity import logs
from identity.limits import RateLimiter
from identity.models import Client
from identity.protocol.endpoints import access_token_introspection, access_token_shown_to
from identity.protocol.requests import StarletteOAuth2Request
from identity.protocol.server import IdentityServer
from identity.protocol.throttle import limit_key, slow_down
from identity.protocol.tokens import InvalidToken, read_access_token

# What Authlib's endpoint answers with (authlib.consts.default_json_headers).
_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


def _verified(
    server: IdentityServer, request: StarletteOAuth2Request
) -> tuple[Client, dict[str, Any]] | None:
    """The cached client and the access token's claims, when both check out in memory."""
    token = request.form.get("token")
    if not token or request.form.get("token_type_hint") not in (None, "access_token"):
        return None
    client = server.client_in_memory(request, "introspection")
    if client is None:
        return None
    try:
        claims = read_access_token(
            token, server.issuer.keys.ring(), issuer=server.issuer.issuer, leeway=0
        )
    except InvalidToken:
        return None
    return client, claims


async def introspect_in_loop(
    server: IdentityServer, limiter: RateLimiter, request: StarletteOAuth2Request
) -> Response | None:
    """Count the client's introspection limit and, when it can, answer: the limit and the
    denylist in one Redis round trip. None when the full path must answer (the limit is
    counted then already)."""
    verified = _verified(server, request)
    reads = server.denylist.reads_for(verified[1]["jti"]) if verified else None
    decision, answers = await limiter.hit_with_reads(
        "introspect.client", limit_key(request), reads or ()
    )
    if not decision.allowed:
        return slow_down(decision)
    if verified is None:
        return None
    if reads is None:  # no Redis: the embedded database may answer from the loop
        revoked = server.denylist.is_revoked_locally(verified[1]["jti"])
    else:
        revoked = server.denylist.answer(answers)
    if revoked is None:
        return None
    client, claims = verified
    # The rules of TokenIntrospection, in its order: who may see it, then whether it lives.
    shown = access_token_shown_to(client.client_id, claims)
    active = shown and not revoked and server.subject_is_active(claims, None)
    if active is None:
        return None  # the user is not cached (or due for its check): the database decides
    logs.note(client_id=client.client_id)
    body = access_token_introspection(claims) if active else {"active": False}
    return Response(json.dumps(body, separators=(",", ":")), headers=_HEADERS)
