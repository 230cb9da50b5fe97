"""Prometheus metrics: plain ``count_*`` functions the services call, and ``GET /metrics``.

prometheus_client is imported only when a metric is first used: it chooses between its
in-process and its multiprocess storage at import, from ``PROMETHEUS_MULTIPROC_DIR``, and
``identity serve`` sets that variable after this module has been imported.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity import repositories
from identity.bearer import bearer_token
from identity.config import Settings
from identity.db import Database
from identity.security import client_ip

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.core import Metric

log = logging.getLogger("identity.metrics")

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Metrics:
    """Every metric this process updates; built once, on first use."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests: Counter = Counter(
            "identity_http_requests", "HTTP requests answered", ["route", "method", "status"]
        )
        self.duration: Histogram = Histogram(
            "identity_http_request_duration_seconds",
            "Time from request to the end of its response",
            ["route", "method"],
            buckets=_DURATION_BUCKETS,
        )
        self.tokens: Counter = Counter(
            "identity_tokens_issued", "Token responses issued", ["grant_type"]
        )
        self.logins: Counter = Counter(
            "identity_logins", "Login outcomes (as audited)", ["outcome"]
        )
        self.rate_limited: Counter = Counter(
            "identity_rate_limited", "Hits a named rate limiter refused", ["limiter"]
        )
        self.mail_failures: Counter = Counter(
            "identity_mail_delivery_failures", "Mail delivery attempts that failed"
        )
        self.redis_round_trips: Counter = Counter(
            "identity_redis_round_trips",
            "Round trips to Redis from the event loop (each carries the commands of every "
            "request in that turn of the loop)",
        )
        self.redis_commands: Counter = Counter(
            "identity_redis_commands", "Commands sent to Redis in those round trips"
        )


_lock = threading.Lock()
_built: _Metrics | None = None


def _metrics() -> _Metrics:
    global _built
    if _built is None:
        with _lock:  # two threads registering the same names would be an error
            if _built is None:
                _built = _Metrics()
    return _built


# -- what the services call ------------------------------------------------------------------


def count_token(grant_type: str) -> None:
    """One token response issued with ``grant_type``."""
    _metrics().tokens.labels(grant_type=grant_type or "unknown").inc()


def count_login(outcome: str) -> None:
    """One login outcome: succeeded, failed or throttled."""
    _metrics().logins.labels(outcome=outcome).inc()


def count_rate_limited(limiter: str) -> None:
    """One hit the named limiter refused."""
    _metrics().rate_limited.labels(limiter=limiter).inc()


def count_redis_round_trip(commands: int) -> None:
    """One round trip to Redis from the event loop, carrying ``commands`` commands."""
    built = _metrics()
    built.redis_round_trips.inc()
    built.redis_commands.inc(commands)


def count_mail_failure() -> None:
    """One mail delivery attempt failed (it will be retried)."""
    _metrics().mail_failures.inc()


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """One answered HTTP request."""
    method = method if method in _METHODS else "other"  # the method is the client's to choose
    children = _request_children.get((route, method, status))
    if children is None:
        # labels() hashes and locks on every call; routes are templates and statuses few,
        # so the children are kept (this is on every request's path).
        metrics = _metrics()
        children = (
            metrics.requests.labels(route=route, method=method, status=str(status)),
            metrics.duration.labels(route=route, method=method),
        )
        _request_children[(route, method, status)] = children
    children[0].inc()
    children[1].observe(seconds)


_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


# -- requests --------------------------------------------------------------------------------


def route_template(scope: Scope, root_path: str = "") -> str:
    """The path template of the route that answered (``/account/sessions/{public_id}/revoke``),
    never the raw path, so labels stay few; ``unmatched`` when no route matched.

    ``root_path`` is the scope's root path before routing: mounts add to it."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    prefix = str(scope.get("root_path", ""))[len(root_path) :]
    if isinstance(route, Mount):
        # A mount's own match is already in the root path; its template says the same.
        prefix = prefix.removesuffix(route.path)
    return prefix + str(getattr(route, "path_format", UNMATCHED))


class RequestMetricsMiddleware:
    """Count every HTTP request by route template, method and status, and time it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception on its way out
        observed = False

        def observe() -> None:
            nonlocal observed
            if not observed:
                observed = True
                route = route_template(scope, root_path)
                observe_request(route, scope["method"], status, time.perf_counter() - started)

        async def send_observing(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves, so a scrape that follows the
                # response always sees it.
                observe()
            await send(message)

        try:
            await self.app(scope, receive, send_observing)
        finally:
            observe()


# -- /metrics --------------------------------------------------------------------------------


def scrape_allowed(request: Request, settings: Settings) -> bool:
    """With ``IDENTITY_METRICS_TOKEN``: that bearer token (constant-time compare). Without:
    a loopback client that no untrusted proxy forwarded (a local proxy that is not listed in
    ``IDENTITY_TRUSTED_PROXIES`` would make every visitor look like loopback)."""
    if settings.metrics_token is not None:
        presented = bearer_token(request.headers)
        return presented is not None and hmac.compare_digest(
            presented.encode(), settings.metrics_token.encode()
        )
    address = client_ip(request, settings.trusted_proxies)
    if address is None or not _is_loopback(address):
        return False
    peer = request.client.host if request.client else None
    forwarded = any(name in request.headers for name in _FORWARDING_HEADERS)
    return not forwarded or _is_listed(peer, settings)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _is_listed(address: str | None, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in settings.trusted_proxies)


class _ScrapeTimeCollector:
    """Gauges read when scraped: the outbox backlog and this worker's connection pool."""

    def __init__(self, backlog: int | None, pool: dict[str, int]) -> None:
        self.backlog = backlog
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        if self.backlog is not None:
            yield GaugeMetricFamily(
                "identity_outbox_backlog", "Mail messages not yet sent", value=self.backlog
            )
        pool = GaugeMetricFamily(
            "identity_db_pool_connections",
            "Database connections of the worker that answered this scrape",
            labels=["state"],
        )
        for state, value in self.pool.items():
            pool.add_metric([state], value)
        yield pool


def _outbox_backlog(database: Database) -> int:
    with database.transaction() as session:
        return repositories.outbox_backlog(session)


def _pool_connections(database: Database) -> dict[str, int]:
    pool: Any = database.engine.pool
    values: dict[str, int] = {}
    for state, method in (("checked_out", "checkedout"), ("size", "size")):
        reader = getattr(pool, method, None)
        if callable(reader):
            values[state] = int(reader())
    return values


def exposition(backlog: int | None, pool: dict[str, int]) -> tuple[bytes, str]:
    """The text exposition of every metric (all workers' in multiprocess mode) and its type."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    _metrics()
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    scrape_time = CollectorRegistry(auto_describe=False)
    scrape_time.register(_ScrapeTimeCollector(backlog, pool))  # type: ignore[arg-type]
    return body + generate_latest(scrape_time), CONTENT_TYPE_LATEST


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics`` in the Prometheus text format, for allowed scrapers only."""
    settings: Settings = request.app.state.settings
    if not scrape_allowed(request, settings):
        return PlainTextResponse(
            "Forbidden\n", status_code=403, headers={"Cache-Control": "no-store"}
        )
    database: Database = request.app.state.database
    try:
        backlog: int | None = await run_in_threadpool(_outbox_backlog, database)
    except DBAPIError as error:  # the rest of the metrics are still worth a scrape
        log.warning("metrics: outbox backlog unavailable: %s", type(error).__name__)
        backlog = None
    body, content_type = exposition(backlog, _pool_connections(database))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


# -- identity serve --------------------------------------------------------------------------


def prepare_multiprocess_dir() -> Path | None:
    """Before uvicorn starts its workers: use ``PROMETHEUS_MULTIPROC_DIR`` emptied of an
    earlier run's files, or set it to a new temporary folder (returned, for removal)."""
    configured = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # counts of processes that no longer run
            stale.unlink(missing_ok=True)
        return None
    created = Path(tempfile.mkdtemp(prefix="identity-metrics-"))
    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(created)
    return created
