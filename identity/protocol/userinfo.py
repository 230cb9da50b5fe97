"""UserInfo (OIDC Core 5.3), on GET and POST, with RFC 6750 bearer errors."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from identity.bearer import bearer_token
from identity.models import User
from identity.protocol.grants import role_claims, user_claims
from identity.protocol.scopes import ROLES_SCOPE
from identity.protocol.server import IdentityServer
from identity.protocol.tokens import InvalidToken, read_access_token, token_user_id


def _bearer_error(status: int, error: str | None, description: str = "") -> Response:
    challenge = 'Bearer realm="identity"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    body = (
        {"error": error, "error_description": description}
        if error
        else {"error": "invalid_request"}
    )
    return JSONResponse(
        body,
        status_code=status,
        headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"},
    )


async def _token_of(request: Request) -> str | None:
    """The header's bearer token, else the form's ``access_token`` (RFC 6750 §2.1, §2.2)."""
    token = bearer_token(request.headers)
    if token:
        return token
    # A "Bearer" header with nothing after it is no token, so the form may still carry one
    # (HTTP servers strip trailing whitespace: "Bearer " arrives as "Bearer").
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = await request.form(max_files=0, max_fields=10)
        value = form.get("access_token")
        return value if isinstance(value, str) else None
    return None


async def userinfo(request: Request) -> Response:
    server: IdentityServer = request.app.state.oauth
    token = await _token_of(request)
    if not token:
        return _bearer_error(401, None)
    try:
        claims = read_access_token(token, server.issuer.keys.ring(), issuer=server.settings.issuer)
    except InvalidToken:
        return _bearer_error(401, "invalid_token", "The access token is invalid or expired.")
    if "openid" not in str(claims.get("scope", "")).split():
        return _bearer_error(403, "insufficient_scope", "The token lacks the openid scope.")

    try:
        user_id = token_user_id(claims)  # None for a client's own token: no claims to show
    except InvalidToken:
        user_id = None
    scope = str(claims.get("scope", ""))
    # The roles are read as they are now, from the database: never from memory alone.
    wants_roles = ROLES_SCOPE in scope.split()
    # Redis answers the denylist from the loop and the user may be cached: then no thread.
    revoked = await server.denylist.is_revoked_in_loop(claims["jti"])
    user = None
    if user_id is not None and revoked is False and not wants_roles:
        user = server.users.peek(user_id)
    roles: dict[str, Any] = {}

    def load() -> User | None:
        nonlocal roles
        with server.database.transaction() as session:
            if revoked or (revoked is None and server.denylist.is_revoked(claims["jti"], session)):
                return None
            found = server.users.get(session, user_id) if user_id is not None else None
            if found is not None and wants_roles:
                client = server.clients.get(session, str(claims["client_id"]))
                roles = role_claims(session, found, client, scope)
            return found

    if user is None and not revoked:
        user = await server.lanes.run(load)
    info = None
    if user is not None and user.is_active:
        info = {"sub": str(user.id), **user_claims(user, scope), **roles}
    if info is None:
        return _bearer_error(
            401, "invalid_token", "The access token is revoked or its user is gone."
        )
    return JSONResponse(info, headers={"Cache-Control": "no-store"})
