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

``HotLane`` holds what the lane decides and does; ``FastLane`` is it in the ASGI stack, and
``identity serve``'s HTTP protocol hands it the requests it reads whole itself
(``identity.http_protocol``), which saves uvicorn's cycle and the ASGI messages too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity import logs, metrics
from identity.config import Settings
from identity.security import has_nul, with_security_headers

Handler = Callable[[Request, Exception], Awaitable[Response]]
Write = Callable[[int, list[tuple[bytes, bytes]], bytes], None]

# Headers that make a request more than the lane answers the way the layers would.
_NOT_TAKEN = frozenset({b"transfer-encoding", b"expect", b"upgrade"})


@dataclass(frozen=True)
class HotRoute:
    """A route the lane serves: its Starlette route (for the endpoint and the template the
    metrics and access line name) and whether it reads a body."""

    method: str
    route: Route
    reads_body: bool


class HotLane:
    """What the lane knows and does, shared by ``FastLane`` (in the ASGI stack) and by
    ``identity serve``'s HTTP protocol, which hands it the requests it reads itself
    (``identity.http_protocol``): which requests it takes, and the answer to one."""

    def __init__(
        self,
        *,
        routes: Sequence[HotRoute],
        settings: Settings,
        handlers: Mapping[type[Exception], Handler],
        unexpected: Handler,
    ) -> None:
        self._routes = {(hot.method, hot.route.path): hot for hot in routes}
        self._raw = {(hot.method.encode(), hot.route.path.encode()): hot for hot in routes}
        self._https = settings.is_https
        self._limit = settings.max_body_bytes
        self.trusted_proxies = tuple(settings.trusted_proxies)
        self._cors = bool(settings.cors_origins)
        # The app's handlers for what an endpoint may raise (HTTPException, database
        # errors...); an exception none of them takes goes on to the server-error layer,
        # whose answer (``unexpected``) the protocol gives itself.
        self._handlers = dict(handlers)
        self._unexpected = unexpected
        # The Starlette app, for ``request.app`` in the protocol's scopes (``create_app``).
        self.app: ASGIApp | None = None

    def route(self, method: str, path: str) -> HotRoute | None:
        return self._routes.get((method, path))

    def takes(
        self, method: bytes, url: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> HotRoute | None:
        """The hot route of a request the protocol read, when the lane takes it by its
        head: the raw URL must be the path (a query string or a percent-escape never is)."""
        hot = self._raw.get((method, url))
        return hot if hot is not None and self.admits(hot, headers) else None

    def admits(self, hot: HotRoute, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether the lane answers this request exactly as the layers would: a body the
        layers would refuse (no ``Content-Length``, over the cap), a chunked body, a 100
        Continue, an upgrade and, with CORS configured, an ``Origin`` go the full way."""
        length = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name in _NOT_TAKEN or (self._cors and name == b"origin"):
                return False
        if not hot.reads_body:
            return length is None
        return length is not None and length.isdigit() and int(length) <= self._limit

    def is_clean(self, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bool:
        """False for a form body with NUL in it: the layers answer that with their 400."""
        content_type = b""
        for name, value in headers:
            if name == b"content-type":
                content_type = value
        return not has_nul(content_type.split(b";")[0].decode("latin-1"), body)

    async def respond(self, hot: HotRoute, request: Request) -> Response:
        """The endpoint's response, or the app's handler's for what it raised; what no
        handler takes is raised."""
        try:
            response: Response = await hot.route.endpoint(request)
            return response
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                raise
            return await handler(request, error)

    def headers(
        self, raw: Iterable[tuple[bytes, bytes]], request_id: str
    ) -> list[tuple[bytes, bytes]]:
        """The response's headers as the layers send them: the security headers and the id."""
        headers = with_security_headers(raw, self._https)
        headers.append((b"x-request-id", request_id.encode()))
        return headers

    async def answer(self, hot: HotRoute, scope: Scope, body: bytes, write: Write) -> None:
        """Answer a request the protocol read whole (head and ``body``): ``write`` gets the
        status, headers and body, after the metrics count the request and before its
        access line, as the layers order them."""
        started = time.perf_counter()
        scope["app"] = self.app
        current, token = logs.begin_request(scope, self.trusted_proxies)
        scope["route"], scope["endpoint"], scope["path_params"] = hot.route, hot.route.endpoint, {}
        request = Request(scope, _replay(body, _nothing_more))
        status = 500
        try:
            try:
                response = await self.respond(hot, request)
            except Exception as error:
                # The server-error layer's answer: the app's 500 (its handler logs the error).
                response = await self._unexpected(request, error)
            status, raw, content = await _rendered(response, scope)
            headers = self.headers(raw, current.request_id)
            metrics.observe_request(hot.route.path, scope["method"], status, _since(started))
            write(status, headers, content)
        finally:
            logs.log_access(scope, "", current, status, started, self.trusted_proxies)
            logs.end_request(token)

    def _handler_for(self, error: Exception) -> Handler | None:
        for kind in type(error).__mro__:
            if kind is Exception:
                return None
            handler = self._handlers.get(kind)
            if handler is not None:
                return handler
        return None


class FastLane:
    def __init__(self, app: ASGIApp, *, lane: HotLane) -> None:
        self.app = app
        self._lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self._lane
        hot = None
        if scope["type"] == "http" and not scope["query_string"]:
            hot = lane.route(scope["method"], scope["path"])
        if hot is None or not lane.admits(hot, scope["headers"]):
            await self.app(scope, receive, send)
            return
        body = b""
        if hot.reads_body:
            body = await _read_body(receive)
            if not lane.is_clean(scope["headers"], body):
                await self.app(scope, _replay(body, receive), send)
                return
        await self._serve(hot, scope, _replay(body, receive), send)

    async def _serve(self, hot: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self._lane
        root_path = scope.get("root_path", "")
        started = time.perf_counter()
        current, token = logs.begin_request(scope, lane.trusted_proxies)
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
                metrics.observe_request(template, scope["method"], status, _since(started))

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = lane.headers(message.get("headers", []), current.request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                observe()  # before the last byte leaves, as RequestMetricsMiddleware does
            await send(message)

        try:
            response = await lane.respond(hot, request)
            await response(scope, receive, send_wrapped)
        except BaseException:
            observe()
            logs.log_access(scope, root_path, current, status, started, lane.trusted_proxies)
            raise
        observe()
        logs.log_access(scope, root_path, current, status, started, lane.trusted_proxies)
        logs.end_request(token)


def _since(started: float) -> float:
    return time.perf_counter() - started


async def _rendered(
    response: Response, scope: Scope
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A response's status, headers and whole body. A plain ``Response`` (JSON included)
    already holds them; any other kind is run against a ``send`` that keeps what it sends."""
    if type(response).__call__ is Response.__call__ and response.background is None:
        return response.status_code, response.raw_headers, bytes(response.body)
    sent: list[Message] = []

    async def keep(message: Message) -> None:
        sent.append(message)

    await response(scope, _nothing_more, keep)
    start, parts = sent[0], sent[1:]
    body = b"".join(part.get("body", b"") for part in parts)
    return start["status"], list(start.get("headers", [])), body


async def _nothing_more() -> Message:
    """``receive`` after the whole body: the protocol reads the socket itself, so a client
    that goes away is not told; an endpoint of the lane never waits for it."""
    return {"type": "http.disconnect"}


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
