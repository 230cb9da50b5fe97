"""One layer instead of seven for the endpoints machines call most.

Every request normally passes the request-log, metrics, security-header, body-cap and
control-character middlewares, Starlette's exception layer and its router: each an ASGI
call with a wrapper of ``receive`` or ``send``. For JWKS or discovery that plumbing costs
more than the answer. ``FastLane`` sits outermost among them and serves the hot routes
(``protocol.routes.hot_routes``) itself: it calls the very same endpoint functions and does
what the layers would do, in one pass, through the same functions they use (``logs``,
``metrics``, ``security``), so the answer is the same byte for byte, apart from the request id.

It only takes what it can answer exactly as the layers would; everything else goes down the
full stack untouched: another route or method, a query string (the layers check it for
control characters; no hot route takes one), a body with no ``Content-Length`` or over the
cap, a body with NUL in it (the layers answer those with their 413 and 400), and, when CORS
is configured, a request with an ``Origin`` (the CORS middleware answers those).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity import logs, metrics
from identity.config import Settings
from identity.security import has_nul, with_security_headers

Handler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True)
class HotRoute:
    """A route the lane serves: its Starlette route (for the endpoint and the template the
    metrics and access line name) and whether it reads a body."""

    method: str
    route: Route
    reads_body: bool


class FastLane:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[HotRoute],
        settings: Settings,
        handlers: Mapping[type[Exception], Handler],
    ) -> None:
        self.app = app
        self._routes = {(hot.method, hot.route.path): hot for hot in routes}
        self._https = settings.is_https
        self._limit = settings.max_body_bytes
        self._trusted = tuple(settings.trusted_proxies)
        self._cors = bool(settings.cors_origins)
        # The app's handlers for what an endpoint may raise (HTTPException, database
        # errors...); an exception none of them takes goes on to the server-error layer.
        self._handlers = dict(handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = None
        if scope["type"] == "http" and not scope["query_string"]:
            hot = self._routes.get((scope["method"], scope["path"]))
        if hot is None:
            await self.app(scope, receive, send)
            return
        length, content_type, origin = None, b"", False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"origin":
                origin = True
        if origin and self._cors:
            await self.app(scope, receive, send)
            return
        body = b""
        if hot.reads_body:
            if length is None or not length.isdigit() or int(length) > self._limit:
                await self.app(scope, receive, send)
                return
            body = await _read_body(receive)
            kind = content_type.split(b";")[0].decode("latin-1")
            if has_nul(kind, body):
                await self.app(scope, _replay(body, receive), send)
                return
        await self._serve(hot, scope, _replay(body, receive), send)

    async def _serve(self, hot: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        root_path = scope.get("root_path", "")
        started = time.perf_counter()
        current, token = logs.begin_request(scope, self._trusted)
        # What the router would have put there: the access line and metrics name the route.
        scope["route"], scope["endpoint"], scope["path_params"] = hot.route, hot.route.endpoint, {}
        request = Request(scope, receive)
        status = 500
        observed = False
        template = hot.route.path

        def observe() -> None:
            nonlocal observed
            if not observed:
                observed = True
                elapsed = time.perf_counter() - started
                metrics.observe_request(template, scope["method"], status, elapsed)

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = with_security_headers(message.get("headers", []), self._https)
                headers.append((b"x-request-id", current.request_id.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                observe()  # before the last byte leaves, as RequestMetricsMiddleware does
            await send(message)

        try:
            try:
                response = await hot.route.endpoint(request)
            except Exception as error:
                handler = self._handler_for(error)
                if handler is None:
                    raise
                response = await handler(request, error)
            await response(scope, receive, send_wrapped)
        except BaseException:
            observe()
            logs.log_access(scope, root_path, current, status, started, self._trusted)
            raise
        observe()
        logs.log_access(scope, root_path, current, status, started, self._trusted)
        logs.end_request(token)

    def _handler_for(self, error: Exception) -> Handler | None:
        for kind in type(error).__mro__:
            if kind is Exception:
                return None
            handler = self._handlers.get(kind)
            if handler is not None:
                return handler
        return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: the endpoint sees what came
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the ``body`` already read, then the server's own (which
    waits for the client to go away)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
