"""Request-level defences: body size cap, security headers, the client's real IP."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
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
                message["headers"] = self._with_security_headers(message.get("headers", []))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _with_security_headers(
        self, raw: Iterable[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The response's headers plus each security header it does not set itself (raw
        tuples in one pass: this runs on every response)."""
        headers = list(raw)
        present = {name.lower() for name, _ in headers}
        is_html = any(
            name.lower() == b"content-type" and value.startswith(b"text/html")
            for name, value in headers
        )
        extra = _HTTPS_HEADERS if self.https else _HTTP_HEADERS
        csp = _HTML_CSP_HEADER if is_html else _API_CSP_HEADER
        for name, value in (*extra, csp):
            if name not in present:
                headers.append((name, value))
        return headers


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
