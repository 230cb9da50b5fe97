"""The HTTP routes of the protocol: token, introspection, revocation, JWKS, discovery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from identity.config import Settings
from identity.protocol.server import IdentityServer, read_oauth2_request
from identity.security import request_context

Endpoint = Callable[[Request], Awaitable[Response]]


def _server(request: Request) -> IdentityServer:
    server: IdentityServer = request.app.state.oauth
    return server


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _endpoint(name: str | None) -> Endpoint:
    """A POST endpoint that hands the request to Authlib: the token endpoint when ``name``
    is None, else the named endpoint (revocation, introspection)."""

    async def endpoint(request: Request) -> Response:
        server, settings = _server(request), _settings(request)
        context = request_context(request, settings.trusted_proxies)
        try:
            oauth_request = await read_oauth2_request(request, settings.issuer, context)
        except OAuth2Error as error:
            return server.error_response(error)
        if name is None:
            return await server.run(
                oauth_request, lambda: server.create_token_response(oauth_request)
            )
        return await server.run(
            oauth_request, lambda: server.create_endpoint_response(name, oauth_request)
        )

    return endpoint


async def jwks(request: Request) -> Response:
    ring = _server(request).issuer.keys.ring()
    return Response(
        ring.jwks_body,
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def discovery(request: Request) -> Response:
    return JSONResponse(
        request.app.state.discovery, headers={"Cache-Control": "public, max-age=3600"}
    )


def _route(path: str, endpoint: Endpoint, methods: list[str], cors: Sequence[str]) -> Route:
    """A route that browsers on the configured origins may call (never with credentials)."""
    if not cors:
        return Route(path, endpoint, methods=methods)
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(cors),
            allow_methods=methods,
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    ]
    return Route(path, endpoint, methods=[*methods, "OPTIONS"], middleware=middleware)


def protocol_routes(settings: Settings) -> list[BaseRoute]:
    cors = settings.cors_origins
    return [
        _route("/oauth2/token", _endpoint(None), ["POST"], cors),
        Route("/oauth2/introspect", _endpoint("introspection"), methods=["POST"]),
        Route("/oauth2/revoke", _endpoint("revocation"), methods=["POST"]),
        _route("/.well-known/jwks.json", jwks, ["GET"], cors),
        _route("/.well-known/openid-configuration", discovery, ["GET"], cors),
        _route("/.well-known/oauth-authorization-server", discovery, ["GET"], cors),
    ]
