"""The JSON account API under ``/api/v1``, over the same services as the hosted pages.

``OPERATIONS`` is the one table of the API: the routes are built from it and so is the
OpenAPI document (``identity.openapi``), so neither can drift from the code. A request runs
as a short pipeline: read the body (capped), then one threadpool hop and one transaction in
which the bearer token is checked (signature, ``aud``, denylist, user, scope), the body
parsed (415 unless JSON, 400 with field errors unless valid) and the handler called. Every
error is RFC 9457 ``application/problem+json``; bad input is never a 500.

Operations take one of two bearer tokens, both with ``aud`` ``{issuer}/api/v1``: a user's
with the ``account`` scope, or (``admin=True``) a client's own from the client_credentials
grant with the ``admin`` scope. Neither passes for the other. An admin operation called
without an ``Authorization`` header takes the admin console's session cookie instead
(``identity.api.authentication``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router

from identity.accounts.errors import AccountError
from identity.accounts.service import Accounts
from identity.accounts.sessions import SessionPolicy
from identity.api import accounts as api_accounts
from identity.api import me as api_me
from identity.api import me_mfa as api_mfa
from identity.api.admin_operations import ADMIN_OPERATIONS
from identity.api.authentication import (
    CSRF_HEADER,
    authenticate_admin,
    authenticate_console,
    authenticate_user,
    required_token,
)
from identity.api.bodies import (
    AccountConsents,
    AccountEvents,
    AccountSessions,
    AccountStatus,
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
from identity.api.operations import BEARER as _BEARER
from identity.api.operations import BODY as _BODY
from identity.api.operations import DOWN as _DOWN
from identity.api.operations import PREFIX, Operation
from identity.api.problems import (
    NO_STORE,
    Problem,
    from_account_error,
    from_validation,
    malformed_body,
    not_found,
)
from identity.bearer import bearer_token
from identity.config import Settings
from identity.lanes import Lanes, carries_password
from identity.security import request_context

__all__ = ["OPERATIONS", "PREFIX", "Operation", "api_routes"]
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

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
    *ADMIN_OPERATIONS,
)  # fmt: skip


# -- the request pipeline -------------------------------------------------------------------------


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


def _console_cookie(request: Request, operation: Operation) -> str | None:
    """The admin console's session cookie, when an admin operation is called with it and
    without an ``Authorization`` header (a header always decides: a token is never mixed
    with a session)."""
    if not operation.admin or "authorization" in request.headers:
        return None
    policy: SessionPolicy = request.app.state.session_policy
    return request.cookies.get(policy.cookie_name) or None


async def _handle(request: Request, operation: Operation, settings: Settings) -> Response:
    accounts: Accounts = request.app.state.accounts
    oauth = request.app.state.oauth
    context = request_context(request, settings.trusted_proxies)
    cookie = _console_cookie(request, operation)
    try:
        token = ""
        if operation.auth and cookie is None:
            token = required_token(bearer_token(request.headers), admin=operation.admin)
        raw = await request.body() if operation.request is not None else b""
    except Problem as problem:
        return problem.response()
    except HTTPException as error:  # the body-size cap
        if error.status_code != 413:
            raise
        return Problem(413, "The body is larger than this server accepts.").response()
    content_type = request.headers.get("content-type")
    # Convertors give typed values ({user_id:uuid}); handlers read the text.
    path = {name: str(value) for name, value in request.path_params.items()}

    def run() -> Response:
        with accounts.database.transaction() as db:
            call = ApiCall(db, accounts, oauth, context, path=path)
            if cookie is not None:
                authenticate_console(
                    call,
                    cookie,
                    request.app.state.session_policy,
                    method=operation.method,
                    csrf_token=request.headers.get(CSRF_HEADER),
                )
            elif operation.admin:
                authenticate_admin(call, token, settings)
            elif operation.auth:
                authenticate_user(call, token, settings)
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
