"""RFC 9457 problem details: the only error shape of the JSON account API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from identity.accounts.errors import (
    InvalidCode,
    InvalidInput,
    InvalidLink,
    ReauthenticationRequired,
    Throttled,
)
from identity.accounts.factors import RECENT

_RECENT_MINUTES = int(RECENT.total_seconds()) // 60
PROBLEM_MEDIA_TYPE = "application/problem+json"
URN = "urn:identity:problem:"
INVALID_INPUT = URN + "invalid-input"
MALFORMED_BODY = URN + "malformed-body"
INVALID_CODE = URN + "invalid-code"
INVALID_LINK = URN + "invalid-link"
INVALID_TOKEN = URN + "invalid-token"
INSUFFICIENT_SCOPE = URN + "insufficient-scope"
REAUTHENTICATION_REQUIRED = URN + "reauthentication-required"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# pydantic's wording where ours says more (no message ever echoes the input).
_MESSAGES = {
    "extra_forbidden": "This field is not allowed.",
    "missing": "This field is required.",
    "string_type": "Must be a string.",
    "model_type": "The body must be a JSON object.",
    "dict_type": "The body must be a JSON object.",
}


class Problem(Exception):
    """An error answer; ``errors`` maps field names to messages (400 validation failures)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = "about:blank",
        title: str | None = None,
        errors: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        # RFC 9457 §4.2.1: with about:blank the title is the status phrase.
        self.title = title or HTTPStatus(status).phrase
        self.errors = dict(errors or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"field": f, "message": m} for f, m in self.errors.items()]
        return body

    def response(self) -> Response:
        return Response(
            json.dumps(self.body(), separators=(",", ":")),
            status_code=self.status,
            media_type=PROBLEM_MEDIA_TYPE,
            headers={**NO_STORE, **self.headers},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As an ASGI app: the router's answer for paths it does not know."""
        await self.response()(scope, receive, send)


def invalid_input(errors: Mapping[str, str]) -> Problem:
    return Problem(
        400,
        "Some fields are missing or invalid.",
        type=INVALID_INPUT,
        title="Invalid input",
        errors=errors,
    )


def from_validation(error: ValidationError) -> Problem:
    """The field errors of a refused body, one per field, without echoing the input."""
    errors: dict[str, str] = {}
    for item in error.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        errors.setdefault(field, _MESSAGES.get(item["type"], item["msg"]))
    return invalid_input(errors)


def from_account_error(error: Exception, fields: Mapping[str, str] | None = None) -> Problem:
    """The problem of a service refusal; ``fields`` renames service field names to ours."""
    rename = fields or {}
    if isinstance(error, InvalidInput):
        return invalid_input({rename.get(k, k): v for k, v in error.fields.items()})
    if isinstance(error, Throttled):
        return Problem(429, str(error), headers={"Retry-After": str(max(1, error.retry_after))})
    if isinstance(error, InvalidCode):
        return Problem(400, str(error), type=INVALID_CODE, title="Invalid code")
    if isinstance(error, ReauthenticationRequired):
        return reauthentication_required()
    if isinstance(error, InvalidLink):
        # Every link token the API takes is the body's ``token``; the other fields' faults
        # come along so the try with a new link does not fail on them.
        errors = {"token": str(error), **{rename.get(k, k): v for k, v in error.fields.items()}}
        return Problem(
            400, str(error), type=INVALID_LINK, title="Invalid or expired token", errors=errors
        )
    raise error


def invalid_code(error: InvalidCode, field: str) -> Problem:
    """A wrong, used or expired code, told on the body's field ``field`` too."""
    return Problem(
        400, str(error), type=INVALID_CODE, title="Invalid code", errors={field: str(error)}
    )


def reauthentication_required() -> Problem:
    """403: the change needs a recent sign-in, or the password sent with it."""
    return Problem(
        403,
        f"This change needs a sign-in within the last {_RECENT_MINUTES} minutes: send your "
        "password as `password`, or sign in again.",
        type=REAUTHENTICATION_REQUIRED,
        title="Reauthentication required",
        errors={"password": "Enter your password to confirm it's you."},
    )


def conflict(detail: str, type: str, title: str) -> Problem:
    """409: the account is not in the state the operation needs."""
    return Problem(409, detail, type=URN + type, title=title)


def malformed_body(detail: str = "The body is not valid JSON.") -> Problem:
    return Problem(400, detail, type=MALFORMED_BODY, title="Malformed body")


def not_found(detail: str = "There is nothing at this address.") -> Problem:
    return Problem(404, detail)


def unauthenticated(error: str | None, description: str) -> Problem:
    """401 with an RFC 6750 challenge; ``error`` is None when no token was sent (§3.1)."""
    challenge = 'Bearer realm="identity"'
    if error is not None:
        challenge += f', error="{error}", error_description="{description}"'
    return Problem(
        401,
        description,
        type=INVALID_TOKEN if error else "about:blank",
        title="Invalid access token" if error else None,
        headers={"WWW-Authenticate": challenge},
    )


def insufficient_scope(scope: str) -> Problem:
    description = f"The access token lacks the {scope!r} scope."
    return Problem(
        403,
        description,
        type=INSUFFICIENT_SCOPE,
        title="Insufficient scope",
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="identity", error="insufficient_scope", '
                f'error_description="{description}", scope="{scope}"'
            )
        },
    )
