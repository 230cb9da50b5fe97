"""OpenID Connect RP-Initiated Logout: ``end_session_endpoint``."""

from __future__ import annotations

from typing import Any

from authlib.common.urls import add_params_to_uri
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import audit, repositories
from identity.accounts import sessions
from identity.protocol.server import IdentityServer
from identity.protocol.tokens import InvalidToken, read_id_token_hint, session_sid
from identity.web.pages import Visit, message, read_form, redirect, render, transact

_FIELDS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")


async def end_session(request: Request) -> Response:
    """A valid hint for this browser's session logs out at once; anything else asks first.
    It redirects only to a post-logout URI the client registered, with ``state``."""
    server: IdentityServer = request.app.state.oauth
    if request.method == "POST":
        form = await read_form(request)
    else:
        form = dict(request.query_params)
    params = {name: form.get(name, "")[:4096] for name in _FIELDS}
    confirmed = request.method == "POST" and form.get("confirm") == "1"

    def work(visit: Visit) -> Response:
        hint = None
        if params["id_token_hint"]:
            try:
                hint = read_id_token_hint(
                    params["id_token_hint"],
                    server.issuer.keys.ring(),
                    issuer=server.settings.issuer,
                )
            except InvalidToken:
                hint = None
        client_id = params["client_id"] or (str(hint["aud"]) if hint else "")
        client = repositories.get_client(visit.db, client_id) if 0 < len(client_id) <= 64 else None
        if hint is not None and client is not None and hint.get("aud") != client.client_id:
            return message(
                request, visit, "Sign-out failed", "The hint was issued to another app.", 400
            )
        target = params["post_logout_redirect_uri"]
        if target and (client is None or target not in client.post_logout_redirect_uris):
            return message(
                request,
                visit,
                "Sign-out failed",
                "The app asked to return to an address it has not registered.",
                400,
            )
        hint_matches = _hint_matches(hint, visit)
        if visit.user is not None and not (hint_matches or confirmed):
            visit.ensure_browser(request.app.state.accounts)
            return render(
                request,
                visit,
                "end_session.html",
                200,
                client_name=client.name if client else "",
                id_token_hint=params["id_token_hint"],
                client_id=params["client_id"],
                post_logout_redirect_uri=params["post_logout_redirect_uri"],
                state=params["state"],
            )
        if visit.user is not None and visit.browser is not None:
            audit.record(
                visit.db,
                "session.ended",
                context=visit.context,
                subject=str(visit.user.id),
                client_id=client.client_id if client else None,
                detail={"by": "end_session"},
            )
            sessions.end(visit.db, visit.browser)
            visit.drop_cookie, visit.browser, visit.user = True, None, None
        if target:
            query = [("state", params["state"])] if params["state"] else []
            return redirect(add_params_to_uri(target, query))
        return message(request, visit, "You're signed out", "You can close this window.")

    return await transact(request, work, form=form if confirmed else None)


def _hint_matches(hint: dict[str, Any] | None, visit: Visit) -> bool:
    """The hint names this browser's user and, when it carries ``sid``, this very session:
    an ID token of another browser's session asks first instead of signing this one out."""
    if hint is None or visit.user is None or visit.browser is None:
        return False
    if hint.get("sub") != str(visit.user.id):
        return False
    return "sid" not in hint or hint["sid"] == session_sid(visit.browser.id)


def end_session_routes() -> list[BaseRoute]:
    return [Route("/oauth2/logout", end_session, methods=["GET", "POST"])]
