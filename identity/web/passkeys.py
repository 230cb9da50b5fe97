"""Passkeys (WebAuthn): the JSON endpoints that ``templates/static/passkeys.js`` calls.

A page that offers passkeys carries, in its ``<head>``::

    <meta name="csrf-token" content="{{ csrf_token }}">
    <script src="/static/passkeys.js" defer></script>

The script sends that token in an ``X-CSRF-Token`` header with every POST; it is checked
against the browser session's own token (as a form's ``csrf_token`` field is) before
anything else, so another site cannot start or finish a ceremony in the person's name. The
ceremony's state (its challenge) lives in the browser session's server-side data, never in
a cookie or the page, and is used once.

Every endpoint is a POST with a JSON object in and out:

- ``/passkeys/register/options`` (signed in): the options for ``navigator.credentials.create()``.
- ``/passkeys/register`` (signed in), ``{"credential": ..., "name": ...}``: adds the passkey.
- ``/passkeys/login/options``, ``{}`` or ``{"second_factor": true}`` (after a password, for
  the sign-in waiting for its second factor): the options for ``navigator.credentials.get()``.
- ``/passkeys/login``, ``{"credential": ..., "next": ...}``: signs the browser in (a new
  session) and answers ``{"redirect": path}``.

Refusals answer ``{"error": code, "message": sentence}`` with 400, 403 or 429; all of them
answer 404 when passkeys are off (an issuer on an IP address)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from identity import audit, repositories
from identity.accounts import factors, passkeys, recovery_codes, sessions
from identity.accounts.errors import (
    AccountError,
    InvalidInput,
    ReauthenticationRequired,
    Throttled,
)
from identity.rendering import NO_STORE
from identity.web.authorize import pending_resume_path
from identity.web.pages import (
    NEW_RECOVERY_CODES,
    Visit,
    accounts_of,
    policy_of,
    safe_next,
    show_recovery_codes_once,
    transact,
)

CSRF_HEADER = "X-CSRF-Token"
# Keys of the browser session's data that hold a ceremony's state.
_REGISTRATION = "passkey_registration"
_AUTHENTICATION = "passkey_authentication"

Work = Callable[[Request, Visit, dict[str, Any]], Response]


def _answer(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **headers})


def _problem(status: int, error: str, message: str, **headers: str) -> JSONResponse:
    return _answer({"error": error, "message": message}, status, **headers)


def _refusal(error: AccountError) -> JSONResponse:
    if isinstance(error, Throttled):
        return _problem(429, error.code, str(error), **{"Retry-After": str(error.retry_after)})
    if isinstance(error, ReauthenticationRequired):
        return _problem(403, error.code, "Confirm it's you first: sign in again.")
    body: dict[str, Any] = {"error": error.code, "message": str(error)}
    if isinstance(error, InvalidInput):
        body["fields"] = error.fields
    return _answer(body, 400)


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object (an empty body is an empty one); None when it is not one.
    An oversize body raises the app's 413 on the way."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return body if isinstance(body, dict) else None


def _endpoint(work: Work) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``work`` in the checks every passkey endpoint makes, in this order: passkeys on,
    a JSON object, the CSRF header; then one transaction, refusals answered as JSON."""

    async def endpoint(request: Request) -> Response:
        if not passkeys.available(accounts_of(request).settings):
            return _problem(404, "not_found", "Passkeys are not available on this server.")
        body = await _json_object(request)
        if body is None:
            return _problem(400, "invalid_request", "Send a JSON object.")
        token = request.headers.get(CSRF_HEADER)

        def guarded(visit: Visit) -> Response:
            if not sessions.csrf_matches(visit.browser, token):
                return _problem(403, "csrf_rejected", "This page expired. Reload it and try again.")
            try:
                return work(request, visit, body)
            except AccountError as error:
                # Answered, so the transaction commits: a used challenge stays used.
                return _refusal(error)

        return await transact(request, guarded)

    return endpoint


def _keep(visit: Visit, key: str, state: dict[str, Any]) -> None:
    assert visit.browser is not None  # the CSRF check found it
    visit.browser.data = {**visit.browser.data, key: state}


def _take(visit: Visit, key: str) -> dict[str, Any] | None:
    """The ceremony's state, gone from the session: each challenge is answered once."""
    assert visit.browser is not None
    state = visit.browser.data.get(key)
    visit.browser.data = {k: v for k, v in visit.browser.data.items() if k != key}
    return state if isinstance(state, dict) else None


def _options(options_json: str) -> Response:
    return Response(options_json, media_type="application/json", headers=NO_STORE)


def _credential(body: dict[str, Any]) -> str | None:
    credential = body.get("credential")
    return json.dumps(credential) if isinstance(credential, dict) else None


# -- adding a passkey ----------------------------------------------------------------------


def _registration_options(request: Request, visit: Visit, body: dict[str, Any]) -> Response:
    if visit.user is None:
        return _problem(403, "login_required", "Sign in to add a passkey.")
    assert visit.browser is not None  # the CSRF check found it
    options, state = passkeys.registration_options(
        accounts_of(request), visit.db, visit.user, authenticated_at=visit.browser.auth_time
    )
    _keep(visit, _REGISTRATION, state)
    return _options(options)


def _register(request: Request, visit: Visit, body: dict[str, Any]) -> Response:
    if visit.user is None:
        return _problem(403, "login_required", "Sign in to add a passkey.")
    credential, name = _credential(body), body.get("name", "")
    if credential is None or not isinstance(name, str):
        return _problem(400, "invalid_request", "Send the passkey as a JSON object.")
    # The service reads the state before the session's row changes: on SQLite a refusal's
    # audit row (its own transaction) would otherwise wait for this one's write lock.
    state = visit.browser.data.get(_REGISTRATION) if visit.browser else None
    try:
        passkey = passkeys.finish_registration(
            accounts_of(request),
            visit.db,
            visit.user,
            state if isinstance(state, dict) else None,
            credential,
            name,
            visit.context,
        )
    except InvalidInput:
        raise  # a refused name: the same answer may come again with another
    except AccountError:
        _take(visit, _REGISTRATION)
        raise
    _take(visit, _REGISTRATION)
    accounts, user = accounts_of(request), visit.user
    assert visit.browser is not None
    if "mfa" not in (visit.browser.amr or []):
        # Made with user verification, in a session just confirmed: like an authenticator
        # app's first code, it is this session's second factor (an app asking for two goes on).
        audit.record(
            visit.db,
            "mfa.step_up",
            context=visit.context,
            subject=str(user.id),
            detail={"factor": "passkey"},
        )
        visit.new_cookie, visit.browser = sessions.start_authenticated(
            visit.db,
            visit.browser,
            user.id,
            accounts.now(),
            policy_of(request),
            visit.context,
            factors.with_factor(visit.browser.amr or ["pwd"], "hwk"),
            idp=visit.browser.idp,
        )
    next_path = safe_next(str(body.get("next") or ""), "")
    codes = recovery_codes.recovery_codes_for_first_factor(accounts, visit.db, user)
    if codes:
        show_recovery_codes_once(accounts, visit.browser, codes, next_path)
        return _answer({"id": passkey.id, "name": passkey.name, "redirect": NEW_RECOVERY_CODES})
    visit.flash(f"Your passkey “{passkey.name}” was added.")
    return _answer({"id": passkey.id, "name": passkey.name, "redirect": next_path or "/account"})


# -- signing in ----------------------------------------------------------------------------


def _authentication_options(request: Request, visit: Visit, body: dict[str, Any]) -> Response:
    accounts = accounts_of(request)
    user = None
    if body.get("second_factor") is True:
        pending = sessions.pending_sign_in(visit.browser, accounts.now())
        user = repositories.get_user(visit.db, pending.user_id) if pending else None
        if user is None or (pending is not None and not pending.still_valid_for(user)):
            return _problem(400, "no_pending_sign_in", "Sign in with your password again.")
    options, state = passkeys.authentication_options(accounts, visit.db, user)
    _keep(visit, _AUTHENTICATION, state)
    return _options(options)


def _sign_in(request: Request, visit: Visit, body: dict[str, Any]) -> Response:
    accounts, policy = accounts_of(request), policy_of(request)
    credential = _credential(body)
    if credential is None:
        return _problem(400, "invalid_request", "Send the passkey as a JSON object.")
    assert visit.browser is not None  # the CSRF check found it
    found = visit.browser.data.get(_AUTHENTICATION)
    state: dict[str, Any] | None = found if isinstance(found, dict) else None
    # Options made for a user are the second step of the sign-in waiting in this browser.
    second_for = str(state.get("user") or "") if state else ""
    pending = sessions.pending_sign_in(visit.browser, accounts.now()) if second_for else None
    if second_for and (pending is None or str(pending.user_id) != second_for):
        _take(visit, _AUTHENTICATION)
        return _problem(400, "no_pending_sign_in", "Sign in with your password again.")
    try:
        user = passkeys.finish_authentication(
            accounts,
            visit.db,
            state,
            credential,
            visit.context,
            expected_user_id=pending.user_id if pending else None,
        )
    finally:
        _take(visit, _AUTHENTICATION)
    if pending is not None and not pending.still_valid_for(user):
        sessions.forget_pending_sign_in(visit.browser)
        return _problem(400, "no_pending_sign_in", "Sign in with your password again.")
    idp = None
    if pending is not None:
        amr, wanted = factors.with_factor(pending.amr, "hwk"), pending.next_path
        idp = pending.idp
    else:
        amr, wanted = list(passkeys.PASSKEY_AMR), str(body.get("next") or "")
    # A sign-in finished here supersedes any other half-done one in this browser.
    sessions.forget_pending_sign_in(visit.browser)
    resume = pending_resume_path(visit)
    visit.new_cookie, visit.browser = sessions.start_authenticated(
        visit.db, visit.browser, user.id, accounts.now(), policy, visit.context, amr, idp=idp
    )
    visit.user = user
    return _answer({"redirect": safe_next(wanted, resume or "/account")})


def passkey_routes() -> list[BaseRoute]:
    """The JSON endpoints of the passkey ceremonies (see the module's docstring)."""
    return [
        Route("/passkeys/register/options", _endpoint(_registration_options), methods=["POST"]),
        Route("/passkeys/register", _endpoint(_register), methods=["POST"]),
        Route("/passkeys/login/options", _endpoint(_authentication_options), methods=["POST"]),
        Route("/passkeys/login", _endpoint(_sign_in), methods=["POST"]),
    ]
