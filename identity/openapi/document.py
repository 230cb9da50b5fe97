"""The OpenAPI 3.1 document of the JSON account API and the OAuth endpoints, served at
``/openapi.json``, and the ``/docs`` page that renders it.

The ``/api/v1`` part is built from the API's operations table (handed in by the app, so this
surface does not import the ``api`` one) and their pydantic models, so it cannot drift from
the code; the OAuth part (form-encoded, answered by Authlib) is written
by hand here. The document is built once, when the routes are made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from http import HTTPStatus
from importlib import metadata
from typing import Any, Protocol

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from identity import rendering
from identity.config import Settings
from identity.openapi.oauth import oauth_paths
from identity.openapi.schemas import (
    ADMIN_DESCRIPTION,
    ADMIN_TAG,
    API_TAG,
    CONVERTORS,
    DISCOVERY_TAG,
    FIXED_SCHEMAS,
    OAUTH_TAG,
    PARAM,
    REF,
    RETRY_AFTER,
    SECURITY_SCHEMES,
    WWW_AUTHENTICATE,
    json_body,
    ref,
)


class Operation(Protocol):
    """What the document reads of one API operation (``identity.api.routes.Operation``)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def request(self) -> type[BaseModel] | None: ...
    @property
    def response(self) -> type[BaseModel] | None: ...
    @property
    def status(self) -> int: ...
    @property
    def errors(self) -> tuple[int, ...]: ...
    @property
    def auth(self) -> bool: ...
    @property
    def query(self) -> type[BaseModel] | None: ...
    @property
    def other_successes(self) -> tuple[tuple[int, type[BaseModel] | None], ...]: ...
    @property
    def admin(self) -> bool: ...


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
    clash = set(schemas) & set(FIXED_SCHEMAS)
    if clash:
        raise ValueError(f"API models clash with fixed schema names: {sorted(clash)}")
    for model, mode in wanted:
        if mode == "validation" and getattr(model, "refuses_null", False):
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
            "schema": dict(CONVERTORS.get(convertor or "str", {"type": "string"})),
        }
        for name, convertor in PARAM.findall(path)
    ]
    return PARAM.sub(r"{\1}", path), parameters


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[^a-zA-Z0-9]+", path.removeprefix("/api/v1")) if w]
    return "_".join([method.lower(), *words]) or method.lower()


def _api_operation(operation: Operation, refs: dict[Any, Any]) -> tuple[str, dict[str, Any]]:
    method = operation.method.upper()
    path, parameters = _path_and_parameters(operation.path)
    spec: dict[str, Any] = {
        "tags": [ADMIN_TAG if operation.admin else API_TAG],
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
        problem = json_body(ref("Problem"), HTTPStatus(error).phrase, "application/problem+json")
        if error in (401, 403) and operation.auth:
            problem["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
        elif error in (429, 503):
            problem["headers"] = {"Retry-After": RETRY_AFTER}
        responses[str(error)] = problem
    spec["responses"] = responses
    return path, {method.lower(): spec}


# -- the document and its routes ---------------------------------------------------------------


def _version() -> str:
    # The installed distribution's: under an editable install ``identity`` may be imported
    # as a namespace package, without its ``__init__`` (and so without ``__version__``).
    try:
        return metadata.version("identity")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def openapi_document(settings: Settings, operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` (the JSON API's) and of the OAuth
    endpoints."""
    refs, schemas = _component_schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        path, spec = _api_operation(operation, refs)
        paths.setdefault(path, {}).update(spec)
    paths.update(oauth_paths(settings))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "identity",
            "version": _version(),
            "description": (
                "The JSON account and admin API (`/api/v1`, RFC 9457 problem details on errors) "
                "and the OAuth 2.1 / OpenID Connect endpoints (RFC 6749 error JSON)."
            ),
        },
        "servers": [{"url": settings.issuer}],
        "tags": [
            {"name": API_TAG, "description": "Accounts for API clients; JSON in and out."},
            {"name": ADMIN_TAG, "description": ADMIN_DESCRIPTION},
            {"name": OAUTH_TAG, "description": "Form-encoded requests, answered in JSON."},
            {"name": DISCOVERY_TAG, "description": "Public documents, cacheable."},
        ],
        "paths": paths,
        "components": {
            "schemas": {**schemas, **FIXED_SCHEMAS},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def openapi_routes(settings: Settings, operations: Sequence[Operation]) -> list[BaseRoute]:
    """``GET /openapi.json`` (the document, built now) and ``GET /docs`` (a page showing it)."""
    body = json.dumps(openapi_document(settings, operations), separators=(",", ":")).encode()

    async def openapi_json(request: Request) -> Response:
        return Response(
            body, media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
        )

    async def docs(request: Request) -> Response:
        return rendering.page(request, "docs.html")

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
