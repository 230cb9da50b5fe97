"""Request-level defences: body size cap, control characters, security headers, the
client's real IP."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity.audit import RequestContext

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RequestTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodySizeLimitMiddleware:
    """Refuse bodies over ``limit`` bytes before anything parses or hashes them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            # Raised from inside the app so its exception handlers render it in the
            # caller's own error format.
            await self.app(scope, _refusing_receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise RequestTooLarge()
            return message

        await self.app(scope, counting_receive, send)


async def _refusing_receive() -> Message:
    raise RequestTooLarge()


class MalformedInput(HTTPException):
    """A request holding characters no parameter may: a 400 in the caller's own format."""

    def __init__(self) -> None:
        super().__init__(400, "The request holds characters that are not allowed.")


# A control character in a path or query string, raw or percent-encoded: no path segment or
# query parameter of ours can be one, and NUL would reach the database (PostgreSQL refuses it
# in text, which would otherwise read as the database being down).
_CONTROL_IN_PATH = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_QUERY = re.compile(rb"[\x00-\x1f\x7f]|%(?:[01][0-9A-Fa-f]|7[Ff])")
# In a form body only NUL is refused here: tab and newlines can be real text, and the
# protocol endpoints check their parameters more strictly (``protocol.parameters``). In a
# multipart body "%00" is literal text, so only a raw NUL counts there.
_NUL_IN_FORM = {
    "application/x-www-form-urlencoded": re.compile(rb"\x00|%00"),
    "multipart/form-data": re.compile(rb"\x00"),
}


class ControlCharacterMiddleware:
    """Refuse control characters in the path and query, and NUL in form bodies, before any
    handler (or the database) sees them. Paths under ``exempt`` are left to check their own
    input (the JSON API does, answering with field errors and 404s of its own).

    A bad path or query is answered at once by ``reject`` (the app's own error renderer, so
    the answer is in the caller's format); a bad body raises ``MalformedInput`` where the
    handler reads it, like the body cap's 413, for the app's exception handler."""

    def __init__(
        self,
        app: ASGIApp,
        reject: Callable[[Request], Awaitable[Response]],
        exempt: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.reject = reject
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        if has_control_characters(scope):
            response = await self.reject(Request(scope))
            await response(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type", "").split(";")[0]
        nul = _NUL_IN_FORM.get(content_type.strip().lower())
        if nul is None:
            await self.app(scope, receive, send)
            return
        tail = b""

        async def checking_receive() -> Message:
            nonlocal tail
            message = await receive()
            if message["type"] == "http.request":
                # The last two bytes of the previous chunk, for a "%00" split across chunks.
                chunk = tail + message.get("body", b"")
                if nul.search(chunk):
                    raise MalformedInput()
                tail = chunk[-2:]
            return message

        await self.app(scope, checking_receive, send)


_COMMON_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
)
# Pages load only our own stylesheet and script files: no inline script, no framing.
_HTML_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
_HTTP_HEADERS = tuple((name.encode(), value.encode()) for name, value in _COMMON_HEADERS)
_HTTPS_HEADERS = (
    *_HTTP_HEADERS,
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
)
_HTML_CSP_HEADER = (b"content-security-policy", _HTML_CSP.encode())
_API_CSP_HEADER = (b"content-security-policy", _API_CSP.encode())


class SecurityHeadersMiddleware:
    """Add the SECURITY.md headers to every response (a stricter CSP for non-HTML)."""

    def __init__(self, app: ASGIApp, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(message.get("headers", []), self.https)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def with_security_headers(
    raw: Iterable[tuple[bytes, bytes]], https: bool
) -> list[tuple[bytes, bytes]]:
    """The response's headers plus each security header it does not set itself (raw
    tuples in one pass: this runs on every response)."""
    headers = list(raw)
    present = {name.lower() for name, _ in headers}
    is_html = any(
        name.lower() == b"content-type" and value.startswith(b"text/html")
        for name, value in headers
    )
    extra = _HTTPS_HEADERS if https else _HTTP_HEADERS
    csp = _HTML_CSP_HEADER if is_html else _API_CSP_HEADER
    for name, value in (*extra, csp):
        if name not in present:
            headers.append((name, value))
    return headers


def has_control_characters(scope: Scope) -> bool:
    """A control character in the path or query string, raw or percent-encoded."""
    return bool(
        _CONTROL_IN_PATH.search(scope["path"]) or _CONTROL_IN_QUERY.search(scope["query_string"])
    )


def has_nul(content_type: str, body: bytes) -> bool:
    """NUL in a whole form body of ``content_type`` (the value before any ``;``)."""
    nul = _NUL_IN_FORM.get(content_type.strip().lower())
    return nul is not None and nul.search(body) is not None


def client_ip(request: Request, trusted_proxies: Sequence[Network]) -> str | None:
    """The socket peer, or with a trusted proxy in front the right-most untrusted
    ``X-Forwarded-For`` hop (the left part of that header is whatever the client said)."""
    peer = request.client.host if request.client else None
    if peer is None or not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _is_trusted(hop, trusted_proxies):
            return hop if _is_ip(hop) else peer
    return peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted_proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)


def request_context(request: Request, trusted_proxies: Sequence[Network]) -> RequestContext:
    """The audit context of an HTTP request."""
    return RequestContext(
        ip=client_ip(request, trusted_proxies),
        user_agent=request.headers.get("user-agent"),
    )
