"""The operators' rows of the API's operations table (``/api/v1/admin/...``): a client's
own token with the ``admin`` scope and the API audience, or the admin console's session of
an administrator (``identity.api.authentication``). Every call is audited, reads of user
data included, with the client or administrator as the actor."""

from __future__ import annotations

from identity.api import admin as api_audit
from identity.api import admin_clients as api_clients
from identity.api import admin_keys as api_keys
from identity.api import admin_users as api_users
from identity.api import admin_webhooks as api_webhooks
from identity.api.admin_bodies import (
    AdminAuditEvents,
    AdminAuditQuery,
    AdminClient,
    AdminClients,
    AdminCreateClientRequest,
    AdminCreatedClient,
    AdminCreatedWebhook,
    AdminCreateUserRequest,
    AdminCreateWebhookRequest,
    AdminDeliveriesQuery,
    AdminKey,
    AdminKeys,
    AdminMfaReset,
    AdminRotatedSecret,
    AdminRotatedWebhookSecret,
    AdminRotateSecretRequest,
    AdminRotateWebhookSecretRequest,
    AdminUpdateClientRequest,
    AdminUpdateUserRequest,
    AdminUser,
    AdminUserDetail,
    AdminUsers,
    AdminUsersQuery,
    AdminWebhook,
    AdminWebhookDeliveries,
    AdminWebhookDetail,
    AdminWebhooks,
)
from identity.api.operations import BEARER, BODY, DOWN, PREFIX, Operation

_ADMIN = f"{PREFIX}/admin"
_USER = f"{_ADMIN}/users/{{user_id:uuid}}"
_CLIENT = f"{_ADMIN}/clients/{{client_id}}"
_WEBHOOKS = f"{_ADMIN}/webhooks"
_WEBHOOK = f"{_WEBHOOKS}/{{webhook_id}}"
_ONE = (*BEARER, 404, *DOWN)  # an operation on one user or client, without a body

ADMIN_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", f"{_ADMIN}/audit", "Audit events, oldest first (admin)",
        None, AdminAuditEvents, 200, (*BEARER, 400, *DOWN), True,
        api_audit.list_audit, query=AdminAuditQuery, admin=True,
    ),
    # -- users
    Operation(
        "GET", f"{_ADMIN}/users", "Find users by email prefix and status, a page at a time (admin)",
        None, AdminUsers, 200, (*BEARER, 400, *DOWN), True,
        api_users.list_users, query=AdminUsersQuery, admin=True,
    ),
    Operation(
        "POST", f"{_ADMIN}/users", "Create a user with a password, or invite them by mail (admin)",
        AdminCreateUserRequest, AdminUser, 201, (*BEARER, *BODY, *DOWN), True,
        api_users.create_user, admin=True,
    ),
    Operation(
        "GET", _USER, "A user: factors, providers, sessions, app sessions, roles (admin)",
        None, AdminUserDetail, 200, _ONE, True,
        api_users.get_user, admin=True,
    ),
    Operation(
        "PATCH", _USER, "Rename a user (admin)",
        AdminUpdateUserRequest, AdminUser, 200, (*BEARER, *BODY, 404, *DOWN), True,
        api_users.update_user, admin=True,
    ),
    Operation(
        "DELETE", _USER, "Delete a user and everything of theirs (admin)",
        None, None, 204, _ONE, True,
        api_users.delete_user, admin=True,
    ),
    Operation(
        "POST", f"{_USER}/disable", "Disable a user: every session and token ends (admin)",
        None, AdminUser, 200, _ONE, True,
        api_users.disable_user, admin=True,
    ),
    Operation(
        "POST", f"{_USER}/enable", "Let a disabled user sign in again (admin)",
        None, AdminUser, 200, _ONE, True,
        api_users.enable_user, admin=True,
    ),
    Operation(
        "POST", f"{_USER}/send-reset", "Mail the user a password-reset link (admin)",
        None, None, 202, (*BEARER, 404, 409, 429, *DOWN), True,
        api_users.send_reset, admin=True,
    ),
    Operation(
        "POST", f"{_USER}/end-sessions", "Sign the user out everywhere (admin)",
        None, None, 204, _ONE, True,
        api_users.end_sessions, admin=True,
    ),
    Operation(
        "POST", f"{_USER}/reset-mfa", "Remove every second factor of the user (admin)",
        None, AdminMfaReset, 200, _ONE, True,
        api_users.reset_mfa, admin=True,
    ),
    Operation(
        "PUT", f"{_USER}/roles/{{role}}", "Give the user a role; idempotent (admin)",
        None, None, 204, (*BEARER, 400, 404, *DOWN), True,
        api_users.add_role, admin=True,
    ),
    Operation(
        "DELETE", f"{_USER}/roles/{{role}}", "Take a role from the user (admin)",
        None, None, 204, (*BEARER, 400, 404, *DOWN), True,
        api_users.remove_role, admin=True,
    ),
    # -- clients
    Operation(
        "GET", f"{_ADMIN}/clients", "Every client (admin)",
        None, AdminClients, 200, (*BEARER, *DOWN), True,
        api_clients.list_clients, admin=True,
    ),
    Operation(
        "POST", f"{_ADMIN}/clients", "Register a client; its secret is shown once (admin)",
        AdminCreateClientRequest, AdminCreatedClient, 201, (*BEARER, *BODY, *DOWN), True,
        api_clients.create_client, admin=True,
    ),
    Operation(
        "GET", _CLIENT, "A client (admin)",
        None, AdminClient, 200, _ONE, True,
        api_clients.get_client, admin=True,
    ),
    Operation(
        "PATCH", _CLIENT, "Change a client's settings (admin)",
        AdminUpdateClientRequest, AdminClient, 200, (*BEARER, *BODY, 404, *DOWN), True,
        api_clients.update_client, admin=True,
    ),
    Operation(
        "DELETE", _CLIENT, "Delete a client and its tokens (admin)",
        None, None, 204, _ONE, True,
        api_clients.delete_client, admin=True,
    ),
    Operation(
        "POST", f"{_CLIENT}/rotate-secret",
        "A new client secret, shown once; the old one works for a grace period (admin)",
        AdminRotateSecretRequest, AdminRotatedSecret, 200, (*BEARER, *BODY, 404, 409, *DOWN),
        True, api_clients.rotate_secret, admin=True,
    ),
    # -- signing keys
    Operation(
        "GET", f"{_ADMIN}/keys", "The signing keys: kid, state and times (admin)",
        None, AdminKeys, 200, (*BEARER, *DOWN), True,
        api_keys.list_keys, admin=True,
    ),
    Operation(
        "POST", f"{_ADMIN}/keys/rotate", "The published next key starts signing (admin)",
        None, AdminKey, 200, (*BEARER, 409, *DOWN), True,
        api_keys.rotate_keys, admin=True,
    ),
    # -- webhooks
    Operation(
        "GET", _WEBHOOKS, "Every webhook endpoint, without its secret (admin)",
        None, AdminWebhooks, 200, (*BEARER, *DOWN), True,
        api_webhooks.list_webhooks, admin=True,
    ),
    Operation(
        "POST", _WEBHOOKS, "Register a webhook endpoint; its signing secret is shown once (admin)",
        AdminCreateWebhookRequest, AdminCreatedWebhook, 201, (*BEARER, *BODY, *DOWN), True,
        api_webhooks.create_webhook, admin=True,
    ),
    Operation(
        "GET", _WEBHOOK, "A webhook endpoint and its newest deliveries (admin)",
        None, AdminWebhookDetail, 200, _ONE, True,
        api_webhooks.get_webhook, admin=True,
    ),
    Operation(
        "DELETE", _WEBHOOK, "Remove a webhook endpoint and its delivery log (admin)",
        None, None, 204, _ONE, True,
        api_webhooks.delete_webhook, admin=True,
    ),
    Operation(
        "POST", f"{_WEBHOOK}/enable", "Send to the endpoint again, what waited first (admin)",
        None, AdminWebhook, 200, _ONE, True,
        api_webhooks.enable_webhook, admin=True,
    ),
    Operation(
        "POST", f"{_WEBHOOK}/disable", "Stop sending to the endpoint (admin)",
        None, AdminWebhook, 200, _ONE, True,
        api_webhooks.disable_webhook, admin=True,
    ),
    Operation(
        "POST", f"{_WEBHOOK}/rotate-secret",
        "A new signing secret, shown once; the old one signs too for an overlap (admin)",
        AdminRotateWebhookSecretRequest, AdminRotatedWebhookSecret, 200,
        (*BEARER, *BODY, 404, *DOWN), True, api_webhooks.rotate_secret, admin=True,
    ),
    Operation(
        "GET", f"{_WEBHOOK}/deliveries", "The endpoint's newest deliveries, newest first (admin)",
        None, AdminWebhookDeliveries, 200, (*BEARER, 400, 404, *DOWN), True,
        api_webhooks.list_deliveries, query=AdminDeliveriesQuery, admin=True,
    ),
    Operation(
        "POST", f"{_WEBHOOKS}/deliveries/{{delivery_id}}/redeliver",
        "Send a delivery's event again, now, with the same webhook-id (admin)",
        None, None, 202, (*BEARER, 404, 409, *DOWN), True,
        api_webhooks.redeliver, admin=True,
    ),
)  # fmt: skip
