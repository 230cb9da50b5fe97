"""The webhook sender, run by every server process: a dispatcher fans each event of the outbox
out into one delivery per subscribed endpoint, and a deliverer sends due deliveries signed as
Standard Webhooks says (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), retries
them on a schedule and keeps a log of every attempt.

Delivery is at least once: a receiver may see an event twice (same ``webhook-id``) and in any
order. Several processes and instances share the work through claims (the mail outbox's
pattern), so none sends an attempt another is sending. Requests never wait on any of this."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from identity import repositories, webhooks
from identity.admin_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from identity.config import Settings
from identity.db import Database
from identity.models import utcnow
from identity.secret_box import SecretBox, SecretBoxError
from identity.webhook_events import matches
from identity.webhooks import Resolver, WebhookError, resolve_host

log = logging.getLogger("identity.webhooks")

# Long enough for any round (one timeout, a resolution and two short transactions); a sender
# that dies mid-round leaves its deliveries to another once this lapses.
_CLAIM_FOR = timedelta(minutes=5)
_RESOLVE_SECONDS = 5.0
_BATCH = 20  # deliveries attempted at once by one process
_JITTER = 0.2  # each wait is its scheduled length ±20%, so retries of a burst spread out
_USER_AGENT = "identity-webhooks"
# The delivery log is kept this long, for `identity webhooks deliveries` and redelivery.
HISTORY = timedelta(days=30)
_PRUNE_EVERY_SECONDS = 600.0


@dataclass(frozen=True)
class Job:
    """One claimed delivery, with what its attempt needs (read in the claim's transaction)."""

    delivery_id: int
    endpoint_id: str
    attempts: int  # made before this one
    url: str
    message_id: str
    body: bytes
    secrets: tuple[str, ...]  # the current one first; the previous one during an overlap
    problem: str | None = None  # why no attempt can be made (a secret no key opens)


@dataclass(frozen=True)
class Outcome:
    """What one attempt got."""

    status_code: int | None
    response_ms: int
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def payload(event: WebhookEvent) -> bytes:
    """The body: ``type``, ``timestamp`` (when it happened) and ``data``, as compact JSON."""
    stamp = event.occurred_at.astimezone(UTC).isoformat(timespec="milliseconds")
    document = {"type": event.type, "timestamp": stamp.replace("+00:00", "Z"), "data": event.data}
    return json.dumps(document, separators=(",", ":"), default=str).encode()


def signature_header(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` for each secret, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


class WebhookSender:
    """Dispatch events and deliver due deliveries; safe in several processes at once."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        box: SecretBox,
        *,
        clock: Callable[[], datetime] = utcnow,
        resolve: Resolver = resolve_host,
        jitter: Callable[[], float] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: the certificates to trust (default: the system's)."""
        self._database = database
        self._box = box
        self._clock = clock
        self._resolve = resolve
        self._allow_private = settings.webhooks_allow_private
        self._schedule = settings.webhooks_retry_seconds
        self._disable_after = timedelta(seconds=settings.webhooks_disable_after_seconds)
        self._timeout = settings.webhooks_timeout_seconds
        self._jitter = jitter or (lambda: random.uniform(1 - _JITTER, 1 + _JITTER))
        self._tls = tls  # made at the first delivery: loading the CAs takes about 20 ms

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Dispatch and deliver every ``interval`` seconds until ``stop`` is set; never dies."""
        pruned_at = time.monotonic()  # the first pruning waits: starting stays light
        while not stop.is_set():
            busy = False
            try:
                if time.monotonic() - pruned_at >= _PRUNE_EVERY_SECONDS:
                    pruned_at = time.monotonic()
                    await run_in_threadpool(self.prune)
                dispatched = await run_in_threadpool(self.dispatch)
                claimed, _ = await self._round(_BATCH)
                busy = claimed > 0 or dispatched > 0
            except DBAPIError as error:
                # The type only: the message may carry statement parameters.
                log.warning("webhooks: database error, retrying: %s", type(error).__name__)
            except Exception:
                log.exception("webhooks: delivery round failed")
            if busy:
                continue  # a backlog drains without waiting between rounds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def prune(self) -> int:
        """Forget deliveries settled more than ``HISTORY`` ago, and their events."""
        with self._database.transaction() as session:
            return repositories.prune_webhook_history(session, self._clock() - HISTORY)

    # -- dispatching -------------------------------------------------------------------------

    def dispatch(self, limit: int = 100) -> int:
        """Fan up to ``limit`` new events out into deliveries, in the transaction that marks
        them dispatched. Returns how many events were taken."""
        with self._database.transaction() as session:
            if not repositories.has_undispatched_webhook_events(session):
                return 0
            events = repositories.claim_undispatched_webhook_events(session, limit=limit)
            endpoints = repositories.enabled_webhook_endpoints(session)
            now = self._clock()
            repositories.add_webhook_deliveries(
                session,
                (
                    WebhookDelivery(
                        event_id=event.id,
                        endpoint_id=endpoint.id,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    for event in events
                    for endpoint in endpoints
                    if matches(endpoint.events, event.type)
                ),
            )
            return len(events)

    # -- delivering --------------------------------------------------------------------------

    async def deliver_due(self, limit: int = _BATCH) -> int:
        """Claim due deliveries, attempt them all at once, then record each outcome. Returns
        how many were delivered."""
        return (await self._round(limit))[1]

    async def _round(self, limit: int) -> tuple[int, int]:
        """(claimed, delivered)."""
        jobs = await run_in_threadpool(self.claim, limit)
        if not jobs:
            return 0, 0
        outcomes = await asyncio.gather(*(self.attempt(job) for job in jobs))
        await run_in_threadpool(self.record_all, jobs, outcomes)
        return len(jobs), sum(outcome.delivered for outcome in outcomes)

    def claim(self, limit: int = _BATCH) -> list[Job]:
        """Claim up to ``limit`` due deliveries (one short transaction)."""
        with self._database.transaction() as session:
            now = self._clock()
            if not repositories.has_due_webhook_deliveries(session, now):
                return []
            claimed = repositories.claim_due_webhook_deliveries(
                session, now, limit=limit, claim_for=_CLAIM_FOR
            )
            events = repositories.get_webhook_events(session, (d.event_id for d in claimed))
            endpoints: dict[str, WebhookEndpoint | None] = {}
            for delivery in claimed:
                if delivery.endpoint_id not in endpoints:
                    endpoints[delivery.endpoint_id] = repositories.get_webhook_endpoint(
                        session, delivery.endpoint_id
                    )
            return [
                self._job(delivery, events[delivery.event_id], endpoint, now)
                for delivery in claimed
                if (endpoint := endpoints[delivery.endpoint_id]) is not None
            ]

    def _job(
        self,
        delivery: WebhookDelivery,
        event: WebhookEvent,
        endpoint: WebhookEndpoint,
        now: datetime,
    ) -> Job:
        sealed = [endpoint.secret_sealed]
        until = endpoint.previous_secret_until
        if endpoint.previous_secret_sealed and until is not None and until > now:
            sealed.append(endpoint.previous_secret_sealed)
        problem = None
        try:
            secrets = tuple(self._box.open(s) for s in sealed)
        except SecretBoxError as error:
            secrets, problem = (), f"the signing secret cannot be opened: {error}"
        return Job(
            delivery_id=delivery.id,
            endpoint_id=endpoint.id,
            attempts=delivery.attempts,
            url=endpoint.url,
            message_id=event.message_id,
            body=payload(event),
            secrets=secrets,
            problem=problem,
        )

    async def attempt(self, job: Job) -> Outcome:
        """POST the job's event once: to the address its host resolved to just now, checked
        (no redirects followed). Never raises."""
        started = time.monotonic()
        try:
            if job.problem is not None:
                raise WebhookError(job.problem)
            async with asyncio.timeout(self._timeout + _RESOLVE_SECONDS):
                request = await self._request(job)
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                async with httpx.AsyncClient(
                    verify=self._tls,
                    timeout=self._timeout,
                    follow_redirects=False,
                    trust_env=False,  # no proxy from the environment: we connect where we checked
                    limits=httpx.Limits(max_keepalive_connections=0),
                ) as client:
                    response = await client.send(request, stream=True)
                    await response.aclose()  # the body is not needed: only the status
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
            return Outcome(response.status_code, _elapsed_ms(started), error)
        except TimeoutError:
            return Outcome(None, _elapsed_ms(started), "timed out")
        except (WebhookError, httpx.HTTPError, httpx.InvalidURL, OSError) as error:
            return Outcome(None, _elapsed_ms(started), f"{type(error).__name__}: {error}"[:500])
        except Exception as error:  # one odd receiver must not cost the round its records
            log.exception("webhook %s to %s: unexpected error", job.message_id, job.endpoint_id)
            return Outcome(None, _elapsed_ms(started), f"{type(error).__name__}"[:500])

    async def _request(self, job: Job) -> httpx.Request:
        target = webhooks.parse_url(job.url, allow_private=self._allow_private)
        addresses = await asyncio.wait_for(
            asyncio.to_thread(
                webhooks.checked_addresses,
                target.host,
                target.port,
                allow_private=self._allow_private,
                resolve=self._resolve,
            ),
            timeout=_RESOLVE_SECONDS,
        )
        url = httpx.URL(job.url)
        # Connect to the checked address; the name goes in Host and, for TLS, in SNI, where
        # the certificate is verified against it.
        pinned = url.copy_with(host=str(addresses[0]))
        timestamp = int(self._clock().timestamp())
        headers = {
            "host": url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
            "webhook-id": job.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(job.secrets, job.message_id, timestamp, job.body),
        }
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        return httpx.Request(
            "POST", pinned, headers=headers, content=job.body, extensions=extensions
        )

    # -- recording ---------------------------------------------------------------------------

    def record_all(self, jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> None:
        for job, outcome in zip(jobs, outcomes, strict=True):
            self.record(job, outcome)

    def record(self, job: Job, outcome: Outcome) -> None:
        """Log the attempt and settle the delivery: delivered, due again later, or failed for
        good; an endpoint that has failed for too long is disabled."""
        with self._database.transaction() as session:
            now = self._clock()
            repositories.add_webhook_attempt(
                session,
                WebhookAttempt(
                    delivery_id=job.delivery_id,
                    attempted_at=now,
                    status_code=outcome.status_code,
                    response_ms=outcome.response_ms,
                    error=outcome.error,
                ),
            )
            delivery = repositories.get_webhook_delivery(session, job.delivery_id)
            endpoint = repositories.get_webhook_endpoint(session, job.endpoint_id, for_update=True)
            if delivery is None or endpoint is None:
                return  # removed meanwhile
            attempts = job.attempts + 1
            delivery.attempts = attempts
            delivery.claimed_until = None
            delivery.last_status_code = outcome.status_code
            delivery.last_response_ms = outcome.response_ms
            delivery.last_error = outcome.error
            if outcome.delivered:
                delivery.status, delivery.delivered_at = "delivered", now
                endpoint.failing_since = None
                log.debug("webhook %s delivered to %s", job.message_id, job.endpoint_id)
                return
            if attempts <= len(self._schedule):
                wait = self._schedule[attempts - 1] * self._jitter()
                delivery.next_attempt_at = now + timedelta(seconds=wait)
                then = f"retrying at {delivery.next_attempt_at.isoformat(timespec='seconds')}"
            else:
                delivery.status, then = "failed", "giving up"
            log.warning(
                "webhook %s to %s failed (attempt %d, %s): %s",
                job.message_id,
                job.endpoint_id,
                attempts,
                then,
                outcome.error,
            )
            self._note_failure(session, endpoint, now)

    def _note_failure(self, session: Session, endpoint: WebhookEndpoint, now: datetime) -> None:
        if endpoint.failing_since is None:
            endpoint.failing_since = now
            return
        if endpoint.enabled and now - endpoint.failing_since >= self._disable_after:
            since = endpoint.failing_since.isoformat(timespec="seconds")
            webhooks.disable_failing(session, endpoint, f"every delivery failed since {since}")
            log.warning("webhook endpoint %s disabled: failing since %s", endpoint.id, since)


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
