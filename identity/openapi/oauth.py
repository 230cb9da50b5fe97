"""The OAuth and discovery endpoints in the OpenAPI document, written by hand: Authlib
answers them, form-encoded, so there are no models to build them from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from identity import protocol
from identity.config import Settings
from identity.openapi.schemas import (
    DISCOVERY_TAG,
    OAUTH_TAG,
    STR,
    WWW_AUTHENTICATE,
    header,
    json_body,
    oauth_error,
    object_schema,
    ref,
    string_schema,
)
from identity.protocol.device import GRANT_TYPE as DEVICE_GRANT

_CLIENT_POST = {
    "client_id": {"type": "string", "description": "Public clients and client_secret_post."},
    "client_secret": {"type": "string", "description": "client_secret_post only."},
}
_SCOPE = {"type": "string", "description": "Space-separated; default: all registered."}
_RESOURCE = {
    "type": "string",
    "format": "uri",
    "description": "RFC 8707 audience; repeatable, each registered for the client.",
}


def _grant_variants(grant_types: Sequence[str]) -> list[dict[str, Any]]:
    def grant(name: str, title: str, required: list[str], **fields: Any) -> dict[str, Any]:
        properties = {"grant_type": {"const": name}, **fields, **_CLIENT_POST}
        return object_schema(title, ["grant_type", *required], **properties)

    variants = {
        "client_credentials": grant(
            "client_credentials", "client_credentials", [], scope=_SCOPE, resource=_RESOURCE
        ),
        "authorization_code": grant(
            "authorization_code",
            "authorization_code (PKCE S256 required)",
            ["code", "redirect_uri", "code_verifier"],
            code=STR,
            redirect_uri={"type": "string", "format": "uri"},
            code_verifier={"type": "string", "minLength": 43, "maxLength": 128},
            resource=_RESOURCE,
        ),
        "refresh_token": grant(
            "refresh_token",
            "refresh_token (rotated on each use)",
            ["refresh_token"],
            refresh_token=STR,
            scope=_SCOPE,
        ),
        "password": grant(
            "password",
            "password (first-party clients only)",
            ["username", "password"],
            username={"type": "string", "format": "email"},
            password={"type": "string", "format": "password"},
            scope=_SCOPE,
        ),
        DEVICE_GRANT: grant(
            DEVICE_GRANT, "device_code (RFC 8628)", ["device_code"], device_code=STR
        ),
    }
    return [variants[name] for name in grant_types if name in variants]


def _operation(
    tag: str,
    operation_id: str,
    summary: str,
    security: list[dict[str, list[str]]],
    responses: dict[str, Any],
    form: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"tags": [tag], "operationId": operation_id, "summary": summary}
    if description:
        spec["description"] = description
    spec["security"] = security
    if form is not None:
        spec["requestBody"] = {
            "required": bool(form.get("required")),
            "content": {"application/x-www-form-urlencoded": {"schema": form}},
        }
    spec["responses"] = responses
    return spec


def oauth_paths(settings: Settings) -> dict[str, Any]:
    client: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]  # or client_secret_post
    bearer: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    hint = string_schema(enum=["access_token", "refresh_token"])
    token_form = object_schema("TokenRequest", ["token"], token=STR, token_type_hint=hint)
    no_store = {"Cache-Control": header("`no-store`.")}
    public = {"Cache-Control": header("`public, max-age=…`.")}
    errors = {
        "400": oauth_error(400, "Invalid request (`error` says why)."),
        "401": oauth_error(401, "Client authentication failed (`invalid_client`)."),
    }
    throttled = {"429": oauth_error(429, "Over the client's (or account's) limit: `slow_down`.")}
    challenge = {"WWW-Authenticate": WWW_AUTHENTICATE}
    userinfo = {
        "200": json_body(ref("UserInfo"), "The claims."),
        "401": json_body(ref("OAuthError"), "Missing, invalid or revoked token.")
        | {"headers": challenge},
        "403": json_body(ref("OAuthError"), "No `openid` scope.") | {"headers": challenge},
    }
    grants = {"oneOf": _grant_variants(protocol.grant_types(settings)), "required": ["grant_type"]}
    device_form = object_schema("DeviceAuthorizationRequest", [], scope=_SCOPE, resource=_RESOURCE)
    device_form["properties"].update(_CLIENT_POST)
    discovery = {"200": json_body(ref("ProviderMetadata"), "Metadata.") | {"headers": public}}
    return {
        "/oauth2/token": {
            "post": _operation(
                OAUTH_TAG,
                "token",
                "Get tokens (RFC 6749 §3.2)",
                client,
                {"200": json_body(ref("TokenResponse"), "Tokens.") | {"headers": no_store}}
                | errors
                | throttled,
                grants,
                "One form per `grant_type`: only the grants this server enables are listed.",
            )
        },
        "/oauth2/introspect": {
            "post": _operation(
                OAUTH_TAG,
                "introspect",
                "Introspect a token (RFC 7662)",
                client,
                {"200": json_body(ref("Introspection"), "The token's state.")} | errors | throttled,
                token_form,
                "For confidential clients; a refresh token only for the client holding it.",
            )
        },
        "/oauth2/revoke": {
            "post": _operation(
                OAUTH_TAG,
                "revoke",
                "Revoke a token (RFC 7009)",
                client,
                {"200": {"description": "Revoked (an unknown token too)."}} | errors,
                token_form,
                "Revoking a refresh token revokes its whole family.",
            )
        },
        "/oauth2/userinfo": {
            "get": _operation(OAUTH_TAG, "userinfo", "The user's claims (OIDC)", bearer, userinfo),
            "post": _operation(
                OAUTH_TAG,
                "userinfo_post",
                "The user's claims (OIDC), by POST",
                bearer,
                userinfo,
                object_schema("UserInfoForm", [], access_token=STR),
            ),
        },
        "/oauth2/device_authorization": {
            "post": _operation(
                OAUTH_TAG,
                "device_authorization",
                "Start a device authorization (RFC 8628 §3.1)",
                client,
                {"200": json_body(ref("DeviceAuthorization"), "Codes.") | {"headers": no_store}}
                | errors
                | throttled,
                device_form,
            )
        },
        "/.well-known/openid-configuration": {
            "get": _operation(DISCOVERY_TAG, "openid_configuration", "OIDC metadata", [], discovery)
        },
        "/.well-known/oauth-authorization-server": {
            "get": _operation(DISCOVERY_TAG, "oauth_metadata", "RFC 8414 metadata", [], discovery)
        },
        "/.well-known/jwks.json": {
            "get": _operation(
                DISCOVERY_TAG,
                "jwks",
                "Public signing keys",
                [],
                {"200": json_body(ref("JWKS"), "The key set.") | {"headers": public}},
            )
        },
    }
