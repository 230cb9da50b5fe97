"""The grants identity serves, on Authlib's grant classes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import InvalidScopeError, OAuth2Error, grants

from identity.models import Client
from identity.protocol.server import StarletteOAuth2Request


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]
    """RFC 8707 §2: the requested resource is unknown or not allowed for this client."""

    error = "invalid_target"


def resolve_audience(client: Client, request: StarletteOAuth2Request) -> list[str]:
    """``aud``: the RFC 8707 ``resource`` values (each registered for the client), else the
    client's registered audience, else the client itself."""
    resources = request.resources()
    for resource in resources:
        parts = urlsplit(resource)
        if not parts.scheme or parts.fragment:
            raise InvalidTargetError("A resource must be an absolute URI without a fragment.")
        if resource not in client.audience:
            raise InvalidTargetError(f"The client may not ask for resource {resource!r}.")
    if resources:
        return list(dict.fromkeys(resources))
    return list(client.audience) or [client.client_id]


def granted_scope(client: Client, requested: str | None) -> str:
    """The scope to grant: what was asked for, if the client registered all of it; no
    scope asked means the client's whole registered scope."""
    if requested is None:
        return client.scope
    if not requested.strip():
        raise InvalidScopeError("The scope parameter is empty.")
    if not client.has_scope(requested):
        raise InvalidScopeError("The client did not register every scope it asked for.")
    return " ".join(dict.fromkeys(requested.split()))


class IssuingGrant:
    """Issues tokens through our signer, so every grant gets the same claims and audit."""

    request: StarletteOAuth2Request
    server: Any
    GRANT_TYPE: str | None

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        client: Client = self.request.client
        issued = self.server.issuer.issue(
            client_id=client.client_id,
            subject=client.client_id if user is None else str(user.get_user_id()),
            audience=resolve_audience(client, self.request),
            scope=scope or "",
        )
        self.request.issued.append(issued)
        token: dict[str, Any] = {
            "access_token": issued.value,
            "token_type": "Bearer",
            "expires_in": issued.claims["exp"] - issued.claims["iat"],
        }
        if scope:
            token["scope"] = scope
        return token


class ClientCredentialsGrant(IssuingGrant, grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_requested_scope(self) -> None:
        self.request.granted_scope = granted_scope(self.request.client, self.request.payload.scope)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(scope=self.request.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
