"""The per-client limits of the protocol endpoints, counted in the event loop."""

from __future__ import annotations

from authlib.oauth2.rfc6749.util import extract_basic_authorization
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from identity.limits import Decision, RateLimiter
from identity.protocol.requests import StarletteOAuth2Request


def limit_key(oauth_request: StarletteOAuth2Request) -> str:
    """Who a request counts against: the client_id it claims, else its IP (counted before
    any secret is checked)."""
    client_id, _ = extract_basic_authorization(oauth_request.headers)
    key = client_id or oauth_request.form.get("client_id") or oauth_request.context.ip or "?"
    return key[:128]


def slow_down(decision: Decision) -> Response:
    """429 in OAuth's JSON."""
    return JSONResponse(
        {"error": "slow_down", "error_description": "Too many requests; retry later."},
        status_code=429,
        headers={"Retry-After": str(decision.retry_after), "Cache-Control": "no-store"},
    )


async def throttled_for(
    request: Request, oauth_request: StarletteOAuth2Request, limiter_name: str
) -> Response | None:
    """429 when the calling client is over its named limit; None when it may go on."""
    limiter: RateLimiter = request.app.state.limiter
    decision = await limiter.hit_in_loop(limiter_name, limit_key(oauth_request))
    return None if decision.allowed else slow_down(decision)
