"""The OpenAPI 3.1 document of the JSON account API and the OAuth endpoints, served at
``/openapi.json``, and the ``/docs`` page that renders it.

The ``/api/v1`` part is built from ``identity.api.OPERATIONS`` and their pydantic models, so
it cannot drift from the code; the OAuth part (form-encoded, answered by Authlib) is written
by hand here. The document is built once, when the routes are made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from http import HTTPStatus
from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import protocol
from identity.api import OPERATIONS, Operation
from identity.api_models import RequestBody
from identity.config import Settings
from identity.protocol.device import GRANT_TYPE as DEVICE_GRANT
from identity.web import render

REF = "#/components/schemas/{model}"
API_TAG = "Account API"
OAUTH_TAG = "OAuth 2.0 / OpenID Connect"
DISCOVERY_TAG = "Discovery"
_CONVERTORS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "path": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}
_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-z]+))?}")


# -- reusable pieces ---------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


def _object(name: str, required: list[str], /, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "title": name, "properties": properties, "required": required}


def _string(description: str = "", **keywords: Any) -> dict[str, Any]:
    return {"type": "string", **({"description": description} if description else {}), **keywords}


_STR, _INT, _BOOL = _string(), {"type": "integer"}, {"type": "boolean"}
_URI = _string(format="uri")
_STRINGS = {"type": "array", "items": _STR}
_WWW_AUTHENTICATE = _header("The bearer challenge (RFC 6750 §3), with error and description.")
_RETRY_AFTER = _header("Seconds to wait before retrying.", {"type": "integer", "minimum": 0})
_FIELD_ERROR = _object("FieldError", ["field", "message"], field=_STR, message=_STR)

PROBLEM = _object(
    "Problem",
    ["type", "title", "status", "detail"],
    type=_string("A URI naming the problem.", format="uri-reference", default="about:blank"),
    title=_STR,
    status={"type": "integer", "minimum": 400, "maximum": 599},
    detail=_STR,
    instance=_string(format="uri-reference"),
    errors={"type": "array", "items": _FIELD_ERROR, "description": "The rejected fields."},
)
OAUTH_ERROR = _object(
    "OAuthError",
    ["error"],
    error=_string("RFC 6749 §5.2 code", examples=["invalid_request", "invalid_grant"]),
    error_description=_STR,
    error_uri=_URI,
)
TOKEN = _object(
    "TokenResponse",
    ["access_token", "token_type", "expires_in"],
    access_token=_string("An RFC 9068 JWT signed with RS256."),
    token_type=_string(enum=["Bearer"]),
    expires_in={"type": "integer", "minimum": 1},
    scope=_STR,
    refresh_token=_string("Rotated on every use."),
    id_token=_string("When `openid` was granted."),
)
INTROSPECTION = _object(
    "Introspection",
    ["active"],
    active={"type": "boolean", "description": "False if unknown, expired or revoked."},
    token_type=_string(enum=["Bearer", "refresh_token"]),
    scope=_STR,
    client_id=_STR,
    sub=_STR,
    aud=_STRINGS,
    iss=_STR,
    exp=_INT,
    iat=_INT,
    jti=_STR,
)
USERINFO = _object(
    "UserInfo",
    ["sub"],
    sub=_string(format="uuid"),
    email=_string("scope `email`", format="email"),
    email_verified={"type": "boolean", "description": "scope `email`"},
    name=_string("scope `profile`"),
)
DEVICE_AUTHORIZATION = _object(
    "DeviceAuthorization",
    ["device_code", "user_code", "verification_uri", "expires_in", "interval"],
    device_code=_STR,
    user_code=_string(examples=["BCDF-GHJK"]),
    verification_uri=_URI,
    verification_uri_complete=_URI,
    expires_in=_INT,
    interval=_INT,
)
DISCOVERY = _object(
    "ProviderMetadata",
    ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"],
    issuer=_URI,
    authorization_endpoint=_URI,
    token_endpoint=_URI,
    userinfo_endpoint=_URI,
    jwks_uri=_URI,
    grant_types_supported=_STRINGS,
    scopes_supported=_STRINGS,
)
_JWK = _object(
    "JWK",
    ["kty", "kid", "n", "e"],
    kty=_string(enum=["RSA"]),
    kid=_STR,
    use=_string(enum=["sig"]),
    alg=_string(enum=["RS256"]),
    n=_STR,
    e=_STR,
)
JWKS = _object("JWKS", ["keys"], keys={"type": "array", "items": _JWK})
_FIXED_SCHEMAS = {
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


def _json(
    schema: dict[str, Any], description: str, media: str = "application/json"
) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _oauth_error(status: int, description: str) -> dict[str, Any]:
    response = _json(_ref("OAuthError"), description)
    if status == 429:
        response["headers"] = {"Retry-After": _RETRY_AFTER}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": _header("Set for client_secret_basic.")}
    return response


# -- the /api/v1 operations --------------------------------------------------------------------


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its ``null`` alternative (and a ``null`` default)."""
    options = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
    if len(options) == len(schema.get("anyOf", [])):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**rest, **options[0]} if len(options) == 1 else {**rest, "anyOf": options}


def _component_schemas(operations: Sequence[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Every request and response model as a component (nested models hoisted beside them);
    returns the ``$ref`` of each (model, mode) and the components."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for operation in operations:
        if operation.request is not None:
            wanted.append((operation.request, "validation"))
        for _, model in [(operation.status, operation.response), *operation.other_successes]:
            if model is not None:
                wanted.append((model, "serialization"))
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        return {}, {}
    refs, definitions = models_json_schema(wanted, ref_template=REF)
    schemas: dict[str, Any] = definitions.get("$defs", {})
    clash = set(schemas) & set(_FIXED_SCHEMAS)
    if clash:
        raise ValueError(f"API models clash with fixed schema names: {sorted(clash)}")
    for model, mode in wanted:
        if mode == "validation" and issubclass(model, RequestBody):
            # A RequestBody refuses null: an optional field is left out, never sent as null.
            schema = schemas[refs[(model, mode)]["$ref"].rsplit("/", 1)[1]]
            properties = schema.get("properties", {})
            schema["properties"] = {k: _without_null(v) for k, v in properties.items()}
    return refs, schemas


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The fields of a query model as query parameters (a URL cannot carry a null)."""
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    parameters = []
    for name, field in schema.get("properties", {}).items():
        field = _without_null({k: v for k, v in field.items() if k != "title"})
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
        if "description" in field:
            parameter["description"] = field["description"]
        parameters.append(parameter)
    return parameters


def _allows_empty(model: type[BaseModel]) -> bool:
    return not any(info.is_required() for info in model.model_fields.values())


def _path_and_parameters(path: str) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path (Starlette convertors dropped) and its path parameters."""
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(_CONVERTORS.get(convertor or "str", {"type": "string"})),
        }
        for name, convertor in _PARAM.findall(path)
    ]
    return _PARAM.sub(r"{\1}", path), parameters


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[^a-zA-Z0-9]+", path.removeprefix("/api/v1")) if w]
    return "_".join([method.lower(), *words]) or method.lower()


def _api_operation(operation: Operation, refs: dict[Any, Any]) -> tuple[str, dict[str, Any]]:
    method = operation.method.upper()
    path, parameters = _path_and_parameters(operation.path)
    spec: dict[str, Any] = {
        "tags": [API_TAG],
        "operationId": _operation_id(method, path),
        "summary": operation.summary,
        "security": [{"bearerAuth": []}] if operation.auth else [],
    }
    if operation.query is not None:
        parameters += _query_parameters(operation.query)
    if parameters:
        spec["parameters"] = parameters
    if operation.request is not None:
        schema = refs[(operation.request, "validation")]
        spec["requestBody"] = {
            "required": not _allows_empty(operation.request),  # then an empty body is {}
            "content": {"application/json": {"schema": schema}},
        }
    responses: dict[str, Any] = {}
    for status, model in [(operation.status, operation.response), *operation.other_successes]:
        success: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if model is not None:
            success["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
        responses[str(status)] = success
    errors = sorted({int(e) for e in operation.errors} | ({401} if operation.auth else set()))
    for error in errors:
        problem = _json(_ref("Problem"), HTTPStatus(error).phrase, "application/problem+json")
        if error in (401, 403) and operation.auth:
            problem["headers"] = {"WWW-Authenticate": _WWW_AUTHENTICATE}
        elif error in (429, 503):
            problem["headers"] = {"Retry-After": _RETRY_AFTER}
        responses[str(error)] = problem
    spec["responses"] = responses
    return path, {method.lower(): spec}


# -- the OAuth endpoints (written by hand: Authlib answers them) ---------------------------------


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
        return _object(title, ["grant_type", *required], **properties)

    variants = {
        "client_credentials": grant(
            "client_credentials", "client_credentials", [], scope=_SCOPE, resource=_RESOURCE
        ),
        "authorization_code": grant(
            "authorization_code",
            "authorization_code (PKCE S256 required)",
            ["code", "redirect_uri", "code_verifier"],
            code=_STR,
            redirect_uri={"type": "string", "format": "uri"},
            code_verifier={"type": "string", "minLength": 43, "maxLength": 128},
            resource=_RESOURCE,
        ),
        "refresh_token": grant(
            "refresh_token",
            "refresh_token (rotated on each use)",
            ["refresh_token"],
            refresh_token=_STR,
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
            DEVICE_GRANT, "device_code (RFC 8628)", ["device_code"], device_code=_STR
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


def _oauth_paths(settings: Settings) -> dict[str, Any]:
    client: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]  # or client_secret_post
    bearer: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    hint = _string(enum=["access_token", "refresh_token"])
    token_form = _object("TokenRequest", ["token"], token=_STR, token_type_hint=hint)
    no_store = {"Cache-Control": _header("`no-store`.")}
    public = {"Cache-Control": _header("`public, max-age=…`.")}
    errors = {
        "400": _oauth_error(400, "Invalid request (`error` says why)."),
        "401": _oauth_error(401, "Client authentication failed (`invalid_client`)."),
    }
    throttled = {"429": _oauth_error(429, "Over the client's (or account's) limit: `slow_down`.")}
    challenge = {"WWW-Authenticate": _WWW_AUTHENTICATE}
    userinfo = {
        "200": _json(_ref("UserInfo"), "The claims."),
        "401": _json(_ref("OAuthError"), "Missing, invalid or revoked token.")
        | {"headers": challenge},
        "403": _json(_ref("OAuthError"), "No `openid` scope.") | {"headers": challenge},
    }
    grants = {"oneOf": _grant_variants(protocol.grant_types(settings)), "required": ["grant_type"]}
    device_form = _object("DeviceAuthorizationRequest", [], scope=_SCOPE, resource=_RESOURCE)
    device_form["properties"].update(_CLIENT_POST)
    discovery = {"200": _json(_ref("ProviderMetadata"), "Metadata.") | {"headers": public}}
    return {
        "/oauth2/token": {
            "post": _operation(
                OAUTH_TAG,
                "token",
                "Get tokens (RFC 6749 §3.2)",
                client,
                {"200": _json(_ref("TokenResponse"), "Tokens.") | {"headers": no_store}}
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
                {"200": _json(_ref("Introspection"), "The token's state.")} | errors | throttled,
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
                _object("UserInfoForm", [], access_token=_STR),
            ),
        },
        "/oauth2/device_authorization": {
            "post": _operation(
                OAUTH_TAG,
                "device_authorization",
                "Start a device authorization (RFC 8628 §3.1)",
                client,
                {"200": _json(_ref("DeviceAuthorization"), "Codes.") | {"headers": no_store}}
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
                {"200": _json(_ref("JWKS"), "The key set.") | {"headers": public}},
            )
        },
    }


# -- the document and its routes ---------------------------------------------------------------


def _version() -> str:
    # The installed distribution's: under an editable install ``identity`` may be imported
    # as a namespace package, without its ``__init__`` (and so without ``__version__``).
    try:
        return metadata.version("identity")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def openapi_document(
    settings: Settings, operations: Sequence[Operation] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` (default: the account API's) and of the
    OAuth endpoints."""
    operations = OPERATIONS if operations is None else operations
    refs, schemas = _component_schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        path, spec = _api_operation(operation, refs)
        paths.setdefault(path, {}).update(spec)
    paths.update(_oauth_paths(settings))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "identity",
            "version": _version(),
            "description": (
                "The JSON account API (`/api/v1`, RFC 9457 problem details on errors) and the "
                "OAuth 2.1 / OpenID Connect endpoints (RFC 6749 error JSON)."
            ),
        },
        "servers": [{"url": settings.issuer}],
        "tags": [
            {"name": API_TAG, "description": "Accounts for API clients; JSON in and out."},
            {"name": OAUTH_TAG, "description": "Form-encoded requests, answered in JSON."},
            {"name": DISCOVERY_TAG, "description": "Public documents, cacheable."},
        ],
        "paths": paths,
        "components": {
            "schemas": {**schemas, **_FIXED_SCHEMAS},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def openapi_routes(settings: Settings) -> list[BaseRoute]:
    """``GET /openapi.json`` (the document, built now) and ``GET /docs`` (a page showing it)."""
    body = json.dumps(openapi_document(settings), separators=(",", ":")).encode()

    async def openapi_json(request: Request) -> Response:
        return Response(
            body, media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
        )

    async def docs(request: Request) -> Response:
        return render(request, None, "docs.html")

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
