"""The resource owner password grant (RFC 6749 §4.3), for first-party apps only.

OAuth 2.1 drops this grant; identity keeps it behind ``IDENTITY_PASSWORD_GRANT`` for a
first-party app that has not yet moved to the authorization code flow. Every login rule
(limiters, dummy verify, unverified accounts, audit) stays in ``Accounts.authenticate``.

A password alone is not enough for an account with a second factor: the answer is
``invalid_grant`` with ``mfa_required`` and an ``mfa_token``, which the app trades for tokens
with a code at the mfa grant (``protocol.mfa_grant``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
    grants,
)

from identity import audit, repositories
from identity.accounts import factors
from identity.accounts.credential_events import MFA_PENDING as MFA_TOKEN_PURPOSE
from identity.accounts.errors import EmailNotVerified, InvalidCredentials, Throttled
from identity.accounts.passwords import fingerprint
from identity.models import Client, OneTimeToken, User, secret_digest
from identity.protocol.grants import IssuingGrant, granted_scope
from identity.protocol.server import current_session
from identity.protocol.tokens import Authentication

WRONG_CREDENTIALS = "The email or password is wrong."
EMAIL_NOT_VERIFIED = "email_not_verified: verify the email address first with the mailed code."
MFA_REQUIRED = (
    "mfa_required: the account has a second factor; send a code of it with the mfa_token "
    "to grant_type urn:identity:grant-type:mfa."
)
MFA_SETUP_REQUIRED = (
    "mfa_required: this app requires a second factor, and the account has none; "
    "set one up on the account page first."
)
MFA_TOKEN_LIFETIME = timedelta(minutes=5)


class MfaRequiredError(InvalidGrantError):  # type: ignore[misc]
    """400 ``invalid_grant`` whose description starts ``mfa_required``; with an ``mfa_token``
    member when the account has a second factor to go on with (Auth0's shape)."""

    def __init__(self, description: str, mfa_token: str | None = None) -> None:
        super().__init__(description)
        self.mfa_token = mfa_token

    def get_body(self) -> list[tuple[str, Any]]:
        body: list[tuple[str, Any]] = super().get_body()
        if self.mfa_token is not None:
            body.append(("mfa_token", self.mfa_token))
        return body


class LoginThrottledError(OAuth2Error):  # type: ignore[misc]
    """429 with ``Retry-After``: the account (or IP) is over its login limit. Same shape as
    the token endpoint's own per-client limit."""

    error = "slow_down"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many login attempts; retry later.")
        self.retry_after = max(1, retry_after)

    def get_headers(self) -> list[tuple[str, str]]:
        return [*default_json_headers, ("Retry-After", str(self.retry_after))]


def check_password_client(server: Any, client: Client) -> None:
    """``unauthorized_client`` unless the server-wide switch is on and the client is
    first-party with the password grant registered (the mfa grant continues that grant)."""
    settings = getattr(server, "settings", None)
    if not (settings is not None and settings.password_grant):
        # Registered only when the switch is on; checked again so a stray registration
        # cannot open the grant.
        raise UnauthorizedClientError("The password grant is disabled on this server.")
    if not client.is_first_party or not client.check_grant_type("password"):
        raise UnauthorizedClientError("The client is not allowed to use the password grant.")


class PasswordGrant(IssuingGrant, grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
    """``grant_type=password`` for a first-party client that registered it, while the
    server-wide switch is on."""

    # A first-party mobile app is a public client.
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    ISSUES_ID_TOKEN = True  # a sign-in like any other: an ID token when openid is granted

    _auth_time: datetime

    def validate_token_request(self) -> None:
        # Authlib's version checks the password before the scope and sets request.client
        # late; here every cheap check runs first, so a malformed request never counts as
        # a login attempt.
        client: Client = self.authenticate_token_endpoint_client()
        self.request.client = client
        check_password_client(self.server, client)
        params = self.request.form
        username, password = params.get("username"), params.get("password")
        # RFC 6749 §3.1: a parameter sent without a value counts as omitted.
        if not username:
            raise InvalidRequestError("Missing 'username' in request.")
        if not password:
            raise InvalidRequestError("Missing 'password' in request.")
        self.request.granted_scope = granted_scope(client, self.request.payload.scope)
        self.audience()  # invalid_target now, before a login is counted and audited
        user = self.authenticate_user(username, password)
        self._check_second_factor(client, user)
        self.request.user = user

    def authenticate_user(self, username: str, password: str) -> User:
        """The user, through ``Accounts.authenticate``; its refusals as OAuth errors."""
        accounts = self.server.accounts
        try:
            user: User = accounts.authenticate(
                current_session(), username, password, self.request.context
            )
        except InvalidCredentials:
            raise InvalidGrantError(WRONG_CREDENTIALS) from None
        except EmailNotVerified:
            raise InvalidGrantError(EMAIL_NOT_VERIFIED) from None
        except Throttled as throttled:
            raise LoginThrottledError(throttled.retry_after) from None
        self._auth_time = accounts.now()
        return user

    def _check_second_factor(self, client: Client, user: User) -> None:
        """Refuse the password alone (``mfa_required``) when the account has a second factor,
        handing out an mfa_token to go on with, or when the client wants one it lacks."""
        session = current_session()
        if factors.has_second_factor(session, user):
            raise MfaRequiredError(MFA_REQUIRED, self._new_mfa_token(client, user))
        if client.require_mfa:
            audit.record(
                session,
                "mfa.setup_required",
                context=self.request.context,
                outcome="failure",
                subject=str(user.id),
                client_id=client.client_id,
            )
            raise MfaRequiredError(MFA_SETUP_REQUIRED)

    def _new_mfa_token(self, client: Client, user: User) -> str:
        """A single-use token (256 bits, kept as its SHA-256) that stands for this password
        step, for this client, for five minutes.

        Written in the request's own transaction: Authlib renders an OAuth error as a
        response and the unit of work commits when the call returns (the device grant's
        polls rely on the same), so the row outlives the refusal, and nothing of a grant
        has been written before it. A transaction of its own would wait on SQLite for the
        write lock that the password step's audit row already holds."""
        raw = secrets.token_urlsafe(32)
        now = self.server.accounts.now()
        assert user.password_hash is not None  # the password was just checked
        repositories.add_one_time_token(
            current_session(),
            OneTimeToken(
                digest=secret_digest(raw),
                user_id=user.id,
                purpose=MFA_TOKEN_PURPOSE,
                data={
                    "client_id": client.client_id,
                    "scope": self.request.granted_scope,
                    "audience": self.granted_audience(),
                    # A password reset in the meantime voids what the old password proved.
                    "password_fingerprint": fingerprint(user.password_hash),
                },
                created_at=now,
                expires_at=now + MFA_TOKEN_LIFETIME,
            ),
        )
        audit.record(
            current_session(),
            "mfa.challenged",
            context=self.request.context,
            subject=str(user.id),
            client_id=client.client_id,
            detail={"grant_type": "password"},
        )
        return raw

    def authentication(self) -> Authentication:
        return Authentication(auth_time=self._auth_time, amr=("pwd",), session_id=None)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(user=self.request.user, scope=self.request.granted_scope)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
