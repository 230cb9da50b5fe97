"""The HTTP protocol of ``identity serve``: uvicorn's httptools protocol, plus ready answers
and the hot lane.

JWKS and the discovery documents are the same bytes for every caller until a key rotates, and
resource servers fetch them all the time. Through ASGI each one costs a task, a
request-response cycle, an event, two ASGI messages, Starlette's response and uvicorn's
checks of every header: most of the 42 µs a JWKS request took, where node-oidc-provider
answers in 38 µs (bench/README.md). So for a plain GET of one of them the protocol writes the
answer itself, from the parser's callback, with no task: the head rendered once per version
of the document, by the endpoint's own response and the same security headers the app adds,
then Date and a new X-Request-ID. It counts the request in the metrics and writes the access
line, as the app's layers would. The answer is the app's byte for byte, apart from Date and
the request id (tests/system/test_ready_answers.py compares them).

Only what it can answer exactly so is taken: GET of a listed path with no query string, over
keep-alive HTTP/1.1, with no body, no ``Expect`` or upgrade, no ``Origin`` when CORS is
configured, nothing ahead of it in the connection's pipeline and the socket not pushing back.
Everything else, HEAD included, goes the ASGI way untouched.

The hot routes that take a body or a token (token, introspection, userinfo) cannot be
answered from a callback: their endpoints await the database, Redis or a signature. For
those the protocol reads the request whole itself and hands it to the app's hot lane
(``LANE_KEY``, ``protocol.fast_lane.HotLane``) in a task of its own, with no uvicorn
request-response cycle, no ASGI messages and no Starlette response plumbing, and writes the
answer in one write. It takes the same requests the lane takes in the app (``Lane.takes``),
first in line on a keep-alive HTTP/1.1 connection; a body the lane turns down once it is in
(NUL in a form) goes to the app as if uvicorn had read it. While a lane request is under way
the connection is busy as with a cycle: a pipelined request waits its turn, a shutdown lets
the answer finish with ``Connection: close``, and a client that left is not written to.

Every response also leaves in one write where uvicorn makes two: it writes the head when the
app starts the response and the body when it sends it, and on an idle socket each write is
a send() system call of its own (and a TCP segment the client reads on its own). The
connection's transport (``_OneWriteTransport``) holds a response head back until the body's
first write, the end of the response or the connection's close, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from starlette.responses import Response
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from identity import logs, metrics
from identity.security import Network, with_security_headers

# Where the app's lifespan puts its ``ReadyAnswers``: the lifespan state is what ASGI gives
# a server to share with the app, and uvicorn hands it to every connection's protocol.
STATE_KEY = "identity.ready_answers"

# Where the app's lifespan puts its hot lane (``protocol.fast_lane.HotLane``, a ``Lane``).
LANE_KEY = "identity.hot_lane"

# Headers that mean the request is more than a plain GET (a body, a CORS request, a 100
# Continue or an upgrade to answer): those go the ASGI way.
_NOT_PLAIN = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


@dataclass(frozen=True)
class Document:
    """One ready document: ``current()`` gives its bytes now (cheap: called per request),
    ``response(body)`` the endpoint's response for those bytes (called when they change)."""

    current: Callable[[], bytes]
    response: Callable[[bytes], Response]


@dataclass(frozen=True)
class _Rendered:
    body: bytes
    # The header lines after Date and before X-Request-ID, as uvicorn would write them.
    headers: bytes


class ReadyAnswers:
    """The documents the protocol answers itself, by raw request path."""

    def __init__(
        self,
        documents: Mapping[str, Document],
        *,
        https: bool,
        cors: bool,
        trusted_proxies: Sequence[Network],
    ) -> None:
        self._documents = {path.encode("ascii"): (path, doc) for path, doc in documents.items()}
        self._https = https
        self._cors = cors
        self.trusted_proxies = tuple(trusted_proxies)
        self._rendered: dict[bytes, _Rendered] = {}

    def takes(self, url: bytes, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """The route path when this request is a plain GET of a ready document, else None.
        The raw URL must equal the path: a query string or a percent-escape never matches."""
        found = self._documents.get(url)
        if found is None:
            return None
        for name, _ in headers:
            if name in _NOT_PLAIN or (self._cors and name == b"origin"):
                return None
        return found[0]

    def render(self, url: bytes) -> tuple[bytes, bytes]:
        """The header lines (between Date and X-Request-ID) and the body of ``url``'s answer."""
        document = self._documents[url][1]
        body = document.current()
        rendered = self._rendered.get(url)
        if rendered is None or rendered.body is not body:
            rendered = self._render(document, body)
            self._rendered[url] = rendered
        return rendered.headers, rendered.body

    def _render(self, document: Document, body: bytes) -> _Rendered:
        response = document.response(body)
        headers = with_security_headers(response.raw_headers, self._https)
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        return _Rendered(bytes(response.body), lines)


Write = Callable[[int, list[tuple[bytes, bytes]], bytes], None]


class Lane(Protocol):
    """The app's answers to the hot routes, for requests the protocol reads itself."""

    def takes(self, method: bytes, url: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Any:
        """The route (any value but None) when the lane takes a request with this head."""

    def is_clean(self, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bool:
        """Whether it still takes the request once the whole body is in."""

    async def answer(self, route: Any, scope: dict[str, Any], body: bytes, write: Write) -> None:
        """Answer through ``write``, once; it may raise only before it writes."""


class _LaneCycle:
    """What uvicorn's protocol reads of its current request-response cycle, for a request
    the lane answers: it marks the connection busy (a pipelined request waits its turn),
    and ``shutdown`` and ``connection_lost`` mark it as they would a cycle."""

    def __init__(self) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True
        self.message_event = asyncio.Event()


class IdentityHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering ``ReadyAnswers`` itself (module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        ready = app_state.get(STATE_KEY)
        # Not with a root path (the routes' templates would not be the paths) or a
        # concurrency limit (uvicorn answers 503 beyond it): then every request goes via ASGI.
        usable = not self.root_path and self.limit_concurrency is None
        self._ready: ReadyAnswers | None = ready if usable else None
        self._route: str | None = None  # the ready document the parsed request asks for
        self._lane: Lane | None = app_state.get(LANE_KEY) if usable else None
        self._hot: Any = None  # the lane's route for the request being read, if it takes it
        self._body = bytearray()
        self._before: Any = None  # the cycle before the lane's (None or complete)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._one_write = _OneWriteTransport(cast(asyncio.Transport, transport))
        super().connection_made(cast(asyncio.Transport, self._one_write))

    def on_response_complete(self) -> None:
        self._one_write.flush()  # a head with no body after it (HEAD, 304) leaves now
        super().on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        self._one_write.flush()
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        # A request after a ready answer, in the same read: that answer armed the
        # keep-alive timeout, which must not run while this request is served.
        self._unset_keepalive_if_required()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._is_first_in_line():
            method = self.parser.get_method()
            ready, lane = self._ready, self._lane
            if ready is not None and method == b"GET":
                self._route = ready.takes(self.url, self.headers)
                if self._route is not None:
                    return
            if lane is not None:
                self._hot = lane.takes(method, self.url, self.headers)
                if self._hot is not None:
                    # Busy from now on, for a pipelined request, shutdown and a lost client.
                    self._before, self.cycle = self.cycle, _LaneCycle()  # type: ignore[assignment]
                    return
        super().on_headers_complete()

    def _is_first_in_line(self) -> bool:
        """Keep-alive HTTP/1.1 with nothing ahead of it, and the socket not pushing back."""
        parser = self.parser
        return (
            parser.get_http_version() == "1.1"
            and parser.should_keep_alive()
            and (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
            and not self.flow.write_paused
        )

    def on_body(self, body: bytes) -> None:
        if self._hot is None:
            super().on_body(body)
        else:
            self._body += body  # at most the body cap: the lane took its Content-Length

    def on_message_complete(self) -> None:
        route, hot = self._route, self._hot
        if route is not None:
            self._route = None
            self._answer(route)
        elif hot is not None:
            self._hot = None
            body, self._body = bytes(self._body), bytearray()
            assert self._lane is not None
            if self._lane.is_clean(self.headers, body):
                self._start_lane(hot, body)
            else:
                self._to_app(body)
        else:
            super().on_message_complete()

    def _to_app(self, body: bytes) -> None:
        """Hand a request the lane took by its head but not by its body to the app, as
        uvicorn would have from the start (the parser is still on this request)."""
        lane_cycle = cast(_LaneCycle, self.cycle)
        self.cycle = self._before
        super().on_headers_complete()
        self.cycle.keep_alive = self.cycle.keep_alive and lane_cycle.keep_alive
        if body:
            super().on_body(body)
        super().on_message_complete()

    def _start_lane(self, hot: Any, body: bytes) -> None:
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        # The lane takes a URL only when it is the path itself (Lane.takes).
        scope["path"], scope["raw_path"], scope["query_string"] = self.url.decode(), self.url, b""
        # The scope is this request's own: on_message_begin makes a new one for the next.
        work = self._serve_lane(
            cast(_LaneCycle, self.cycle), hot, cast(dict[str, Any], scope), body
        )
        context = contextvars.Context() if self.config.reset_contextvars else None
        task = self.loop.create_task(work, context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _serve_lane(
        self, cycle: _LaneCycle, hot: Any, scope: dict[str, Any], body: bytes
    ) -> None:
        """One lane request, in a task of its own: what uvicorn's cycle does around an app,
        with the lane's answer written whole, in one write."""
        assert self._lane is not None
        written = False

        def write(status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
            nonlocal written
            written = True
            if cycle.disconnected or self.transport.is_closing():
                return
            head = [STATUS_LINE[status]]
            for name, value in (*self.server_state.default_headers, *headers):
                head.extend((name, b": ", value, b"\r\n"))
            if not cycle.keep_alive:
                head.append(b"connection: close\r\n")
            head.extend((b"\r\n", content))
            self.transport.write(b"".join(head))

        try:
            await self._lane.answer(hot, scope, body, write)
        except BaseException as error:
            # As uvicorn's cycle: the traceback in the log; a 500 if nothing was written.
            self.logger.error("Exception in ASGI application\n", exc_info=error)
            if not written:
                cycle.keep_alive = False
                write(500, list(_INTERNAL_ERROR_HEADERS), b"Internal Server Error")
            cycle.keep_alive = False
            if not isinstance(error, Exception):
                raise
        finally:
            cycle.response_complete = True
            if not cycle.keep_alive:
                self.transport.close()
            self.on_response_complete()

    def _answer(self, route: str) -> None:
        assert self._ready is not None
        started = time.perf_counter()
        ready = self._ready
        logged = logs.access_log.isEnabledFor(logging.INFO)
        # The scope-like dict only when something reads it: a trusted proxy's request id, or
        # the access line (at the bench's warning level, neither: 11 entries per request saved).
        scope = self._log_scope(route) if logged or ready.trusted_proxies else None
        request_id = (
            logs.request_id_for(scope, ready.trusted_proxies) if scope else logs.new_request_id()
        )
        headers, body = ready.render(self.url)
        head = [STATUS_LINE[200]]
        for name, value in self.server_state.default_headers:  # Date, as uvicorn sends it
            head.extend((name, b": ", value, b"\r\n"))
        head.extend((headers, b"x-request-id: ", request_id.encode(), b"\r\n\r\n", body))
        if not self.transport.is_closing():
            self.transport.write(b"".join(head))
        metrics.observe_request(route, "GET", 200, time.perf_counter() - started)
        if logged and scope is not None:
            logs.log_access(scope, "", logs.served(request_id), 200, started, ready.trusted_proxies)
        self.on_response_complete()

    def _log_scope(self, route: str) -> dict[str, Any]:
        """What the request id and the access line read of a request (not an ASGI scope)."""
        return {
            "type": "http",
            "method": "GET",
            "path": route,
            "raw_path": self.url,
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": self.client,
            "server": self.server,
            "scheme": self.scheme,
            "route": _RouteName(route),
        }


_INTERNAL_ERROR_HEADERS = (
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"21"),
)


class _OneWriteTransport:
    """A connection's transport that writes a response's head together with what follows
    it (module docstring). Only a final response head is held: never a 100 Continue or a
    101 Switching Protocols, which the client waits for before it goes on."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif _is_final_head(data):
            self._head = bytes(data)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)  # reading, extra info, buffer limits...


def _is_final_head(data: bytes | bytearray | memoryview) -> bool:
    return (
        data[:9] == b"HTTP/1.1 "
        and data[9:10] in (b"2", b"3", b"4", b"5")
        and data[-4:] == b"\r\n\r\n"
    )


@dataclass(frozen=True)
class _RouteName:
    """What ``metrics.route_template`` reads of a route: its path template."""

    path_format: str
