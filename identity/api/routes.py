"""The JSON account API under ``/api/v1``, over the same services as the hosted pages.

``OPERATIONS`` is the one table of the API: the routes are built from it and so is the
OpenAPI document (``identity.openapi``), so neither can drift from the code. A request runs
as a short pipeline: read the body (capped), then one threadpool hop and one transaction in
which the bearer token is checked (signature, ``aud``, denylist, user, scope), the body
parsed (415 unless JSON, 400 with field errors unless valid) and the handler called. Every
error is RFC 9457 ``application/problem+json``; bad input is never a 500.

Operations take one of two bearer tokens, both with ``aud`` ``{issuer}/api/v1``: a user's
with the ``account`` scope, or (``admin=True``) a client's own from the client_credentials
grant with the ``admin`` scope. Neither passes for the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router

from identity import repositories
from identity.accounts.errors import AccountError
from identity.accounts.service import Accounts
from identity.api import accounts as api_accounts
from identity.api import admin as api_admin
from identity.api import me as api_me
from identity.api import me_mfa as api_mfa
from identity.api.bodies import (
    AccountConsents,
    AccountEvents,
    AccountSessions,
    AccountStatus,
    AdminAuditEvents,
    AdminAuditQuery,
    ChangePasswordRequest,
    ConfirmTotpRequest,
    EmailRequest,
    EventsQuery,
    LogoutRequest,
    Me,
    Passkey,
    ReauthenticateRequest,
    RecoveryCodes,
    RegisterRequest,
    RenamePasskeyRequest,
    ResetPasswordRequest,
    SecondFactors,
    TotpSetup,
    UpdateMeRequest,
    VerifyEmailRequest,
)
from identity.api.calls import ApiCall, Reply, Result
from identity.api.problems import (
    NO_STORE,
    Problem,
    from_account_error,
    from_validation,
    insufficient_scope,
    malformed_body,
    not_found,
    unauthenticated,
)
from identity.bearer import bearer_token
from identity.config import Settings
from identity.lanes import Lanes, carries_password
from identity.protocol.scopes import ACCOUNT_SCOPE, ADMIN_SCOPE, account_audience
from identity.protocol.tokens import InvalidToken, read_access_token, token_user_id
from identity.security import request_context

PREFIX = "/api/v1"
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Operation:
    """One route of the API, as the router and the OpenAPI document see it.

    ``errors`` lists every error status the operation can answer (401 is implied by
    ``auth``); ``query`` models the query string; ``other_successes`` lists success answers
    besides ``status`` (status, body model). ``auth`` asks for a user's bearer token with
    the ``account`` scope; with ``admin`` too, for a client's own token with ``admin``."""

    method: str
    path: str
    summary: str
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    errors: tuple[int, ...]
    auth: bool
    handler: Callable[[ApiCall], Result] = field(repr=False, compare=False)
    query: type[BaseModel] | None = None
    other_successes: tuple[tuple[int, type[BaseModel] | None], ...] = ()
    admin: bool = False

    def __post_init__(self) -> None:
        if self.admin and not self.auth:
            raise ValueError(f"{self.method} {self.path}: an admin operation needs auth")


_BODY = (400, 413, 415)  # a JSON body: invalid, too large, not JSON
_DOWN = (503,)  # the database is unavailable (handled app-wide)
_BEARER = (401, 403)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", f"{PREFIX}/register", "Create an account; a code is mailed",
        RegisterRequest, AccountStatus, 202, (*_BODY, 429, *_DOWN), False,
        api_accounts.register,
    ),
    Operation(
        "POST", f"{PREFIX}/verify-email", "Verify the email address (code or link token)",
        VerifyEmailRequest, AccountStatus, 200, (*_BODY, 429, *_DOWN), False,
        api_accounts.verify_email,
    ),
    Operation(
        "POST", f"{PREFIX}/verify-email/resend", "Mail a new verification code",
        EmailRequest, AccountStatus, 202, (*_BODY, 429, *_DOWN), False,
        api_accounts.resend_verification,
    ),
    Operation(
        "POST", f"{PREFIX}/password/forgot", "Mail a password-reset link",
        EmailRequest, AccountStatus, 202, (*_BODY, 429, *_DOWN), False,
        api_accounts.forgot_password,
    ),
    Operation(
        "POST", f"{PREFIX}/password/reset", "Set a new password with a reset token",
        ResetPasswordRequest, AccountStatus, 200, (*_BODY, *_DOWN), False,
        api_accounts.reset_password,
    ),
    Operation(
        "GET", f"{PREFIX}/me", "The signed-in user",
        None, Me, 200, (*_BEARER, *_DOWN), True,
        api_me.get_me,
    ),
    Operation(
        "PATCH", f"{PREFIX}/me", "Change the name (200), or start an email change (202)",
        UpdateMeRequest, Me, 200, (*_BEARER, *_BODY, 429, *_DOWN), True,
        api_me.update_me, other_successes=((202, AccountStatus),),
    ),
    Operation(
        "POST", f"{PREFIX}/me/password", "Change the password (needs the current one)",
        ChangePasswordRequest, None, 204, (*_BEARER, *_BODY, 429, *_DOWN), True,
        api_me.change_password,
    ),
    Operation(
        "GET", f"{PREFIX}/me/sessions", "Browser sessions and app sessions (refresh tokens)",
        None, AccountSessions, 200, (*_BEARER, *_DOWN), True,
        api_me.list_sessions,
    ),
    Operation(
        "DELETE", f"{PREFIX}/me/sessions/{{session_id}}", "End one session",
        None, None, 204, (*_BEARER, 404, *_DOWN), True,
        api_me.revoke_session,
    ),
    Operation(
        "POST", f"{PREFIX}/logout", "End this access token (and a refresh token's family)",
        LogoutRequest, None, 204, (*_BEARER, *_BODY, *_DOWN), True,
        api_me.logout,
    ),
    Operation(
        "POST", f"{PREFIX}/logout-all", "End every session and token of the account",
        None, None, 204, (*_BEARER, *_DOWN), True,
        api_me.logout_everywhere,
    ),
    Operation(
        "GET", f"{PREFIX}/me/consents", "Apps the user allowed",
        None, AccountConsents, 200, (*_BEARER, *_DOWN), True,
        api_me.list_consents,
    ),
    Operation(
        "DELETE", f"{PREFIX}/me/consents/{{client_id}}", "Take an app's access away",
        None, None, 204, (*_BEARER, 404, *_DOWN), True,
        api_me.revoke_consent,
    ),
    Operation(
        "GET", f"{PREFIX}/me/events", "The user's own security events, oldest first",
        None, AccountEvents, 200, (*_BEARER, 400, *_DOWN), True,
        api_me.list_events, query=EventsQuery,
    ),
    Operation(
        "GET", f"{PREFIX}/me/mfa", "The account's second factors",
        None, SecondFactors, 200, (*_BEARER, *_DOWN), True,
        api_mfa.get_factors,
    ),
    Operation(
        "POST", f"{PREFIX}/me/mfa/totp", "Start setting up an authenticator app",
        None, TotpSetup, 201, (*_BEARER, 409, *_DOWN), True,
        api_mfa.begin_totp,
    ),
    Operation(
        "POST", f"{PREFIX}/me/mfa/totp/confirm", "Turn the app on with a code; recovery codes",
        ConfirmTotpRequest, RecoveryCodes, 200, (*_BEARER, *_BODY, 409, 429, *_DOWN), True,
        api_mfa.confirm_totp,
    ),
    Operation(
        "DELETE", f"{PREFIX}/me/mfa/totp", "Remove the app (needs a recent sign-in)",
        ReauthenticateRequest, None, 204, (*_BEARER, *_BODY, 404, 429, *_DOWN), True,
        api_mfa.remove_totp,
    ),
    Operation(
        "POST", f"{PREFIX}/me/mfa/recovery-codes", "New recovery codes (needs a recent sign-in)",
        ReauthenticateRequest, RecoveryCodes, 200, (*_BEARER, *_BODY, 409, 429, *_DOWN), True,
        api_mfa.regenerate_recovery_codes,
    ),
    Operation(
        "PATCH", f"{PREFIX}/me/mfa/passkeys/{{passkey_id}}", "Rename a passkey",
        RenamePasskeyRequest, Passkey, 200, (*_BEARER, *_BODY, 404, *_DOWN), True,
        api_mfa.rename_passkey,
    ),
    Operation(
        "DELETE", f"{PREFIX}/me/mfa/passkeys/{{passkey_id}}",
        "Remove a passkey (needs a recent sign-in)",
        ReauthenticateRequest, None, 204, (*_BEARER, *_BODY, 404, 429, *_DOWN), True,
        api_mfa.remove_passkey,
    ),
    Operation(
        "GET", f"{PREFIX}/admin/audit", "Audit events, oldest first (client token, scope admin)",
        None, AdminAuditEvents, 200, (*_BEARER, 400, *_DOWN), True,
        api_admin.list_audit, query=AdminAuditQuery, admin=True,
    ),
)  # fmt: skip


# -- the request pipeline -------------------------------------------------------------------------


def _required_token(request: Request) -> str:
    """The bearer token; 401 without a challenge error when absent (RFC 6750 §3.1)."""
    token = bearer_token(request.headers)
    if token is None:
        raise unauthenticated(None, "This operation needs a bearer access token.")
    if not token:
        raise unauthenticated("invalid_token", "The access token is empty.")
    return token


def _invalid_token() -> Problem:
    return unauthenticated("invalid_token", "The access token is invalid or has expired.")


def _token_claims(call: ApiCall, token: str, settings: Settings) -> dict[str, Any]:
    """The claims of a token valid as a resource server checks it (alg, typ, kid, iss, exp,
    ``aud`` the API's) and not on the denylist."""
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


def _authenticate(call: ApiCall, token: str, settings: Settings) -> None:
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


def _authenticate_admin(call: ApiCall, token: str, settings: Settings) -> None:
    """A client's own token (client_credentials: ``sub`` is the client), from a client that
    still exists and is still registered for ``admin``, with the ``admin`` scope. A user's
    token never passes, whatever its scope."""
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
    call.claims = claims


def _allows_empty(model: type[BaseModel]) -> bool:
    return not any(info.is_required() for info in model.model_fields.values())


def _parse_body(model: type[BaseModel], content_type: str | None, raw: bytes) -> BaseModel:
    data: Any
    if not raw.strip() and _allows_empty(model):
        data = {}
    else:
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise Problem(415, "Send the body as application/json.")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # also bad UTF-8 and over-long integers
            raise malformed_body() from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise from_validation(error) from None


def _parse_query(model: type[BaseModel], request: Request) -> BaseModel:
    try:
        return model.model_validate(dict(request.query_params.multi_items()))
    except ValidationError as error:
        raise from_validation(error) from None


def _success(operation: Operation, result: Result) -> Response:
    status, body = (
        (result.status, result.body) if isinstance(result, Reply) else (operation.status, result)
    )
    if body is None:
        return Response(status_code=status, headers=NO_STORE)
    return Response(
        body.model_dump_json(), status_code=status, media_type="application/json", headers=NO_STORE
    )


async def _handle(request: Request, operation: Operation, settings: Settings) -> Response:
    accounts: Accounts = request.app.state.accounts
    oauth = request.app.state.oauth
    context = request_context(request, settings.trusted_proxies)
    try:
        token = _required_token(request) if operation.auth else ""
        raw = await request.body() if operation.request is not None else b""
    except Problem as problem:
        return problem.response()
    except HTTPException as error:  # the body-size cap
        if error.status_code != 413:
            raise
        return Problem(413, "The body is larger than this server accepts.").response()
    content_type = request.headers.get("content-type")

    def run() -> Response:
        with accounts.database.transaction() as db:
            call = ApiCall(db, accounts, oauth, context, path=dict(request.path_params))
            if operation.admin:
                _authenticate_admin(call, token, settings)
            elif operation.auth:
                _authenticate(call, token, settings)
            if operation.request is not None:
                call.body = _parse_body(operation.request, content_type, raw)
            if operation.query is not None:
                call.query = _parse_query(operation.query, request)
            return _success(operation, operation.handler(call))

    try:
        lanes: Lanes = request.app.state.lanes
        return await lanes.run(run, password=carries_password(raw))
    except Problem as problem:
        return problem.response()
    except AccountError as error:
        return from_account_error(error).response()


def _path_route(path: str, operations: Sequence[Operation], settings: Settings) -> Route:
    """One route per path; a method it does not serve is a 405 problem with ``Allow``."""
    by_method = {operation.method: operation for operation in operations}
    allow = ", ".join(sorted({*by_method, *(["HEAD"] if "GET" in by_method else [])}))

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        operation = by_method.get(method)
        if operation is None:
            problem = Problem(405, f"Use {allow}.", headers={"Allow": allow})
            return problem.response()
        return await _handle(request, operation, settings)

    return Route(path.removeprefix(PREFIX), endpoint, methods=_ALL_METHODS)


def api_routes(settings: Settings) -> list[BaseRoute]:
    """The ``/api/v1`` mount: every operation, problem answers for unknown paths, and CORS
    for the configured origins only (no credentials: the API takes bearer tokens)."""
    paths: dict[str, list[Operation]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, []).append(operation)
    routes = [_path_route(path, operations, settings) for path, operations in paths.items()]
    router = Router(routes, redirect_slashes=False, default=not_found())
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=sorted({operation.method for operation in OPERATIONS}),
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Retry-After", "WWW-Authenticate"],
                allow_credentials=False,
                max_age=600,
            )
        )
    return [Mount(PREFIX, app=router, middleware=middleware)]
