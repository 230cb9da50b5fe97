"""RFC 8628 device authorization: the endpoint that starts it and the grant a device polls."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from authlib.oauth2 import rfc8628
from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from identity import audit, repositories
from identity.config import Settings
from identity.models import Client, DeviceAuthorization, User, secret_digest, utcnow
from identity.protocol.grants import IssuingGrant, resolve_audience, user_scope, within_grant
from identity.protocol.requests import StarletteOAuth2Request, read_oauth2_request
from identity.protocol.server import IdentityServer, current_session
from identity.protocol.throttle import throttled_for
from identity.protocol.tokens import Authentication
from identity.security import request_context

GRANT_TYPE = rfc8628.DEVICE_CODE_GRANT_TYPE
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
# No vowels (no words spelled by accident) and no look-alikes such as 0/O or 1/I.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: seconds added to the interval on each slow_down
_USER_CODE_TRIES = 5
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def normalise_user_code(raw: str) -> str:
    """The stored form of a typed code (uppercase, no dashes or spaces); "" if it cannot be one."""
    code = "".join(c for c in raw[:64].upper() if c not in "- \t")
    if len(code) != USER_CODE_LENGTH or not set(code) <= set(USER_CODE_ALPHABET):
        return ""
    return code


def display_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


# -- the device authorization endpoint (RFC 8628 §3.1) -----------------------------------------


def _start(
    server: IdentityServer, settings: Settings, oauth_request: StarletteOAuth2Request
) -> dict[str, Any]:
    client: Client = server.authenticate_client(
        oauth_request, CLIENT_AUTH_METHODS, "device_authorization"
    )
    if not client.check_grant_type(GRANT_TYPE):
        raise UnauthorizedClientError("The client may not use the device authorization grant.")
    scope = user_scope(client, oauth_request.payload.scope)  # a user grant: OIDC scopes too
    audience = resolve_audience(client, oauth_request)
    session, now = current_session(), utcnow()
    device_code = secrets.token_urlsafe(32)
    for _ in range(_USER_CODE_TRIES):
        user_code = new_user_code()
        added = repositories.add_device_authorization(
            session,
            {
                "device_code_digest": secret_digest(device_code),
                "user_code": user_code,
                "client_id": client.client_id,
                "scope": scope,
                "audience": audience,
                "status": "pending",
                "interval": settings.device_poll_interval,
                "created_at": now,
                "expires_at": now + timedelta(seconds=settings.device_code_ttl),
            },
        )
        if added:
            break
    else:  # 20^8 codes: only a broken random source or a full table gets here
        raise RuntimeError("no free device user code")
    audit.record(
        session,
        "device.authorization_started",
        context=oauth_request.context,
        actor=client.client_id,
        client_id=client.client_id,
        detail={"scope": scope},
    )
    verification_uri = f"{settings.issuer}/device"
    shown = display_user_code(user_code)
    return {
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": verification_uri,
        "verification_uri_complete": f"{verification_uri}?user_code={shown}",
        "expires_in": settings.device_code_ttl,
        "interval": settings.device_poll_interval,
    }


async def device_authorization(request: Request) -> Response:
    """POST /oauth2/device_authorization: a device asks for a device code and a user code."""
    server: IdentityServer = request.app.state.oauth
    settings: Settings = request.app.state.settings
    context = request_context(request, settings.trusted_proxies)
    try:
        oauth_request = await read_oauth2_request(request, settings.issuer, context)
    except OAuth2Error as error:
        return server.error_response(error)

    throttled = await throttled_for(request, oauth_request, "token.client")
    if throttled is not None:
        return throttled

    def respond() -> Response:
        try:
            body = _start(server, settings, oauth_request)
        except OAuth2Error as error:
            return server.error_response(error)
        return JSONResponse(body, headers=_NO_STORE)

    return await server.run(oauth_request, respond)


# -- the device code grant (RFC 8628 §3.4, §3.5) -------------------------------------------------


class DeviceCodeGrant(IssuingGrant, rfc8628.DeviceCodeGrant):  # type: ignore[misc]
    """The token endpoint's answer to a polling device: pending, slow down, or tokens once
    (with an ID token for ``openid``: approving is an OpenID Connect sign-in on the device).

    Every poll records ``last_polled_at``; the unit of work commits it even when the answer
    is an error, because Authlib turns OAuth errors into responses instead of raising."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    ISSUES_ID_TOKEN = True

    def validate_token_request(self) -> None:
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequestError("Missing 'device_code'.")
        client: Client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use the device code grant.")
        row = repositories.get_device_authorization(
            current_session(), secret_digest(device_code), for_update=True
        )
        # Another client's code is answered like an unknown one: nothing about it leaks.
        if row is None or row.client_id != client.client_id:
            raise InvalidGrantError("The device code is invalid.")
        self.request.client = client
        self.request.credential = row
        within_grant(list(row.audience), self.request)  # before the code can be spent
        self.request.user = self._poll(row)

    def _poll(self, row: DeviceAuthorization) -> User:
        now = utcnow()
        last_polled_at, row.last_polled_at = row.last_polled_at, now
        if row.status == "used":
            raise InvalidGrantError("The device code was already used.")
        if row.expires_at <= now:
            raise rfc8628.ExpiredTokenError()
        if row.status == "denied":
            raise AccessDeniedError("The user denied the request.")
        if row.status == "approved":
            user = repositories.get_user(current_session(), row.user_id) if row.user_id else None
            if user is None or not user.is_active:
                raise InvalidGrantError("The approving account is gone or disabled.")
            return user
        if last_polled_at is not None and now - last_polled_at < timedelta(seconds=row.interval):
            row.interval += SLOW_DOWN_STEP
            raise rfc8628.SlowDownError()
        raise rfc8628.AuthorizationPendingError()

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        row: DeviceAuthorization = self.request.credential
        if not repositories.use_device_authorization(current_session(), row.device_code_digest):
            raise InvalidGrantError("The device code was already used.")
        token = self.generate_token(
            user=self.request.user,
            scope=row.scope,
            include_refresh_token=self.request.client.check_grant_type("refresh_token"),
        )
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def granted_audience(self) -> list[str]:
        # Fixed when the device asked (RFC 8707 resource there), like the scope.
        row: DeviceAuthorization = self.request.credential
        return list(row.audience)

    def authentication(self) -> Authentication | None:
        # The sign-in of the browser session that approved (set with status "approved").
        row: DeviceAuthorization = self.request.credential
        assert row.auth_time is not None
        return Authentication(row.auth_time, tuple(row.amr or ["pwd"]), row.session_id, row.idp)
