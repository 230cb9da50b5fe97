"""The HTTP routes of the protocol: token, introspection, revocation, JWKS, discovery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity.config import Settings
from identity.http_protocol import Document
from identity.protocol.device import device_authorization
from identity.protocol.fast_lane import HotRoute
from identity.protocol.introspection import introspect_in_loop
from identity.protocol.lean import client_credentials
from identity.protocol.mfa_grant import GRANT_TYPE as MFA_GRANT_TYPE
from identity.protocol.requests import read_oauth2_request
from identity.protocol.server import IdentityServer
from identity.protocol.throttle import throttled_for
from identity.protocol.userinfo import userinfo
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
    limiter_name = "token.client"  # introspection counts "introspect.client" itself

    async def endpoint(request: Request) -> Response:
        server, settings = _server(request), _settings(request)
        context = request_context(request, settings.trusted_proxies)
        try:
            oauth_request = await read_oauth2_request(request, settings.issuer, context)
        except OAuth2Error as error:
            return server.error_response(error)

        if name == "introspection":
            # Counts the limit too, in the same Redis round trip as the denylist check.
            answer = await introspect_in_loop(server, request.app.state.limiter, oauth_request)
            if answer is not None:
                return answer
        else:
            throttled = await throttled_for(request, oauth_request, limiter_name)
            if throttled is not None:
                return throttled
            if name is None:
                # Machine clients' tokens in the loop (protocol.lean); None: the full path.
                lean = await client_credentials(server, oauth_request)
                if lean is not None:
                    return lean

        def respond() -> Response:
            if name is None:
                return server.create_token_response(oauth_request)  # type: ignore[no-any-return]
            return server.create_endpoint_response(name, oauth_request)  # type: ignore[no-any-return]

        # Both hash: a password, or up to ten recovery codes (argon2id).
        password = oauth_request.form.get("grant_type") in {"password", MFA_GRANT_TYPE}
        return await server.run(oauth_request, respond, password=password)

    return endpoint


def _jwks_response(body: bytes) -> Response:
    return Response(
        body, media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
    )


def _discovery_response(body: bytes) -> Response:
    return Response(
        body, media_type="application/json", headers={"Cache-Control": "public, max-age=3600"}
    )


async def jwks(request: Request) -> Response:
    return _jwks_response(_server(request).issuer.keys.ring().jwks_body)


async def discovery(request: Request) -> Response:
    # Rendered once at start-up: the document never changes while the process runs.
    body: bytes = request.app.state.discovery_body
    return _discovery_response(body)


def ready_documents(server: IdentityServer, discovery_body: bytes) -> dict[str, Document]:
    """The documents ``identity serve``'s HTTP protocol answers itself (``http_protocol``):
    the same bytes and headers as ``jwks`` and ``discovery`` above."""
    jwks_document = Document(lambda: server.issuer.keys.ring().jwks_body, _jwks_response)
    discovery_document = Document(lambda: discovery_body, _discovery_response)
    return {
        "/.well-known/jwks.json": jwks_document,
        "/.well-known/openid-configuration": discovery_document,
        "/.well-known/oauth-authorization-server": discovery_document,
    }


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
    # The router tries routes in order; the ones every resource server and client call
    # come first (each miss costs a regex match on every request).
    return [
        _route("/.well-known/jwks.json", jwks, ["GET"], cors),
        _route("/oauth2/token", _endpoint(None), ["POST"], cors),
        Route("/oauth2/introspect", _endpoint("introspection"), methods=["POST"]),
        _route("/oauth2/userinfo", userinfo, ["GET", "POST"], cors),
        _route("/.well-known/openid-configuration", discovery, ["GET"], cors),
        Route("/oauth2/revoke", _endpoint("revocation"), methods=["POST"]),
        Route("/oauth2/device_authorization", device_authorization, methods=["POST"]),
        _route("/.well-known/oauth-authorization-server", discovery, ["GET"], cors),
    ]


# The routes machines call most, served by ``FastLane`` (method, path, reads a body).
_HOT = (
    ("GET", "/.well-known/jwks.json", False),
    ("POST", "/oauth2/token", True),
    ("POST", "/oauth2/introspect", True),
    ("GET", "/oauth2/userinfo", False),
    ("GET", "/.well-known/openid-configuration", False),
)


def hot_routes(routes: Sequence[BaseRoute]) -> list[HotRoute]:
    """The hot routes among ``routes`` (``protocol_routes``'), for ``FastLane``."""
    by_path = {route.path: route for route in routes if isinstance(route, Route)}
    return [HotRoute(method, by_path[path], reads_body) for method, path, reads_body in _HOT]
