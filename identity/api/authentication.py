"""Who calls the JSON API: the bearer token of a user (``account`` scope), or, for the admin
operations, a client's own token with the ``admin`` scope or an administrator's session of
the admin console. Each check runs in the call's transaction and fills in the ``ApiCall``.

Every token is checked as a resource server would (signature, ``alg``, ``typ``, ``kid``,
``iss``, ``exp``, ``aud`` the API's ``{issuer}/api/v1``) and against the denylist.
"""

from __future__ import annotations

from typing import Any

from identity import repositories
from identity.accounts import operators, sessions
from identity.api.calls import ApiCall
from identity.api.problems import URN, Problem, insufficient_scope, unauthenticated
from identity.config import Settings
from identity.protocol.scopes import ACCOUNT_SCOPE, ADMIN_SCOPE, account_audience
from identity.protocol.tokens import InvalidToken, read_access_token, token_user_id

# Methods that change nothing: a console session makes them without a CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD"})
CSRF_HEADER = "X-CSRF-Token"
_NO_CREDENTIALS = (
    "This operation needs a bearer access token (or the admin console's session of an "
    "administrator)."
)


def required_token(token: str | None, *, admin: bool = False) -> str:
    """The bearer token; 401 without a challenge error when absent (RFC 6750 §3.1)."""
    if token is None:
        detail = _NO_CREDENTIALS if admin else "This operation needs a bearer access token."
        raise unauthenticated(None, detail)
    if not token:
        raise unauthenticated("invalid_token", "The access token is empty.")
    return token


def _invalid_token() -> Problem:
    return unauthenticated("invalid_token", "The access token is invalid or has expired.")


def _token_claims(call: ApiCall, token: str, settings: Settings) -> dict[str, Any]:
    """The claims of a token valid as a resource server checks it and not on the denylist."""
    try:
        claims = read_access_token(
            token,
            call.oauth.issuer.keys.ring(),
            issuer=settings.issuer,
            audience=account_audience(settings.issuer),
        )
    except InvalidToken:
        raise _invalid_token() from None
    if call.oauth.denylist.is_revoked(claims["jti"], call.db):
        raise unauthenticated("invalid_token", "The access token has been revoked.")
    return claims


def authenticate_user(call: ApiCall, token: str, settings: Settings) -> None:
    """Validate as a resource server would, then the denylist, the user and the scope."""
    invalid = _invalid_token()
    claims = _token_claims(call, token, settings)
    try:
        user_id = token_user_id(claims)  # None for a client's own token: not a user's
    except InvalidToken:
        user_id = None
    # Read in this request's transaction rather than from the user cache (``oauth.users``):
    # handlers change the row (name, password), which a shared detached copy must not see,
    # and the API is no hot path. A disabled or deleted user is refused at once.
    user = repositories.get_user(call.db, user_id) if user_id is not None else None
    if user is None or not user.is_active:
        raise invalid
    if ACCOUNT_SCOPE not in str(claims.get("scope", "")).split():
        raise insufficient_scope(ACCOUNT_SCOPE)
    call.user, call.claims = user, claims


def authenticate_admin(call: ApiCall, token: str, settings: Settings) -> None:
    """A client's own token (client_credentials: ``sub`` is the client), from a client that
    still exists and is still registered for ``admin``, with the ``admin`` scope. A user's
    token never passes, whatever its scope. The client is the calls' actor."""
    claims = _token_claims(call, token, settings)
    client_id = claims["client_id"]
    if claims.get("sub") != client_id:
        raise insufficient_scope(ADMIN_SCOPE)  # a user's token
    client = repositories.get_client(call.db, client_id)
    if client is None:
        raise _invalid_token()
    granted = str(claims.get("scope", "")).split()
    if ADMIN_SCOPE not in granted or not client.has_scope(ADMIN_SCOPE):
        raise insufficient_scope(ADMIN_SCOPE)
    call.claims, call.actor = claims, str(client_id)


def authenticate_console(
    call: ApiCall,
    cookie: str,
    policy: sessions.SessionPolicy,
    *,
    method: str,
    csrf_token: str | None,
) -> None:
    """The admin console's browser session, sent by the console's own pages instead of a
    token: it must be signed in and pass ``operators.is_console_admin`` (the role ``admin``
    and a second factor), and a call that changes something must carry the session's CSRF
    token in ``X-CSRF-Token`` (a cookie alone is what a forged cross-site request has).
    The administrator is the call's actor."""
    browser = sessions.load(call.db, cookie, call.accounts.now(), policy)
    user = None
    if browser is not None and browser.user_id is not None:
        user = repositories.get_user(call.db, browser.user_id)
    if browser is None or user is None or not user.is_active:
        raise unauthenticated(None, _NO_CREDENTIALS)
    if not operators.is_console_admin(call.db, browser):
        raise Problem(
            403,
            "The admin API takes the session of an administrator who signed in with a "
            "second factor.",
            type=URN + "administrator-required",
            title="Administrator required",
        )
    if method not in SAFE_METHODS and not sessions.csrf_matches(browser, csrf_token):
        raise Problem(
            403,
            f"Send the session's CSRF token in the {CSRF_HEADER} header.",
            type=URN + "csrf-token-required",
            title="CSRF token required",
        )
    call.user, call.actor = user, str(user.id)
