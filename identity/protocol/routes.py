"""The HTTP routes of the protocol: token, introspection, revocation, JWKS, discovery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from authlib.oauth2.rfc6749 import OAuth2Error
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from identity.config import Settings
from identity.limits import RateLimiter
from identity.protocol.device import device_authorization
from identity.protocol.server import IdentityServer, StarletteOAuth2Request, read_oauth2_request
from identity.protocol.userinfo import userinfo
from identity.security import request_context

Endpoint = Callable[[Request], Awaitable[Response]]


def _server(request: Request) -> IdentityServer:
    server: IdentityServer = request.app.state.oauth
    return server


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _throttled_for(
    request: Request, oauth_request: StarletteOAuth2Request, limiter_name: str
) -> Response | None:
    """429 in OAuth's JSON when the calling client is over its named limit (keyed by the
    client_id it claims, else its IP: counted before any secret is checked)."""
    client_id, _ = extract_basic_authorization(oauth_request.headers)
    key = client_id or oauth_request.form.get("client_id") or oauth_request.context.ip or "?"
    limiter: RateLimiter = request.app.state.limiter
    decision = limiter.hit(limiter_name, key[:128])
    if decision.allowed:
        return None
    return JSONResponse(
        {"error": "slow_down", "error_description": "Too many requests; retry later."},
        status_code=429,
        headers={"Retry-After": str(decision.retry_after), "Cache-Control": "no-store"},
    )


def _endpoint(name: str | None) -> Endpoint:
    """A POST endpoint that hands the request to Authlib: the token endpoint when ``name``
    is None, else the named endpoint (revocation, introspection)."""
    limiter_name = "introspect.client" if name == "introspection" else "token.client"

    async def endpoint(request: Request) -> Response:
        server, settings = _server(request), _settings(request)
        context = request_context(request, settings.trusted_proxies)
        try:
            oauth_request = await read_oauth2_request(request, settings.issuer, context)
        except OAuth2Error as error:
            return server.error_response(error)

        def respond() -> Response:
            # One threadpool hop for the limiter and Authlib together.
            throttled = _throttled_for(request, oauth_request, limiter_name)
            if throttled is not None:
                return throttled
            if name is None:
                return server.create_token_response(oauth_request)  # type: ignore[no-any-return]
            return server.create_endpoint_response(name, oauth_request)  # type: ignore[no-any-return]

        return await server.run(oauth_request, respond)

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
        Route("/oauth2/device_authorization", device_authorization, methods=["POST"]),
        _route("/oauth2/userinfo", userinfo, ["GET", "POST"], cors),
        _route("/.well-known/jwks.json", jwks, ["GET"], cors),
        _route("/.well-known/openid-configuration", discovery, ["GET"], cors),
        _route("/.well-known/oauth-authorization-server", discovery, ["GET"], cors),
    ]
