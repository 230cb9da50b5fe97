"""The authorization endpoint: Authlib validates the request, our pages log the user in (or
sign them up) and ask consent, then the client gets a code.

The request waits server-side in the browser session under a random id, never in a URL a
user could edit. Every answer that goes back to the client carries ``iss`` (RFC 9207); an
unknown client or redirect URI gets an error page and no redirect at all.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote, unquote, urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    InteractionRequiredError,
    LoginRequiredError,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import audit, repositories
from identity.accounts import factors
from identity.models import Client, utcnow
from identity.protocol.requests import StarletteOAuth2Request, issuer_uri, read_oauth2_request
from identity.protocol.scopes import describe_scopes
from identity.protocol.server import IdentityServer
from identity.protocol.tokens import Authentication
from identity.security import request_context
from identity.web.pages import Visit, message, read_form, redirect, render, transact
from identity.web.two_factor import second_factor_redirect

PENDING = "authorize"
_MAX_PENDING = 5
_PROMPTS = {"none", "login", "consent", "create", "select_account"}


def _server(request: Request) -> IdentityServer:
    server: IdentityServer = request.app.state.oauth
    return server


def _with_iss(response: Response, issuer: str, status: int | None = None) -> Response:
    """RFC 9207: tell the client who answered, on success and on error.

    Not Authlib's ``rfc9207.IssuerParameter``: it hooks only
    ``create_authorization_response``, so the error redirects made here from
    ``get_consent_grant`` and ``prompt=none`` would go out without ``iss``; and it rewrites
    a ``response.location`` attribute that Starlette's responses do not have."""
    location = response.headers.get("location")
    if location:
        response.headers["location"] = add_params_to_uri(location, [("iss", issuer)])
        if status is not None:
            response.status_code = status
    response.headers["cache-control"] = "no-store"
    return response


def _fail(
    request: Request,
    visit: Visit,
    oauth_request: StarletteOAuth2Request,
    error: OAuth2Error,
    status: int | None = None,
) -> Response:
    """Redirect the error to the client once its redirect URI is known good; else a page."""
    server = _server(request)
    client_id = oauth_request.payload.client_id
    audit.record(
        visit.db,
        "authorize.failed",
        context=visit.context,
        outcome="failure",
        subject=str(visit.user.id) if visit.user else None,
        client_id=client_id if client_id and len(client_id) <= 64 else None,
        detail={"error": error.error},
    )
    if getattr(error, "redirect_uri", None):
        return _with_iss(
            server.handle_error_response(oauth_request, error), server.settings.issuer, status
        )
    return _stopped(request, visit, oauth_request, error.error)


def _stopped(
    request: Request, visit: Visit, oauth_request: StarletteOAuth2Request, error: str
) -> Response:
    """The page of a request whose answer cannot go back to an app: it names no registered
    app, or an address its app never registered (a redirect would lead the person who knows
    where). Plain words, never the request's own text; the error code is for developers."""
    client_id = oauth_request.payload.client_id or ""
    client = repositories.get_client(visit.db, client_id) if 0 < len(client_id) <= 64 else None
    if client is None:
        heading = "We don't know this app"
        text = (
            "The app that sent you here is not registered with identity, so you can't sign "
            "in to it from here. Go back to the app and try again, and if this keeps "
            "happening, let the people who run it know."
        )
    elif not _returns_to_registered(client, oauth_request.payload.redirect_uri):
        heading = f"We can't send you back to {client.name}"
        text = (
            f"{client.name} asked us to send you back to an address it has not registered "
            "with identity, so for your safety we stopped here. Go back to "
            f"{client.name} and try again, and if this keeps happening, let the people who "
            "run it know."
        )
    else:
        heading = "This sign-in link doesn't work"
        text = (
            f"The link from {client.name} is incomplete or damaged, so we can't continue. "
            f"Go back to {client.name} and try again."
        )
    return message(request, visit, heading, text, 400, detail=_developer_note(error))


def _returns_to_registered(client: Client, redirect_uri: str | None) -> bool:
    if redirect_uri is None:
        return client.get_default_redirect_uri() is not None
    return bool(client.check_redirect_uri(redirect_uri))


def _developer_note(error: str) -> str:
    return f"For the app's developers: the error is {error}."


def _rebuild(request: Request, visit: Visit, params: dict[str, str]) -> StarletteOAuth2Request:
    issuer = _server(request).settings.issuer
    query = list(params.items())
    return StarletteOAuth2Request(
        "GET",
        issuer_uri(issuer, f"/oauth2/authorize?{urlencode(query)}"),
        request.headers,
        query,
        [],
        visit.context,
    )


async def authorize(request: Request) -> Response:
    """GET or POST /oauth2/authorize: validate, remember, continue."""
    server = _server(request)
    context = request_context(request, server.settings.trusted_proxies)
    try:
        oauth_request = await read_oauth2_request(request, server.settings.issuer, context)
    except OAuth2Error as error:
        text = (
            "The link that brought you here is incomplete or damaged, so we can't continue. "
            "Go back to the app you came from and try again."
        )
        note = _developer_note(error.error)
        return await transact(
            request,
            lambda visit: message(
                request, visit, "This sign-in link doesn't work", text, 400, detail=note
            ),
        )

    def start(visit: Visit) -> Response:
        with server.using(visit.db, oauth_request):
            try:
                server.get_consent_grant(oauth_request, end_user=None)
                _check_prompt(oauth_request)
            except OAuth2Error as error:
                return _fail(request, visit, oauth_request, error)
        browser = visit.ensure_browser(request.app.state.accounts)
        pending = dict(browser.data.get(PENDING, {}))
        while len(pending) >= _MAX_PENDING:  # oldest first: dicts keep insertion order
            pending.pop(next(iter(pending)))
        rid = secrets.token_urlsafe(16)
        pending[rid] = {"params": dict(oauth_request.payload.data), "at": utcnow().timestamp()}
        browser.data = {**browser.data, PENDING: pending}
        return _continue(request, visit, rid)

    return await transact(request, start)


def _check_prompt(oauth_request: StarletteOAuth2Request) -> None:
    prompts = set((oauth_request.payload.data.get("prompt") or "").split())
    if not prompts <= _PROMPTS or ("none" in prompts and len(prompts) > 1):
        raise InvalidRequestError("Unsupported or contradictory prompt.")
    max_age = oauth_request.payload.data.get("max_age")
    if max_age is not None and (not max_age.isdigit() or len(max_age) > 9):
        raise InvalidRequestError("max_age must be a whole number of seconds.")


def _continue(request: Request, visit: Visit, rid: str) -> Response:
    """Take the remembered request one step further: login, consent, or the code."""
    server = _server(request)
    entry = (visit.browser.data.get(PENDING, {}) if visit.browser else {}).get(rid)
    if entry is None:
        return message(
            request,
            visit,
            "This sign-in expired",
            "Go back to the app you came from and start again.",
            400,
        )
    params: dict[str, str] = entry["params"]
    oauth_request = _rebuild(request, visit, params)
    with server.using(visit.db, oauth_request):
        try:
            grant = server.get_consent_grant(oauth_request, end_user=visit.user)
            _check_prompt(oauth_request)
        except OAuth2Error as error:
            return _fail(request, visit, oauth_request, error)
        client: Client = oauth_request.client
        prompts = set((params.get("prompt") or "").split())
        browser, user = visit.browser, visit.user
        requested_at = float(entry["at"])
        fresh = (
            browser is not None
            and browser.auth_time is not None
            and (browser.auth_time.timestamp() >= requested_at)
        )
        needs_login = user is None or browser is None or browser.auth_time is None
        if not needs_login and not fresh:
            assert browser is not None and browser.auth_time is not None
            age = utcnow().timestamp() - browser.auth_time.timestamp()
            max_age = params.get("max_age")
            needs_login = "login" in prompts or (max_age is not None and age > int(max_age))
        if needs_login:
            if "none" in prompts:
                return _fail(
                    request,
                    visit,
                    oauth_request,
                    _redirectable(LoginRequiredError(), oauth_request),
                )
            target = "/signup" if "create" in prompts else "/login"
            query = {"next": f"/oauth2/authorize/resume?rid={rid}"}
            if params.get("login_hint"):
                query["email"] = params["login_hint"][:320]
            return redirect(f"{target}?{urlencode(query)}")
        assert user is not None and browser is not None and browser.auth_time is not None
        if _wants_two_factors(client, params) and "mfa" not in (browser.amr or []):
            if "none" in prompts:
                return _fail(
                    request,
                    visit,
                    oauth_request,
                    _redirectable(InteractionRequiredError(), oauth_request),
                )
            return second_factor_redirect(visit, user, f"/oauth2/authorize/resume?rid={rid}")
        scope = oauth_request.scope or ""
        if not client.is_first_party and not entry.get("consented"):
            consent = repositories.get_consent(visit.db, user.id, client.client_id)
            covered = consent is not None and set(scope.split()) <= set(consent.scope.split())
            if "consent" in prompts or not covered:
                if "none" in prompts:
                    return _fail(
                        request,
                        visit,
                        oauth_request,
                        _redirectable(ConsentRequiredError(), oauth_request),
                    )
                return render(
                    request,
                    visit,
                    "consent.html",
                    rid=rid,
                    client_name=client.name,
                    user_email=user.email,
                    scopes=describe_scopes(scope),
                )
        oauth_request.authentication = Authentication(
            browser.auth_time, tuple(browser.amr or ["pwd"]), browser.id, browser.idp
        )
        response = server.create_authorization_response(oauth_request, grant_user=user, grant=grant)
        _forget(visit, rid)
        audit.record(
            visit.db,
            "authorize.succeeded",
            context=visit.context,
            subject=str(user.id),
            client_id=client.client_id,
            detail={"scope": scope},
        )
        return _with_iss(
            response, server.settings.issuer, 303 if request.method == "POST" else None
        )


def _wants_two_factors(client: Client, params: dict[str, str]) -> bool:
    """The client always wants two factors, or this request asks for their level."""
    asked = (params.get("acr_values") or "").split()
    return client.require_mfa or factors.LOA_MULTI_FACTOR in asked


def _redirectable(error: OAuth2Error, oauth_request: StarletteOAuth2Request) -> OAuth2Error:
    error.redirect_uri = oauth_request.payload.redirect_uri or oauth_request.client.redirect_uris[0]
    error.state = oauth_request.payload.state
    return error


def _forget(visit: Visit, rid: str) -> None:
    if visit.browser is not None:
        pending = dict(visit.browser.data.get(PENDING, {}))
        pending.pop(rid, None)
        visit.browser.data = {**visit.browser.data, PENDING: pending}


async def resume(request: Request) -> Response:
    """Where login, signup and consent send the browser back to."""
    rid = request.query_params.get("rid", "")[:64]
    return await transact(request, lambda visit: _continue(request, visit, rid))


async def consent(request: Request) -> Response:
    """POST of the consent page: allow remembers the scopes, deny tells the client."""
    form = await read_form(request)
    rid = form.get("rid", "")[:64]
    server = _server(request)

    def decide(visit: Visit) -> Response:
        entry = (visit.browser.data.get(PENDING, {}) if visit.browser else {}).get(rid)
        if entry is None or visit.user is None:
            return _continue(request, visit, rid)
        oauth_request = _rebuild(request, visit, entry["params"])
        with server.using(visit.db, oauth_request):
            try:
                grant = server.get_consent_grant(oauth_request, end_user=visit.user)
            except OAuth2Error as error:
                return _fail(request, visit, oauth_request, error, 303)
            client_id = oauth_request.client.client_id
            if form.get("decision") != "allow":
                audit.record(
                    visit.db,
                    "consent.denied",
                    context=visit.context,
                    subject=str(visit.user.id),
                    client_id=client_id,
                )
                response = server.create_authorization_response(
                    oauth_request, grant_user=None, grant=grant
                )
                _forget(visit, rid)
                return _with_iss(response, server.settings.issuer, 303)
            scope = oauth_request.scope or ""
            repositories.save_consent(visit.db, visit.user.id, client_id, scope)
            audit.record(
                visit.db,
                "consent.granted",
                context=visit.context,
                subject=str(visit.user.id),
                client_id=client_id,
                detail={"scope": scope},
            )
        pending = dict(visit.browser.data.get(PENDING, {})) if visit.browser else {}
        pending[rid] = {**entry, "consented": True}
        if visit.browser is not None:
            visit.browser.data = {**visit.browser.data, PENDING: pending}
        return _continue(request, visit, rid)

    return await transact(request, decide, form=form)


def pending_app_name(visit: Visit, next_path: str) -> str | None:
    """The name of the app whose authorization request a sign-in goes on to: the one
    ``next_path`` resumes, or with no ``next_path`` the newest waiting in this browser."""
    pending: dict[str, Any] = visit.browser.data.get(PENDING, {}) if visit.browser else {}
    if next_path:
        prefix = "/oauth2/authorize/resume?rid="
        entry = (
            pending.get(unquote(next_path[len(prefix) :])) if next_path.startswith(prefix) else None
        )
    else:
        entry = pending[list(pending)[-1]] if pending else None
    client_id = str(entry["params"].get("client_id", "")) if entry else ""
    client = repositories.get_client(visit.db, client_id) if 0 < len(client_id) <= 64 else None
    return client.name if client is not None else None


def pending_resume_path(visit: Visit) -> str | None:
    """The newest authorization request waiting in this browser, for after a login."""
    pending: dict[str, Any] = visit.browser.data.get(PENDING, {}) if visit.browser else {}
    if not pending:
        return None
    return f"/oauth2/authorize/resume?rid={quote(list(pending)[-1])}"


def authorize_routes() -> list[BaseRoute]:
    return [
        Route("/oauth2/authorize", authorize, methods=["GET", "POST"]),
        Route("/oauth2/authorize/resume", resume, methods=["GET"]),
        Route("/oauth2/authorize/consent", consent, methods=["POST"]),
    ]
