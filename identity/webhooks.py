"""Webhook endpoints: the rules for adding, listing, rotating, enabling and removing them, and
the address policy the sender applies again at delivery time. Used by the CLI, the admin API
and the console alike; every change is audited and reaches every instance through the
``webhooks`` cache generation."""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from identity import audit, repositories, webhook_events
from identity.admin_models import WebhookDelivery, WebhookEndpoint
from identity.audit import RequestContext
from identity.models import utcnow
from identity.secret_box import SecretBox
from identity.webhook_events import EVENT_TYPES, FAMILIES, OPEN_FAMILIES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (a collaborator, so tests pass their own).
Resolver = Callable[[str, int], Sequence[str]]

_MAX_URL_LENGTH = 2000
_MAX_PATTERNS = 50
_OPEN_NAME = re.compile(r"[a-z][a-z0-9_]{0,50}")
_ALLOW_HINT = "IDENTITY_WEBHOOKS_ALLOW_PRIVATE=1 allows them, for development"


class WebhookError(ValueError):
    """A webhook request the operator must change: the sentence says what and how."""


@dataclass(frozen=True)
class NewEndpoint:
    """A registered endpoint and its signing secret, which is shown this once."""

    endpoint: WebhookEndpoint
    secret: str


# -- addresses ---------------------------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in found))


def is_public(address: IPAddress) -> bool:
    """True for an address on the public internet: not loopback, private, link-local (cloud
    metadata), shared, reserved or multicast, also when written as IPv4-mapped IPv6."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def checked_addresses(
    host: str, port: int, *, allow_private: bool, resolve: Resolver = resolve_host
) -> list[IPAddress]:
    """The addresses to connect to for ``host``; WebhookError when it does not resolve, or
    when any address is not public (unless ``allow_private``). The sender connects to these
    very addresses, so a name that resolves elsewhere a moment later (DNS rebinding) cannot
    lead it into the private network."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a) for a in resolve(host, port)]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise WebhookError(f"{host} does not resolve to an address")
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            where = host if literal is not None else f"{host} resolves to {refused[0]}, which"
            raise WebhookError(
                f"{where} is not a public address: webhooks go only to public addresses "
                f"({_ALLOW_HINT})"
            )
    return addresses


@dataclass(frozen=True)
class Target:
    """The parts of an endpoint URL the sender needs."""

    scheme: str
    host: str
    port: int
    path: str  # with the query, as sent in the request line


def parse_url(url: str, *, allow_private: bool) -> Target:
    """The URL's parts, or WebhookError: https only (http too with ``allow_private``), a host,
    no user name or password, no fragment."""
    if len(url) > _MAX_URL_LENGTH:
        raise WebhookError(f"the URL is longer than {_MAX_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise WebhookError("the URL holds spaces or control characters")
    parts = urlsplit(url)
    schemes = ("http", "https") if allow_private else ("https",)
    if parts.scheme not in schemes:
        hint = "" if allow_private else f" ({_ALLOW_HINT} with http://)"
        raise WebhookError(f"the URL must start with {' or '.join(schemes)}://{hint}")
    if not parts.hostname:
        raise WebhookError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("put no user name or password in the URL: deliveries are signed")
    if parts.fragment:
        raise WebhookError("the URL must have no #fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookError("the URL's port is not a number from 1 to 65535") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path)


def check_url(url: str, *, allow_private: bool, resolve: Resolver = resolve_host) -> str:
    """``url`` stripped, if webhooks may go there; else WebhookError."""
    url = url.strip()
    target = parse_url(url, allow_private=allow_private)
    if not allow_private:  # else any address will do: nothing to check yet
        checked_addresses(target.host, target.port, allow_private=False, resolve=resolve)
    return url


# -- events ------------------------------------------------------------------------------------


def checked_events(events: Sequence[str]) -> list[str]:
    """The patterns in ``events`` (space or comma separated), each a known event type, a
    family (``user.*``) or ``*``; else WebhookError."""
    patterns = list(dict.fromkeys(p for text in events for p in text.replace(",", " ").split()))
    if not patterns:
        raise WebhookError("name the events to send, e.g. --events 'user.created user.*'")
    if len(patterns) > _MAX_PATTERNS:
        raise WebhookError(f"at most {_MAX_PATTERNS} event patterns")
    for pattern in patterns:
        family, dot, name = pattern.partition(".")
        known = pattern == "*" or pattern in EVENT_TYPES
        if dot and family in FAMILIES and name == "*":
            known = True
        if dot and family in OPEN_FAMILIES and _OPEN_NAME.fullmatch(name):
            known = True
        if not known:
            raise WebhookError(
                f"unknown event {pattern!r}: use one of {', '.join(EVENT_TYPES)}, "
                f"a family ({', '.join(f + '.*' for f in FAMILIES)}) or * for all"
            )
    return patterns


# -- endpoints ---------------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def add_endpoint(
    session: Session,
    box: SecretBox,
    *,
    url: str,
    events: Sequence[str],
    allow_private: bool,
    actor: str,
    context: RequestContext,
    resolve: Resolver = resolve_host,
) -> NewEndpoint:
    """Register an endpoint; its secret is in the answer and never again."""
    patterns = checked_events(events)
    url = check_url(url, allow_private=allow_private, resolve=resolve)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id="wh_" + secrets.token_hex(12),
        url=url,
        events=patterns,
        secret_sealed=box.seal(secret),
        enabled=True,
        created_at=utcnow(),
    )
    repositories.add_webhook_endpoint(session, endpoint)
    _changed(session, endpoint, "webhook.added", actor, context, {"events": patterns})
    return NewEndpoint(endpoint, secret)


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(repositories.list_webhook_endpoints(session))


def get_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint, or LookupError."""
    endpoint = repositories.get_webhook_endpoint(session, endpoint_id)
    if endpoint is None:
        raise LookupError(f"no webhook endpoint {endpoint_id!r}")
    return endpoint


def remove_endpoint(
    session: Session, endpoint_id: str, *, actor: str, context: RequestContext
) -> None:
    """Delete the endpoint with its deliveries and their log."""
    endpoint = get_endpoint(session, endpoint_id)
    _changed(session, endpoint, "webhook.removed", actor, context, {})
    repositories.delete_webhook_endpoint(session, endpoint)


def rotate_secret(
    session: Session,
    box: SecretBox,
    endpoint_id: str,
    *,
    overlap: timedelta,
    actor: str,
    context: RequestContext,
    now: datetime | None = None,
) -> str:
    """Give the endpoint a new secret and return it. For ``overlap`` the old one signs too
    (a second signature in ``webhook-signature``), so the receiver can switch without
    refusing a delivery; a zero overlap drops it at once."""
    if overlap < timedelta(0) or overlap > timedelta(days=30):
        raise WebhookError("the overlap must be between 0 and 30 days")
    endpoint = _for_update(session, endpoint_id)
    secret = new_secret()
    keep = overlap > timedelta(0)
    endpoint.previous_secret_sealed = endpoint.secret_sealed if keep else None
    endpoint.previous_secret_until = (now or utcnow()) + overlap if keep else None
    endpoint.secret_sealed = box.seal(secret)
    detail = {"overlap_seconds": int(overlap.total_seconds())}
    _changed(session, endpoint, "webhook.secret_rotated", actor, context, detail)
    return secret


def set_enabled(
    session: Session, endpoint_id: str, enabled: bool, *, actor: str, context: RequestContext
) -> WebhookEndpoint:
    """Enable (its waiting deliveries then go out) or disable the endpoint."""
    endpoint = _for_update(session, endpoint_id)
    endpoint.enabled = enabled
    endpoint.disabled_reason = None if enabled else "disabled by an operator"
    endpoint.failing_since = None
    kind = "webhook.enabled" if enabled else "webhook.disabled"
    _changed(session, endpoint, kind, actor, context, {})
    return endpoint


def disable_failing(session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    """The sender's own disabling of an endpoint that kept failing (audited, no operator)."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:200]
    _changed(session, endpoint, "webhook.disabled", None, None, {"reason": reason[:200]})


def describe_endpoint(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The endpoint as the CLI, the API and the console show it; never its secret."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": _iso(endpoint.failing_since),
        "previous_secret_until": _iso(endpoint.previous_secret_until),
        "created_at": _iso(endpoint.created_at),
    }


def recent_deliveries(session: Session, endpoint_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The endpoint's newest deliveries, newest first; LookupError for an unknown endpoint."""
    get_endpoint(session, endpoint_id)
    return [
        {
            "id": delivery.id,
            "event_type": event.type,
            "message_id": event.message_id,
            "status": delivery.status,
            "attempts": delivery.attempts,
            "last_status_code": delivery.last_status_code,
            "last_response_ms": delivery.last_response_ms,
            "last_error": delivery.last_error,
            "created_at": _iso(delivery.created_at),
            "next_attempt_at": _iso(delivery.next_attempt_at)
            if delivery.status == "pending"
            else None,
            "delivered_at": _iso(delivery.delivered_at),
        }
        for delivery, event in repositories.recent_webhook_deliveries(session, endpoint_id, limit)
    ]


def redeliver(session: Session, delivery_id: int, *, actor: str, context: RequestContext) -> None:
    """Send a delivery's event to its endpoint again, now, as a new delivery with the same
    ``webhook-id`` (a receiver that has it already can tell)."""
    delivery = repositories.get_webhook_delivery(session, delivery_id)
    if delivery is None:
        raise LookupError(f"no webhook delivery {delivery_id}")
    endpoint = get_endpoint(session, delivery.endpoint_id)
    if not endpoint.enabled:
        raise WebhookError(f"endpoint {endpoint.id} is disabled: enable it first")
    now = utcnow()
    again = WebhookDelivery(
        event_id=delivery.event_id,
        endpoint_id=endpoint.id,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    repositories.add_webhook_deliveries(session, [again])
    audit.record(
        session,
        "webhook.redelivered",
        context=context,
        actor=actor,
        subject=endpoint.id,
        detail={"delivery": delivery.id, "new_delivery": again.id},
    )


def _for_update(session: Session, endpoint_id: str) -> WebhookEndpoint:
    endpoint = repositories.get_webhook_endpoint(session, endpoint_id, for_update=True)
    if endpoint is None:
        raise LookupError(f"no webhook endpoint {endpoint_id!r}")
    return endpoint


def _changed(
    session: Session,
    endpoint: WebhookEndpoint,
    kind: str,
    actor: str | None,
    context: RequestContext | None,
    detail: dict[str, Any],
) -> None:
    """Audit a change and tell every instance (the outbox writers' endpoint presence)."""
    host = urlsplit(endpoint.url).hostname  # not the URL: its query may hold a token
    audit.record(
        session,
        kind,
        context=context,
        actor=actor,
        subject=endpoint.id,
        detail={"host": host, **detail},
    )
    repositories.bump_cache_generation(session, "webhooks")
    webhook_events.PRESENCE.forget()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
