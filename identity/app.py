"""``create_app(settings)``: routes, middleware and lifespan. The only module that knows all."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy.exc import DataError, DBAPIError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from identity import protocol, rendering, repositories
from identity.accounts.sessions import SessionPolicy
from identity.api.problems import Problem
from identity.api.routes import OPERATIONS, api_routes
from identity.config import Settings
from identity.db import Database
from identity.http_protocol import LANE_KEY, STATE_KEY, ReadyAnswers
from identity.logs import RequestLogMiddleware
from identity.mail import OutboxSender
from identity.metrics import RequestMetricsMiddleware, metrics_endpoint
from identity.openapi.document import openapi_routes
from identity.protocol.endpoints import metadata
from identity.protocol.fast_lane import FastLane, HotLane
from identity.protocol.parameters import is_forbidden_description
from identity.protocol.routes import hot_routes, protocol_routes, ready_documents
from identity.security import (
    BodySizeLimitMiddleware,
    ControlCharacterMiddleware,
    MalformedInput,
    SecurityHeadersMiddleware,
)
from identity.services import build_services
from identity.web import pages
from identity.web.account import account_routes
from identity.web.admin import admin_routes
from identity.web.authorize import authorize_routes
from identity.web.device import device_routes
from identity.web.end_session import end_session_routes
from identity.web.federation import federation_routes
from identity.web.federation_link import federation_link_routes
from identity.web.passkey_pages import passkey_page_routes
from identity.web.passkeys import passkey_routes
from identity.web.signin import signin_routes
from identity.web.signup import signup_routes
from identity.web.two_factor import two_factor_routes
from identity.web.two_factor_setup import two_factor_setup_routes
from identity.webhook_delivery import WebhookSender

log = logging.getLogger("identity")

_PRUNE_INTERVAL_SECONDS = 600


def _error_body(status: int, detail: str) -> dict[str, str]:
    error = {
        400: "invalid_request",
        401: "invalid_client",
        404: "not_found",
        405: "invalid_request",
        413: "invalid_request",
        503: "temporarily_unavailable",
    }.get(status, "server_error")
    return {"error": error, "error_description": detail}


_MACHINE_PATHS = (
    "/oauth2/",
    "/.well-known/",
    "/api/",
    "/healthz",
    "/readyz",
    "/static/",
    "/passkeys/",  # the JSON endpoints of passkeys.js
)
# Hosted pages that live under /oauth2/: a person's browser is on the other end.
_PAGES_UNDER_MACHINE_PATHS = ("/oauth2/authorize", "/oauth2/logout")
_PAGE_TEXT = {
    404: ("Page not found", "There is nothing at this address."),
    405: ("Not allowed", "This page cannot be used that way."),
    413: ("Too much data", "What you sent is larger than this server accepts."),
    500: ("Something went wrong", "An unexpected error happened on our side. Try again."),
    503: ("Temporarily unavailable", "The service is briefly unavailable. Try again shortly."),
}


def _error(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """An error in the caller's own format: problem+json for the JSON API, a friendly page
    for browsers, OAuth error JSON for the protocol endpoints."""
    if request.url.path.startswith("/api/"):
        return Problem(status, detail, headers=headers).response()
    path = request.url.path
    if path.startswith(_PAGES_UNDER_MACHINE_PATHS) or not path.startswith(_MACHINE_PATHS):
        heading, text = _PAGE_TEXT.get(status, ("Something went wrong", detail))
        response = pages.message(request, None, heading, text, status=status)
        response.headers.update(headers or {})
        return response
    return JSONResponse(_error_body(status, detail), status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(request, exc.status_code, exc.detail, dict(exc.headers or {}))


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.error("database error on %s: %s", request.url.path, type(exc).__name__)
    detail = "The service is temporarily unavailable; retry shortly."
    return _error(request, 503, detail, {"Retry-After": "5", "Cache-Control": "no-store"})


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return _error(request, 500, "Internal error.")


async def _malformed_input(request: Request) -> Response:
    return _error(request, 400, MalformedInput().detail)


async def _value_error(request: Request, exc: Exception) -> Response:
    """Authlib refusing an error description's characters means user text reached one that
    ``protocol.parameters`` did not stop: still the client's malformed request, not a 500."""
    if not is_forbidden_description(exc):
        raise exc  # for the server-error handler, and the traceback
    log.warning("malformed text reached an OAuth error description on %r", request.url.path)
    return _error(request, 400, MalformedInput().detail)


async def _database_refused_data(request: Request, exc: Exception) -> Response:
    """The database refused a value for its type (e.g. NUL in text on PostgreSQL): input the
    checks above let through, never a database that is down (503)."""
    log.error("database refused a value on %r: %s", request.url.path, type(exc).__name__)
    return _error(request, 400, "The request holds a value that cannot be stored.")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    database: Database = request.app.state.database
    try:
        await run_in_threadpool(database.ping)
        checks["database"] = "ok"
    except DBAPIError:
        checks["database"] = "down"
    client: redis.Redis | None = request.app.state.redis
    if client is not None:
        try:
            await run_in_threadpool(client.ping)
            checks["redis"] = "ok"
        except redis.RedisError:
            checks["redis"] = "down"
    # The database is required. Redis is not: without it limiters count in this process and
    # the denylist is read from the database, so the instance still serves, only degraded.
    if checks["database"] != "ok":
        status, code = "unavailable", 503
    elif checks.get("redis", "ok") != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ready", 200
    return JSONResponse(
        {"status": status, "checks": checks},
        status_code=code,
        headers={"Cache-Control": "no-store"},
    )


async def _prune_forever(database: Database) -> None:
    """Drop rows that have expired anyway: denylist entries, sessions, codes and links."""
    while True:
        await asyncio.sleep(_PRUNE_INTERVAL_SECONDS)
        try:
            with database.transaction() as session:
                now = datetime.now(UTC)
                repositories.prune_revoked_tokens(session, now)
                repositories.prune_browser_sessions(session, now)
                repositories.prune_one_time_secrets(session, now)
                repositories.prune_device_authorizations(session, now)
        except DBAPIError as error:
            log.warning("pruning expired rows failed: %s", type(error).__name__)


_frozen = False


def _freeze_startup_objects() -> None:
    """Move what start-up built (modules, settings, keys, caches) out of the collector's
    reach, once per process. Full collections then walk only what requests make: under load
    they had set the token endpoint's p99 (about 70 ms against 44 ms with this, one core,
    bench/README.md). Once: a process that starts many apps (tests) freezes only the first's."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the whole application from ``settings`` (default: the environment)."""
    settings = settings or Settings.from_env()
    if settings.insecure_http:
        # Authlib refuses plain-http URIs unless this is set; only this setting may set it.
        os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    services = build_services(settings)
    database, oauth, accounts = services.database, services.oauth, services.accounts
    redis_client, loop_redis, keys = services.redis, services.loop_redis, services.keys
    # Background work (mail, webhooks, pruning) has a small pool of its own: its pollers keep
    # their connections busy every second, so the idle ping would never check them, and
    # after a database restart a request would be handed one of them, dead, and answer 503.
    background = Database(settings.database_url, pool_size=2)
    sender = OutboxSender(background, settings)
    webhook_sender = WebhookSender(background, settings, accounts.secret_box)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        oauth.lanes.configure()
        keys.ensure()  # safe when several workers start at once (file lock)
        keys.ring()
        settings.log_unsafe_defaults()
        pruner = asyncio.create_task(_prune_forever(background))
        stop_sending = asyncio.Event()
        mail = asyncio.create_task(sender.run(stop_sending))
        hooks = asyncio.create_task(webhook_sender.run(stop_sending))
        _freeze_startup_objects()
        try:
            yield {STATE_KEY: ready_answers, LANE_KEY: lane}
        finally:
            stop_sending.set()  # the sender finishes the message at hand, then stops
            await mail
            await hooks  # the round at hand ends within a timeout
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            oauth.lanes.close()
            # Commits what is pending before the connections go.
            await asyncio.to_thread(services.audit_writer.close)
            database.dispose()
            background.dispose()
            if redis_client is not None:
                redis_client.close()
            if loop_redis is not None:
                await loop_redis.close()

    oauth_routes = protocol_routes(settings)
    routes = [
        *oauth_routes,  # first: the hot paths (see protocol_routes)
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *authorize_routes(),
        *end_session_routes(),
        *signin_routes(),
        *two_factor_routes(),
        *two_factor_setup_routes(),
        *federation_link_routes(),  # before federation_routes: "link" is no provider
        *federation_routes(),
        *passkey_routes(),
        *passkey_page_routes(),
        *signup_routes(),
        *account_routes(),
        *admin_routes(),
        *device_routes(),
        *api_routes(settings),
        *openapi_routes(settings, OPERATIONS),
        rendering.static_files(),
    ]
    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_error,
        DataError: _database_refused_data,  # a DBAPIError too: the nearer class wins
        DBAPIError: _database_unavailable,
        ValueError: _value_error,
    }
    # The hot routes' answers, in the app (FastLane) and from identity serve's HTTP protocol.
    lane = HotLane(
        routes=hot_routes(oauth_routes),
        settings=settings,
        handlers=handlers,
        unexpected=_unexpected,
    )
    middleware = [
        # The hot routes take one layer instead of all below (protocol.fast_lane).
        Middleware(FastLane, lane=lane),
        # Outermost of the rest: the request id is set before anything else logs.
        Middleware(RequestLogMiddleware, trusted_proxies=settings.trusted_proxies),
        Middleware(RequestMetricsMiddleware),
        Middleware(SecurityHeadersMiddleware, https=settings.is_https),
        Middleware(BodySizeLimitMiddleware, limit=settings.max_body_bytes),
        # The JSON API checks its own parameters (api.bodies), with field errors.
        Middleware(ControlCharacterMiddleware, reject=_malformed_input, exempt=("/api/",)),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={**handlers, Exception: _unexpected},
    )
    lane.app = app
    app.state.settings = settings
    app.state.services = services
    app.state.database = database
    app.state.redis = redis_client
    app.state.oauth = oauth
    app.state.lanes = oauth.lanes
    app.state.discovery = metadata(settings.issuer, protocol.grant_types(settings))
    app.state.discovery_body = json.dumps(app.state.discovery, separators=(",", ":")).encode()
    # JWKS and discovery, answered by identity serve's HTTP protocol itself (http_protocol).
    ready_answers = ReadyAnswers(
        ready_documents(oauth, app.state.discovery_body),
        https=settings.is_https,
        cors=bool(settings.cors_origins),
        trusted_proxies=settings.trusted_proxies,
    )
    app.state.accounts = accounts
    app.state.providers = services.providers
    app.state.limiter = accounts.limiter
    app.state.session_policy = SessionPolicy(
        idle=timedelta(seconds=settings.session_idle_seconds),
        absolute=timedelta(seconds=settings.session_max_seconds),
        https=settings.is_https,
    )
    return app
