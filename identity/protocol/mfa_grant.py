"""The second step of the password grant for an account with a second factor: the grant
``urn:identity:grant-type:mfa``, modelled on Auth0's ``mfa-otp`` grant.

1. The app sends the password grant. The password is right, but the account has a second
   factor, so the answer is 400::

       {"error": "invalid_grant",
        "error_description": "mfa_required: the account has a second factor; ...",
        "mfa_token": "<256-bit random value>"}

2. The app asks the person for a code of their authenticator app (or a recovery code) and
   sends, with the same client authentication as in step 1::

       grant_type=urn:identity:grant-type:mfa&mfa_token=...&otp=123456
       grant_type=urn:identity:grant-type:mfa&mfa_token=...&recovery_code=abcde-fghij

   and gets what the password grant would have given (an access token, a refresh token
   when policy allows, an ID token when ``openid`` was granted), signed in with
   ``amr ["pwd","otp","mfa"]`` and ``acr urn:identity:loa:2``.

The mfa_token is kept only as its SHA-256, belongs to the client that got it (another
client's is answered like an unknown one), carries the scope and audience granted in step
1, works once, and lives five minutes. A wrong code is ``invalid_grant`` and leaves the
mfa_token usable until it expires; wrong codes count in the account's ``mfa.account``
limiter (``accounts.factor_events``), which answers 429 with ``Retry-After`` when it is full.
The grant is served only beside the password grant, for the clients that may use that.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, grants

from identity import repositories
from identity.accounts import factors, recovery_codes
from identity.accounts.credential_events import MFA_PENDING as MFA_TOKEN_PURPOSE
from identity.accounts.errors import InvalidCode, Throttled
from identity.accounts.passwords import fingerprint
from identity.models import Client, OneTimeToken, User, secret_digest
from identity.protocol.grants import IssuingGrant
from identity.protocol.password import (
    LoginThrottledError,
    PasswordGrant,
    check_password_client,
)
from identity.protocol.server import current_session
from identity.protocol.tokens import Authentication

GRANT_TYPE = "urn:identity:grant-type:mfa"
INVALID_MFA_TOKEN = "The mfa_token is invalid, expired or already used."  # noqa: S105 (a message)
WRONG_CODE = "The code is wrong or was already used."


class MfaGrant(IssuingGrant, grants.BaseGrant, grants.TokenEndpointMixin):  # type: ignore[misc]
    """``grant_type=urn:identity:grant-type:mfa``: an mfa_token and a code of the account's
    second factor for the tokens the password grant held back."""

    GRANT_TYPE = GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = PasswordGrant.TOKEN_ENDPOINT_AUTH_METHODS
    ISSUES_ID_TOKEN = True

    _row: OneTimeToken
    _auth_time: datetime

    def validate_token_request(self) -> None:
        client: Client = self.authenticate_token_endpoint_client()
        self.request.client = client
        check_password_client(self.server, client)
        form = self.request.form
        raw, otp, recovery_code = (
            form.get("mfa_token"),
            form.get("otp"),
            form.get("recovery_code"),
        )
        if not raw:
            raise InvalidRequestError("Missing 'mfa_token' in request.")
        if bool(otp) == bool(recovery_code):
            raise InvalidRequestError("Send exactly one of 'otp' and 'recovery_code'.")
        session, now = current_session(), self.server.accounts.now()
        digest = secret_digest(raw)
        row = repositories.get_one_time_token(session, digest, MFA_TOKEN_PURPOSE)
        if row is None or not _live_for(row, client, now):
            raise InvalidGrantError(INVALID_MFA_TOKEN)
        user = repositories.get_user(session, row.user_id)
        if user is None or not _may_sign_in(user, row):
            raise InvalidGrantError(INVALID_MFA_TOKEN)
        self._row = row
        self.audience()  # invalid_target before a code is spent
        # The code first, the mfa_token after: a wrong code leaves the token usable, and
        # on SQLite the refusal's own audit transaction needs this one to hold no write.
        self._check_code(user, otp, recovery_code)
        if not repositories.use_one_time_token(session, digest, now):
            raise InvalidGrantError(INVALID_MFA_TOKEN)  # a concurrent request spent it first
        self.request.user = user
        self._auth_time = now

    def _check_code(self, user: User, otp: str | None, recovery_code: str | None) -> None:
        accounts, session, context = self.server.accounts, current_session(), self.request.context
        try:
            if otp:
                factors.check_totp(accounts, session, user, otp, context)
            else:
                assert recovery_code is not None
                recovery_codes.use_recovery_code(accounts, session, user, recovery_code, context)
        except InvalidCode:
            raise InvalidGrantError(WRONG_CODE) from None
        except Throttled as throttled:
            raise LoginThrottledError(throttled.retry_after) from None

    def granted_audience(self) -> list[str]:
        # What the password step granted (its resource), fixed in the mfa_token.
        return list(self._row.data["audience"])

    def authentication(self) -> Authentication:
        return Authentication(
            auth_time=self._auth_time,
            amr=tuple(factors.with_factor(["pwd"], "otp")),
            session_id=None,
        )

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(user=self.request.user, scope=self._row.data["scope"])
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _live_for(row: OneTimeToken, client: Client, now: datetime) -> bool:
    """The mfa_token is unspent, unexpired and was given to this client."""
    return (
        row.used_at is None
        and row.expires_at > now
        and row.data.get("client_id") == client.client_id
    )


def _may_sign_in(user: User, row: OneTimeToken) -> bool:
    """The account may still sign in with the password the mfa_token stands for."""
    return (
        user.is_active
        and user.email_verified
        and user.password_hash is not None
        and row.data.get("password_fingerprint") == fingerprint(user.password_hash)
    )
