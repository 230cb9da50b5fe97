"""The request and response bodies of the operators' API (``/api/v1/admin/...``).

Requests follow ``bodies.RequestBody`` (exact fields, strict types, capped lengths, no
nulls); the rules themselves (names, passwords, redirect URIs, roles) stay in the services,
whose messages the field errors carry. No response holds a secret, except the client or
webhook secret of a creation or a rotation, which is shown that once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from identity.api.bodies import Email, Name, Password, RequestBody, query_text

Uri = Annotated[str, Field(min_length=1, max_length=2000)]
Word = Annotated[str, Field(min_length=1, max_length=100)]
Uris = Annotated[list[Uri], Field(max_length=50)]
Words = Annotated[list[Word], Field(max_length=50)]
Scope = Annotated[str, Field(max_length=2000, description="Space-separated scopes.")]
ClientName = Annotated[str, Field(max_length=200)]
# Thirty days: as long as an old client secret may live on (protocol.clients.MAX_SECRET_GRACE).
MAX_GRACE_SECONDS = 30 * 24 * 3600


# -- the audit trail ----------------------------------------------------------------------------


class AdminAuditQuery(BaseModel):
    """Query parameters of ``GET /api/v1/admin/audit``; every filter narrows the result."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = query_text(320, "A user id, or an email address (looked up).")
    client_id: str | None = query_text(64, "Events of this client.")
    type: str | None = query_text(64, "Events whose type starts with this (login., token.).")
    since: str | None = query_text(
        64, "An ISO 8601 timestamp (UTC without an offset) or a duration back (15m, 2h, 7d)."
    )
    after: int | None = Field(None, ge=0, le=2**63 - 1, description="The last id already seen.")
    limit: int = Field(100, ge=1, le=500)


class AdminAuditEvent(BaseModel):
    """One audit event, as ``identity audit list --json`` shows it."""

    id: int
    occurred_at: datetime
    type: str
    outcome: str
    actor: str | None
    subject: str | None
    client_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any]


class AdminAuditEvents(BaseModel):
    """Oldest first; pass ``next_after`` as ``after`` for the next page (null: no more)."""

    events: list[AdminAuditEvent]
    next_after: int | None


# -- users --------------------------------------------------------------------------------------


class AdminUsersQuery(BaseModel):
    """Query parameters of ``GET /api/v1/admin/users``; every filter narrows the result."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = query_text(
        320, "Users whose email starts with this, matched literally (% and _ too)."
    )
    status: Literal["active", "disabled", "unverified"] | None = Field(
        None,
        description=(
            "active: enabled with a verified address; unverified: enabled, address not yet "
            "proven (pending invitations too); disabled."
        ),
    )
    cursor: str | None = query_text(512, "The next_cursor of the previous page.")
    limit: int = Field(50, ge=1, le=200)


class AdminUser(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    is_active: bool
    created_at: datetime


class AdminUsers(BaseModel):
    """Ordered by email; pass ``next_cursor`` as ``cursor`` for the next page (null: no
    more)."""

    users: list[AdminUser]
    next_cursor: str | None


class AdminPasskeys(BaseModel):
    count: int
    names: list[str]


class AdminFactors(BaseModel):
    totp: bool
    passkeys: AdminPasskeys
    recovery_codes_left: int


class AdminProviderLink(BaseModel):
    provider: str
    email: str
    last_used_at: datetime | None


class AdminBrowserSession(BaseModel):
    id: str
    created_at: datetime
    last_seen_at: datetime
    ip: str | None
    user_agent: str | None


class AdminAppSession(BaseModel):
    """An app signed in as the user: a live refresh-token family."""

    id: str
    client_id: str
    client_name: str
    scope: str
    created_at: datetime
    last_used_at: datetime


class AdminUserDetail(AdminUser):
    """The account, its second factors (no secret of them), linked providers, browser
    sessions, app sessions and roles."""

    factors: AdminFactors
    providers: list[AdminProviderLink]
    sessions: list[AdminBrowserSession]
    app_sessions: list[AdminAppSession]
    roles: list[str]


class AdminCreateUserRequest(RequestBody):
    """A ready account with ``password`` (its address counts as verified), or with
    ``invite`` an account without one: an invitation mail's link (72 hours) lets the person
    choose it, which verifies the address."""

    email: Email
    name: Name
    password: Password | None = None
    invite: bool = False


class AdminUpdateUserRequest(RequestBody):
    name: Name


class AdminMfaReset(BaseModel):
    """False when the account had no second factor or recovery code: nothing changed."""

    reset: bool


# -- clients ------------------------------------------------------------------------------------


class AdminClient(BaseModel):
    """A client's registration; never its secret."""

    client_id: str
    name: str
    public: bool
    first_party: bool
    redirect_uris: list[str]
    grant_types: list[str]
    scope: str
    audience: list[str]
    post_logout_redirect_uris: list[str]
    refresh_without_offline_access: bool
    require_mfa: bool
    role_prefixes: list[str]
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        None, description="Until when the secret replaced by a rotation still works."
    )


class AdminClients(BaseModel):
    clients: list[AdminClient]


class AdminCreatedClient(AdminClient):
    """The new client; ``client_secret`` is shown this once (null for a public client)."""

    client_secret: str | None


class AdminCreateClientRequest(RequestBody):
    """Without ``grant_types``: the code flow (and refresh) with redirect URIs, else
    client_credentials."""

    name: ClientName
    redirect_uris: Uris = []
    grant_types: Words = []
    scope: Scope = ""
    audience: Uris = []
    public: bool = False
    first_party: bool = False
    post_logout_redirect_uris: Uris = []
    refresh_without_offline_access: bool = False
    require_mfa: bool = False
    role_prefixes: Words = []


class AdminUpdateClientRequest(RequestBody):
    """The settings to change (a list replaces the registered one); the client as it
    would be must meet every rule of registration."""

    name: ClientName | None = None
    redirect_uris: Uris | None = None
    grant_types: Words | None = None
    scope: Scope | None = None
    audience: Uris | None = None
    first_party: bool | None = None
    require_mfa: bool | None = None
    role_prefixes: Words | None = None
    post_logout_redirect_uris: Uris | None = None


class AdminRotateSecretRequest(RequestBody):
    grace_seconds: int = Field(
        86400,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old secret keeps working (0: it stops now). Default a day.",
    )


class AdminRotatedSecret(BaseModel):
    """The new secret, shown this once."""

    client_id: str
    client_secret: str
    previous_secret_expires_at: datetime | None


# -- signing keys -------------------------------------------------------------------------------


class AdminKey(BaseModel):
    """A signing key's state and times (``next``: published, not signing yet; ``active``:
    signing; ``retired``: published until ``publish_until``). No key material."""

    kid: str
    state: Literal["next", "active", "retired"]
    created_at: datetime
    retired_at: datetime | None
    publish_until: datetime | None


class AdminKeys(BaseModel):
    keys: list[AdminKey]


# -- webhooks -----------------------------------------------------------------------------------

# Thirty days: the longest overlap webhooks.rotate_secret allows.
MAX_OVERLAP_SECONDS = 30 * 24 * 3600
EventPattern = Annotated[str, Field(min_length=1, max_length=100)]


class AdminWebhook(BaseModel):
    """A webhook endpoint; never its signing secret."""

    id: str
    url: str
    events: list[str] = Field(description="Event types, families (user.*) or * for all.")
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    failing_since: datetime | None = Field(description="Since when every attempt has failed.")
    previous_secret_until: datetime | None = Field(
        description="Until when the secret replaced by a rotation signs too."
    )


class AdminWebhooks(BaseModel):
    webhooks: list[AdminWebhook]


class AdminWebhookDelivery(BaseModel):
    """One delivery of an event to the endpoint and how its attempts went."""

    id: int
    event_type: str
    message_id: str = Field(description="The webhook-id header: the same on a redelivery.")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_response_ms: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class AdminWebhookDeliveries(BaseModel):
    """Newest first."""

    deliveries: list[AdminWebhookDelivery]


class AdminWebhookDetail(AdminWebhook):
    """The endpoint and its 20 newest deliveries, newest first."""

    deliveries: list[AdminWebhookDelivery]


class AdminDeliveriesQuery(BaseModel):
    """Query parameters of ``GET /api/v1/admin/webhooks/{webhook_id}/deliveries``."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(20, ge=1, le=200)


class AdminCreateWebhookRequest(RequestBody):
    """``url``: https on a public address (http and private addresses too where
    IDENTITY_WEBHOOKS_ALLOW_PRIVATE=1); ``events``: event types, families or ``*``."""

    url: Uri
    events: Annotated[list[EventPattern], Field(min_length=1, max_length=50)]


class AdminCreatedWebhook(AdminWebhook):
    """The new endpoint; ``secret`` (``whsec_...``) is shown this once."""

    secret: str


class AdminRotateWebhookSecretRequest(RequestBody):
    overlap_seconds: int = Field(
        86400,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="How long the old secret signs too (0: it stops now). Default a day.",
    )


class AdminRotatedWebhookSecret(BaseModel):
    """The new secret, shown this once."""

    id: str
    secret: str
    previous_secret_until: datetime | None
