"""The HTTP protocol of ``identity serve``: uvicorn's httptools protocol, plus ready answers.

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

Every response also leaves in one write where uvicorn makes two: it writes the head when the
app starts the response and the body when it sends it, and on an idle socket each write is
a send() system call of its own (and a TCP segment the client reads on its own). The
connection's transport (``_OneWriteTransport``) holds a response head back until the body's
first write, the end of the response or the connection's close, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from starlette.responses import Response
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from identity import logs, metrics
from identity.security import Network, with_security_headers

# Where the app's lifespan puts its ``ReadyAnswers``: the lifespan state is what ASGI gives
# a server to share with the app, and uvicorn hands it to every connection's protocol.
STATE_KEY = "identity.ready_answers"

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
        ready = self._ready
        if ready is not None and self._is_plain_get():
            self._route = ready.takes(self.url, self.headers)
            if self._route is not None:
                return
        super().on_headers_complete()

    def _is_plain_get(self) -> bool:
        parser = self.parser
        return (
            parser.get_method() == b"GET"
            and parser.get_http_version() == "1.1"
            and parser.should_keep_alive()
            and (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
            and not self.flow.write_paused
        )

    def on_message_complete(self) -> None:
        route = self._route
        if route is None:
            super().on_message_complete()
            return
        self._route = None
        self._answer(route)

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
