"""Revocation (RFC 7009) and introspection (RFC 7662), and the discovery documents."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import TokenMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from identity.accounts.factors import ACR_VALUES
from identity.models import OIDC_SCOPES, Client
from identity.protocol.refresh import (
    RefreshTokenView,
    find_refresh_token,
    introspect_refresh_token,
    revoke_refresh_token,
)
from identity.protocol.requests import StarletteOAuth2Request
from identity.protocol.server import IdentityServer, current_session
from identity.protocol.tokens import InvalidToken, read_access_token

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


@dataclass
class AccessToken(TokenMixin):  # type: ignore[misc]
    """A verified JWT access token, seen through Authlib's token interface."""

    claims: dict[str, Any]
    revoked: bool
    token_type: str = "access_token"  # noqa: S105 (a type name, not a secret)

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def client_id(self) -> str:
        return str(self.claims["client_id"])

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def shown_to(self, client: Client) -> bool:
        return access_token_shown_to(client.client_id, self.claims)

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        return int(self.claims["exp"] - self.claims["iat"])

    def is_expired(self) -> bool:
        return bool(self.claims["exp"] <= time.time())

    def is_revoked(self) -> bool:
        return self.revoked


def access_token_shown_to(client_id: str, claims: dict[str, Any]) -> bool:
    """RFC 7662 §4: introspection shows an access token to its own client and to the
    clients its ``aud`` names (resource servers); anyone else learns only that it is not
    active, as for a token that does not exist."""
    audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    return client_id == claims["client_id"] or client_id in audience


def find_access_token(server: IdentityServer, value: str) -> AccessToken | None:
    """The access token ``value`` if it is ours, well signed and not expired; else None."""
    try:
        claims = read_access_token(
            value, server.issuer.keys.ring(), issuer=server.issuer.issuer, leeway=0
        )
    except InvalidToken:
        return None
    return AccessToken(claims, server.denylist.is_revoked(claims["jti"], current_session()))


def find_token(
    server: IdentityServer, value: str, hint: str | None
) -> AccessToken | RefreshTokenView | None:
    """The token by its hint first, then the other kind (RFC 7009 §2.1, RFC 7662 §2.1)."""
    if hint == "refresh_token":
        return find_refresh_token(server, value) or find_access_token(server, value)
    return find_access_token(server, value) or find_refresh_token(server, value)


class TokenRevocation(RevocationEndpoint):  # type: ignore[misc]
    # Public clients may revoke their own refresh tokens (OAuth 2.1 §4.3.1.1).
    CLIENT_AUTH_METHODS = [*CLIENT_AUTH_METHODS, "none"]

    def query_token(
        self, token_string: str, token_type_hint: str | None
    ) -> AccessToken | RefreshTokenView | None:
        # An unknown token is answered like a revoked one (RFC 7009 §2.2: 200).
        return find_token(self.server, token_string, token_type_hint)

    def authenticate_token(
        self, request: StarletteOAuth2Request, client: Client
    ) -> AccessToken | RefreshTokenView | None:
        """The token to revoke: only the caller's own. Another client's is treated like an
        unknown one (200, nothing changes); Authlib's 400 would tell the caller that the
        token it holds is valid."""
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        return token if token is not None and token.check_client(client) else None

    def revoke_token(
        self, token: AccessToken | RefreshTokenView, request: StarletteOAuth2Request
    ) -> None:
        if isinstance(token, RefreshTokenView):
            revoke_refresh_token(self.server, token, request.context)  # the whole family
            return
        expires_at = datetime.fromtimestamp(token.claims["exp"], UTC)
        self.server.denylist.revoke(current_session(), token.jti, expires_at)


class TokenIntrospection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def query_token(
        self, token_string: str, token_type_hint: str | None
    ) -> AccessToken | RefreshTokenView | None:
        return find_token(self.server, token_string, token_type_hint)

    def check_permission(
        self, token: AccessToken | RefreshTokenView, client: Client, request: StarletteOAuth2Request
    ) -> bool:
        # Refresh tokens are the business of the client that holds them only.
        if isinstance(token, RefreshTokenView):
            return bool(token.check_client(client))
        return token.shown_to(client)

    def introspect_token(self, token: AccessToken | RefreshTokenView) -> dict[str, Any]:
        # A disabled or deleted user's tokens are not active, whatever else holds; the
        # in-loop path (protocol.introspection) asks the same user cache.
        server: IdentityServer = self.server
        if isinstance(token, RefreshTokenView):
            if not server.user_is_active(token.row.user_id, current_session()):
                return {"active": False}
            return introspect_refresh_token(token)
        if not server.subject_is_active(token.claims, current_session()):
            return {"active": False}
        return access_token_introspection(token.claims)


def access_token_introspection(claims: dict[str, Any]) -> dict[str, Any]:
    """What introspection tells about a live access token with these claims."""
    body: dict[str, Any] = {
        "active": True,
        "token_type": "Bearer",
        "scope": claims.get("scope", ""),
        "client_id": claims["client_id"],
        "sub": claims["sub"],
        "aud": claims["aud"],
        "iss": claims["iss"],
        "exp": claims["exp"],
        "iat": claims["iat"],
        "jti": claims["jti"],
    }
    # A user's token: how and when they signed in, for a resource server's step-up (RFC 9470),
    # and the roles it was issued with.
    for name in ("auth_time", "acr", "roles"):
        if name in claims:
            body[name] = claims[name]
    return body


def metadata(issuer: str, grant_types: list[str]) -> dict[str, Any]:
    """RFC 8414 / OpenID Connect Discovery: only what this server really does."""
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth2/authorize",
        "token_endpoint": f"{issuer}/oauth2/token",
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "end_session_endpoint": f"{issuer}/oauth2/logout",
        "grant_types_supported": grant_types,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        # Every scope a client may ask for without registering it; registered ones (an
        # API's own, account, admin) are the business of the clients that have them.
        "scopes_supported": list(OIDC_SCOPES),
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "acr",
            "amr",
            "azp",
            "sid",
            "idp",
            "email",
            "email_verified",
            "name",
            "roles",
        ],
        "acr_values_supported": list(ACR_VALUES),
        "prompt_values_supported": ["none", "login", "consent", "create"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [*CLIENT_AUTH_METHODS, "none"],
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "access_token_signing_alg_values_supported": ["RS256"],
        "ui_locales_supported": ["en"],
    }
    if "urn:ietf:params:oauth:grant-type:device_code" in grant_types:
        document["device_authorization_endpoint"] = f"{issuer}/oauth2/device_authorization"
    return document
