"""The building blocks of the OpenAPI document: shared schemas, headers and helpers."""

from __future__ import annotations

import re
from typing import Any

REF = "#/components/schemas/{model}"
API_TAG = "Account API"
ADMIN_TAG = "Admin API"
ADMIN_DESCRIPTION = (
    "Operators' work on users, clients and keys, every call audited. A client's own token "
    "(client_credentials) with the `admin` scope and the API as its audience; or, from the "
    "admin console's pages, an administrator's session cookie (the `admin` role and a second "
    "factor), without an Authorization header, with the session's CSRF token in "
    "`X-CSRF-Token` on every call that changes something."
)
OAUTH_TAG = "OAuth 2.0 / OpenID Connect"
DISCOVERY_TAG = "Discovery"
CONVERTORS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "path": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}
PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-z]+))?}")


# -- reusable pieces ---------------------------------------------------------------------------


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


def object_schema(name: str, required: list[str], /, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "title": name, "properties": properties, "required": required}


def string_schema(description: str = "", **keywords: Any) -> dict[str, Any]:
    return {"type": "string", **({"description": description} if description else {}), **keywords}


STR, INT, BOOL = string_schema(), {"type": "integer"}, {"type": "boolean"}
URI = string_schema(format="uri")
STRINGS = {"type": "array", "items": STR}
WWW_AUTHENTICATE = header("The bearer challenge (RFC 6750 §3), with error and description.")
RETRY_AFTER = header("Seconds to wait before retrying.", {"type": "integer", "minimum": 0})
FIELD_ERROR = object_schema("FieldError", ["field", "message"], field=STR, message=STR)

PROBLEM = object_schema(
    "Problem",
    ["type", "title", "status", "detail"],
    type=string_schema("A URI naming the problem.", format="uri-reference", default="about:blank"),
    title=STR,
    status={"type": "integer", "minimum": 400, "maximum": 599},
    detail=STR,
    instance=string_schema(format="uri-reference"),
    errors={
        "type": "array",
        "items": FIELD_ERROR,
        "description": (
            "Every rejected field, each with its message, all in one answer: a wrong field "
            "never hides another. Sent with invalid-input (the body's fields), "
            "invalid-link (`token`, and any other field that was refused too), invalid-code "
            "(the code's field, where a body carries it) and reauthentication-required "
            "(`password`)."
        ),
    },
)
OAUTH_ERROR = object_schema(
    "OAuthError",
    ["error"],
    error=string_schema("RFC 6749 §5.2 code", examples=["invalid_request", "invalid_grant"]),
    error_description=STR,
    error_uri=URI,
)
TOKEN = object_schema(
    "TokenResponse",
    ["access_token", "token_type", "expires_in"],
    access_token=string_schema("An RFC 9068 JWT signed with RS256."),
    token_type=string_schema(enum=["Bearer"]),
    expires_in={"type": "integer", "minimum": 1},
    scope=STR,
    refresh_token=string_schema("Rotated on every use."),
    id_token=string_schema("When `openid` was granted."),
)
INTROSPECTION = object_schema(
    "Introspection",
    ["active"],
    active={"type": "boolean", "description": "False if unknown, expired or revoked."},
    token_type=string_schema(enum=["Bearer", "refresh_token"]),
    scope=STR,
    client_id=STR,
    sub=STR,
    aud=STRINGS,
    iss=STR,
    exp=INT,
    iat=INT,
    jti=STR,
)
USERINFO = object_schema(
    "UserInfo",
    ["sub"],
    sub=string_schema(format="uuid"),
    email=string_schema("scope `email`", format="email"),
    email_verified={"type": "boolean", "description": "scope `email`"},
    name=string_schema("scope `profile`"),
)
DEVICE_AUTHORIZATION = object_schema(
    "DeviceAuthorization",
    ["device_code", "user_code", "verification_uri", "expires_in", "interval"],
    device_code=STR,
    user_code=string_schema(examples=["BCDF-GHJK"]),
    verification_uri=URI,
    verification_uri_complete=URI,
    expires_in=INT,
    interval=INT,
)
DISCOVERY = object_schema(
    "ProviderMetadata",
    ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"],
    issuer=URI,
    authorization_endpoint=URI,
    token_endpoint=URI,
    userinfo_endpoint=URI,
    jwks_uri=URI,
    grant_types_supported=STRINGS,
    scopes_supported=STRINGS,
)
JWK = object_schema(
    "JWK",
    ["kty", "kid", "n", "e"],
    kty=string_schema(enum=["RSA"]),
    kid=STR,
    use=string_schema(enum=["sig"]),
    alg=string_schema(enum=["RS256"]),
    n=STR,
    e=STR,
)
JWKS = object_schema("JWKS", ["keys"], keys={"type": "array", "items": JWK})
FIXED_SCHEMAS = {
    "Problem": PROBLEM,
    "OAuthError": OAUTH_ERROR,
    "TokenResponse": TOKEN,
    "Introspection": INTROSPECTION,
    "UserInfo": USERINFO,
    "DeviceAuthorization": DEVICE_AUTHORIZATION,
    "ProviderMetadata": DISCOVERY,
    "JWKS": JWKS,
}
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from `/oauth2/token` (RFC 6750).",
    },
    "clientBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "client_secret_basic: the client id and secret (RFC 6749 §2.3.1).",
    },
}


def json_body(
    schema: dict[str, Any], description: str, media: str = "application/json"
) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def oauth_error(status: int, description: str) -> dict[str, Any]:
    response = json_body(ref("OAuthError"), description)
    if status == 429:
        response["headers"] = {"Retry-After": RETRY_AFTER}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": header("Set for client_secret_basic.")}
    return response
