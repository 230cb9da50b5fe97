"""The request and response bodies of the JSON account API.

Requests refuse unknown fields (no mass assignment of ``email_verified``, ``id``...), take
strings only where strings are meant (strict: no numbers, lists or nulls in their place) and
cap every length. The rules themselves (email syntax, password policy, name) stay in the
services, so the caps sit at or above the services' own limits and their messages show.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Email = Annotated[str, Field(max_length=320)]
Password = Annotated[str, Field(max_length=1024, json_schema_extra={"format": "password"})]
Name = Annotated[str, Field(max_length=256)]
Code = Annotated[str, Field(max_length=32)]
Token = Annotated[str, Field(max_length=512)]


class RequestBody(BaseModel):
    """A JSON object with exactly the declared fields; optional ones may be left out, never
    sent as ``null``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # Read by the OpenAPI document: optional fields are left out, never sent as null.
    refuses_null: ClassVar[bool] = True

    @field_validator("*", mode="before")
    @classmethod
    def _no_nulls(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("Must not be null; leave the field out instead.")
        return value


class RegisterRequest(RequestBody):
    email: Email
    password: Password
    name: Name


class VerifyEmailRequest(RequestBody):
    """Either the 6-digit ``code`` with the ``email`` it was sent to, or the ``token`` of the
    emailed link."""

    email: Email | None = None
    code: Code | None = None
    token: Token | None = None


class EmailRequest(RequestBody):
    email: Email


class ResetPasswordRequest(RequestBody):
    token: Token
    password: Password


class UpdateMeRequest(RequestBody):
    """``name`` changes at once; ``email`` (with the current ``password``) starts a change
    that the new address must confirm."""

    name: Name | None = None
    email: Email | None = None
    password: Password | None = None


class ChangePasswordRequest(RequestBody):
    current_password: Password
    new_password: Password


class LogoutRequest(RequestBody):
    """The refresh token to end with the access token (optional)."""

    refresh_token: Token | None = None


class ConfirmTotpRequest(RequestBody):
    """The app's current 6-digit code, which turns it on; the password too unless the access
    token's sign-in (``auth_time``) is recent."""

    code: Code
    password: Password | None = None


class RenamePasskeyRequest(RequestBody):
    """The passkey's new name: one line, up to 100 characters."""

    name: Name


class ReauthenticateRequest(RequestBody):
    """The password, needed unless the access token's sign-in (``auth_time``) is recent."""

    password: Password | None = None


class EventsQuery(BaseModel):
    """Query parameters of ``GET /api/v1/me/events`` (strings in the URL, so not strict)."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=100)
    after: int | None = Field(None, ge=0, le=2**63 - 1, description="The last id already seen.")


# A query value that reaches a SQL parameter: no control characters (PostgreSQL refuses NUL).
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


def query_text(max_length: int, description: str) -> Any:
    return Field(
        None, min_length=1, max_length=max_length, pattern=_PRINTABLE, description=description
    )


class AccountStatus(BaseModel):
    # verified_without_password: the code proved the mailbox only (anyone could have asked
    # for it); the person chooses a password through /password/forgot.
    status: Literal["check_email", "verified", "verified_without_password", "password_reset"]


class Me(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    created_at: datetime


class TotpStatus(BaseModel):
    enabled: bool
    added_at: datetime | None
    last_used_at: datetime | None


class RecoveryCodesStatus(BaseModel):
    remaining: int


class Passkey(BaseModel):
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


class SecondFactors(BaseModel):
    """The account's second factors (passkeys are registered in the browser, on /account)."""

    totp: TotpStatus
    recovery_codes: RecoveryCodesStatus
    passkeys: list[Passkey]


class TotpSetup(BaseModel):
    """The seed for an authenticator app, and the ``otpauth://`` URI (for a QR code) that
    holds it; the app is on once a code of it is confirmed."""

    secret: str
    otpauth_uri: str


class RecoveryCodes(BaseModel):
    """Shown once: each code signs in once in place of the second factor."""

    recovery_codes: list[str]


class AccountSession(BaseModel):
    """A browser session (``type: browser``) or an app's refresh-token family (``app``)."""

    id: str
    type: Literal["browser", "app"]
    created_at: datetime
    last_seen_at: datetime | None = None
    ip: str | None = None
    user_agent: str | None = None
    device: str | None = None
    current: bool = False
    client_id: str | None = None
    client_name: str | None = None
    scope: str | None = None


class AccountSessions(BaseModel):
    sessions: list[AccountSession]


class AccountConsent(BaseModel):
    client_id: str
    client_name: str
    scope: str
    granted_at: datetime


class AccountConsents(BaseModel):
    consents: list[AccountConsent]


class AccountEvent(BaseModel):
    id: int
    type: str
    outcome: str
    occurred_at: datetime
    client_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any]


class AccountEvents(BaseModel):
    """Oldest first; pass ``next_after`` as ``after`` for the next page (null: no more)."""

    events: list[AccountEvent]
    next_after: int | None
