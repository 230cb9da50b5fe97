"""The resource owner password grant (RFC 6749 §4.3), for first-party apps only.

OAuth 2.1 drops this grant; identity keeps it behind ``IDENTITY_PASSWORD_GRANT`` for a
first-party app that has not yet moved to the authorization code flow. Every login rule
(limiters, dummy verify, unverified accounts, audit) stays in ``Accounts.authenticate``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
    grants,
)

from identity.accounts.errors import EmailNotVerified, InvalidCredentials, Throttled
from identity.models import Client, User
from identity.protocol.grants import IssuingGrant, granted_scope
from identity.protocol.server import current_session
from identity.protocol.tokens import Authentication

WRONG_CREDENTIALS = "The email or password is wrong."
EMAIL_NOT_VERIFIED = "email_not_verified: verify the email address first with the mailed code."


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


class PasswordGrant(IssuingGrant, grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
    """``grant_type=password`` for a first-party client that registered it, while the
    server-wide switch is on."""

    # A first-party mobile app is a public client.
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    _auth_time: datetime

    def validate_token_request(self) -> None:
        # Authlib's version checks the password before the scope and sets request.client
        # late; here every cheap check runs first, so a malformed request never counts as
        # a login attempt.
        client: Client = self.authenticate_token_endpoint_client()
        self.request.client = client
        settings = getattr(self.server, "settings", None)
        if not (settings is not None and settings.password_grant):
            # Registered only when the switch is on; checked again so a stray registration
            # cannot open the grant.
            raise UnauthorizedClientError("The password grant is disabled on this server.")
        if not client.is_first_party or not client.check_grant_type("password"):
            raise UnauthorizedClientError("The client is not allowed to use the password grant.")
        params = self.request.form
        username, password = params.get("username"), params.get("password")
        # RFC 6749 §3.1: a parameter sent without a value counts as omitted.
        if not username:
            raise InvalidRequestError("Missing 'username' in request.")
        if not password:
            raise InvalidRequestError("Missing 'password' in request.")
        self.request.granted_scope = granted_scope(client, self.request.payload.scope)
        self.audience()  # invalid_target now, before a login is counted and audited
        self.request.user = self.authenticate_user(username, password)

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

    def authentication(self) -> Authentication:
        return Authentication(auth_time=self._auth_time, amr=("pwd",), session_id=None)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(user=self.request.user, scope=self.request.granted_scope)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
