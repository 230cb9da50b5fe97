"""JSON API handlers for operators' work on webhook endpoints (``/api/v1/admin/webhooks...``):
thin calls into ``identity.webhooks``, the functions the CLI and the console call, with the
admin client or administrator as the actor. A signing secret is in an answer once: the
creation's or the rotation's. Reads are audited like the other admin reads."""

from __future__ import annotations

import re
from datetime import timedelta

from identity import webhooks
from identity.admin_models import WebhookEndpoint
from identity.api.admin_bodies import (
    AdminCreatedWebhook,
    AdminCreateWebhookRequest,
    AdminDeliveriesQuery,
    AdminRotatedWebhookSecret,
    AdminRotateWebhookSecretRequest,
    AdminWebhook,
    AdminWebhookDeliveries,
    AdminWebhookDelivery,
    AdminWebhookDetail,
    AdminWebhooks,
)
from identity.api.calls import ApiCall, Result
from identity.api.problems import Problem, conflict, invalid_input, not_found
from identity.webhooks import WebhookError

# Endpoint ids are "wh_" and hex; anything else (a NUL byte PostgreSQL would refuse, a
# megabyte of text) is a 404 before any query. Delivery ids are positive 64-bit integers:
# 18 digits stay below 2**63.
_ENDPOINT_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_DELIVERY_ID = re.compile(r"[0-9]{1,18}")
_NO_ENDPOINT = "There is no webhook endpoint with this id."
_NO_DELIVERY = "There is no webhook delivery with this id."
_DETAIL_DELIVERIES = 20


def _sentence(error: WebhookError) -> str:
    message = str(error)
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def _endpoint_id(call: ApiCall) -> str:
    endpoint_id = call.path["webhook_id"]
    if not _ENDPOINT_ID.fullmatch(endpoint_id):
        raise not_found(_NO_ENDPOINT)
    return endpoint_id


def _endpoint(call: ApiCall) -> WebhookEndpoint:
    try:
        return webhooks.get_endpoint(call.db, _endpoint_id(call))
    except LookupError:
        raise not_found(_NO_ENDPOINT) from None


def _shown(endpoint: WebhookEndpoint) -> AdminWebhook:
    return AdminWebhook.model_validate(webhooks.describe_endpoint(endpoint))


def _deliveries(call: ApiCall, endpoint_id: str, limit: int) -> list[AdminWebhookDelivery]:
    try:
        rows = webhooks.recent_deliveries(call.db, endpoint_id, limit=limit)
    except LookupError:
        raise not_found(_NO_ENDPOINT) from None
    return [AdminWebhookDelivery.model_validate(row) for row in rows]


def list_webhooks(call: ApiCall) -> Result:
    endpoints = webhooks.list_endpoints(call.db)
    call.record("admin.webhooks_listed", detail={"count": len(endpoints)})
    return AdminWebhooks(webhooks=[_shown(endpoint) for endpoint in endpoints])


def get_webhook(call: ApiCall) -> Result:
    """The endpoint and its newest deliveries."""
    endpoint = _endpoint(call)
    deliveries = _deliveries(call, endpoint.id, _DETAIL_DELIVERIES)
    call.record("admin.webhook_viewed", subject=endpoint.id)
    described = webhooks.describe_endpoint(endpoint)
    return AdminWebhookDetail.model_validate({**described, "deliveries": deliveries})


def create_webhook(call: ApiCall) -> Result:
    """Register an endpoint; its secret is in this answer and never again. The events are
    checked first, so a refusal of ``add_endpoint`` after them is about the URL."""
    body = call.body_as(AdminCreateWebhookRequest)
    try:
        events = webhooks.checked_events(body.events)
    except WebhookError as error:
        raise invalid_input({"events": _sentence(error)}) from None
    try:
        added = webhooks.add_endpoint(
            call.db,
            call.accounts.secret_box,
            url=body.url,
            events=events,
            allow_private=call.accounts.settings.webhooks_allow_private,
            actor=call.operator,
            context=call.context,
        )
    except WebhookError as error:
        raise invalid_input({"url": _sentence(error)}) from None
    described = webhooks.describe_endpoint(added.endpoint)
    return AdminCreatedWebhook.model_validate({**described, "secret": added.secret})


def delete_webhook(call: ApiCall) -> Result:
    try:
        webhooks.remove_endpoint(
            call.db, _endpoint_id(call), actor=call.operator, context=call.context
        )
    except LookupError:
        raise not_found(_NO_ENDPOINT) from None
    return None


def _set_enabled(call: ApiCall, enabled: bool) -> Result:
    try:
        endpoint = webhooks.set_enabled(
            call.db, _endpoint_id(call), enabled, actor=call.operator, context=call.context
        )
    except LookupError:
        raise not_found(_NO_ENDPOINT) from None
    return _shown(endpoint)


def enable_webhook(call: ApiCall) -> Result:
    """Send to the endpoint again; the deliveries that waited go first."""
    return _set_enabled(call, True)


def disable_webhook(call: ApiCall) -> Result:
    """Stop sending to the endpoint; its deliveries wait until it is enabled."""
    return _set_enabled(call, False)


def rotate_secret(call: ApiCall) -> Result:
    """A new secret, shown once; the old one signs too for ``overlap_seconds``."""
    overlap = timedelta(seconds=call.body_as(AdminRotateWebhookSecretRequest).overlap_seconds)
    endpoint_id = _endpoint_id(call)
    try:
        secret = webhooks.rotate_secret(
            call.db,
            call.accounts.secret_box,
            endpoint_id,
            overlap=overlap,
            actor=call.operator,
            context=call.context,
        )
    except LookupError:
        raise not_found(_NO_ENDPOINT) from None
    except WebhookError as error:
        raise invalid_input({"overlap_seconds": _sentence(error)}) from None
    described = webhooks.describe_endpoint(webhooks.get_endpoint(call.db, endpoint_id))
    return AdminRotatedWebhookSecret.model_validate(
        {
            "id": endpoint_id,
            "secret": secret,
            "previous_secret_until": described["previous_secret_until"],
        }
    )


def list_deliveries(call: ApiCall) -> Result:
    limit = call.query_as(AdminDeliveriesQuery).limit
    endpoint_id = _endpoint_id(call)
    deliveries = _deliveries(call, endpoint_id, limit)
    call.record("admin.webhook_deliveries_listed", subject=endpoint_id)
    return AdminWebhookDeliveries(deliveries=deliveries)


def redeliver(call: ApiCall) -> Result:
    """Send a delivery's event again, now, as a new delivery the running server(s) make;
    409 while its endpoint is disabled."""
    text = call.path["delivery_id"]
    if not _DELIVERY_ID.fullmatch(text):
        raise not_found(_NO_DELIVERY)
    try:
        webhooks.redeliver(call.db, int(text), actor=call.operator, context=call.context)
    except LookupError:
        raise not_found(_NO_DELIVERY) from None
    except WebhookError as error:
        raise _disabled(error) from None
    return None


def _disabled(error: WebhookError) -> Problem:
    return conflict(_sentence(error), "webhook-disabled", "Webhook endpoint disabled")
