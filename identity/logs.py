"""Logs: one access line per request, JSON (or text) lines carrying the request id.

What may be logged of a request is fixed here: method, route template, path without its
query string, status, latency, client IP, user agent, client id and user id. Never a body,
a query string or a header such as Authorization or Cookie: they carry passwords, codes and
tokens.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity.metrics import route_template
from identity.security import Network, client_ip

access_log = logging.getLogger("identity.access")

# Authlib logs every token it issues at DEBUG ("Issue token %r to %r"): whatever the level of
# identity's own lines, its loggers stay at INFO.
_SECRET_DEBUG_LOGGERS = ("authlib",)
for _name in _SECRET_DEBUG_LOGGERS:
    logging.getLogger(_name).setLevel(logging.INFO)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_USER_AGENT = 256


@dataclass
class _Request:
    """What the access line of the request at hand will say about who it served."""

    request_id: str
    client_id: str | None = None
    user_id: str | None = None


# Holds a mutable object, so what a threadpool call notes is seen by the middleware.
_current: ContextVar[_Request | None] = ContextVar("identity_request", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    current = _current.get()
    return current.request_id if current is not None else None


def note(*, client_id: str | None = None, user_id: str | None = None) -> None:
    """Name the OAuth client or user the current request acts for, for its access line."""
    current = _current.get()
    if current is None:
        return
    if client_id is not None:
        current.client_id = client_id
    if user_id is not None:
        current.user_id = user_id


class RequestLogMiddleware:
    """Give each request an id (a trusted proxy's ``X-Request-ID``, else a new one), echo it
    in the response, and write one access line when the response is done."""

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        started = time.perf_counter()
        current, token = begin_request(scope, self.trusted_proxies)
        status = 500  # unless a response starts: an exception on its way out

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = current.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Left set: the app's error handler, outside this middleware, logs the
            # exception with the request id; the task serving this request ends after it.
            log_access(scope, root_path, current, status, started, self.trusted_proxies)
            raise
        log_access(scope, root_path, current, status, started, self.trusted_proxies)
        end_request(token)


def begin_request(
    scope: Scope, trusted_proxies: Sequence[Network]
) -> tuple[_Request, Token[_Request | None]]:
    """Give the request its id (a trusted proxy's ``X-Request-ID``, else a new one) and make
    it the current one; reset the token when the request is done."""
    current = _Request(request_id_for(scope, trusted_proxies))
    return current, _current.set(current)


def end_request(token: Token[_Request | None]) -> None:
    _current.reset(token)


def served(request_id: str) -> _Request:
    """The access line's record of a request answered without the app (no client or user)."""
    return _Request(request_id)


def request_id_for(scope: Scope, trusted_proxies: Sequence[Network]) -> str:
    """A trusted proxy's ``X-Request-ID``, else a new id."""
    client = scope.get("client")
    if client and trusted_proxies and _is_in(client[0], trusted_proxies):
        offered = Headers(scope=scope).get("x-request-id", "")
        if _REQUEST_ID.fullmatch(offered):
            return offered
    return new_request_id()


class _RequestIds:
    """32 hex digits: a random half per process, then a counter. An id must be unique, not
    secret, and ``secrets.token_hex`` per request was a getrandom() call that let another
    thread take the GIL on every request (seen in the token endpoint's profile)."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)  # a forked worker gets its own half

    def _reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(secrets.randbits(48))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_ids = _RequestIds()


def new_request_id() -> str:
    return _ids.next()


def log_access(
    scope: Scope,
    root_path: str,
    current: _Request,
    status: int,
    started: float,
    trusted_proxies: Sequence[Network],
) -> None:
    """The request's access line (at INFO)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    request = Request(scope)
    # The raw path has no query string; percent-escapes keep control characters out.
    path = bytes(scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
    fields: dict[str, Any] = {
        "request_id": current.request_id,
        "method": scope["method"],
        "route": route_template(scope, root_path),
        "path": path.decode("latin-1"),
        "status": status,
        "latency_ms": latency_ms,
        "client_ip": client_ip(request, trusted_proxies),
        "user_agent": request.headers.get("user-agent", "")[:_MAX_USER_AGENT] or None,
    }
    if current.client_id is not None:
        fields["client_id"] = current.client_id
    if current.user_id is not None:
        fields["user_id"] = current.user_id
    access_log.info(
        "%s %s %d %.1fms",
        fields["method"],
        fields["path"],
        status,
        latency_ms,
        extra={"fields": fields},
    )


def _is_in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


# -- formatting --------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the request id inside a request,
    and the structured ``fields`` a record carries (the access line's)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, plus the request id and an access line's details."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = dict(getattr(record, "fields", None) or {})
        request_id = fields.pop("request_id", None) or current_request_id()
        extras = [f"{key}={value}" for key, value in fields.items() if key not in _IN_MESSAGE]
        if request_id is not None:
            extras.insert(0, f"request_id={request_id}")
        if not extras:
            return line
        head, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{head} [{' '.join(extras)}]{newline}{rest}"


_IN_MESSAGE = frozenset({"method", "path", "status", "latency_ms", "user_agent"})


def resolved_format(log_format: str, stream: TextIO | None = None) -> str:
    """``json`` or ``text``: ``auto`` is text for a person at a terminal (``stream``, by
    default stderr) and JSON for whatever collects the logs of a service."""
    if log_format != "auto":
        return log_format
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or stand-in stream: no one is looking
        return "json"


def logging_config(log_format: str, level: str, stream: TextIO | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``identity serve`` (each uvicorn worker applies
    it): every line through one formatter; uvicorn's access log off, ours replaces it.
    ``auto`` is decided here, once, from the stderr that the workers inherit."""
    formatter = (
        "identity.logs.JsonFormatter"
        if resolved_format(log_format, stream) == "json"
        else "identity.logs.TextFormatter"
    )
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            **{name: {"level": "INFO"} for name in _SECRET_DEBUG_LOGGERS},
        },
    }
