"""What one operation of the JSON API is: the row of ``OPERATIONS`` that the router and the
OpenAPI document both read (``identity.api.routes``, ``identity.openapi``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from identity.api.calls import ApiCall, Result

PREFIX = "/api/v1"
BODY = (400, 413, 415)  # a JSON body: invalid, too large, not JSON
DOWN = (503,)  # the database is unavailable (handled app-wide)
BEARER = (401, 403)


@dataclass(frozen=True)
class Operation:
    """One route of the API, as the router and the OpenAPI document see it.

    ``errors`` lists every error status the operation can answer (401 is implied by
    ``auth``); ``query`` models the query string; ``other_successes`` lists success answers
    besides ``status`` (status, body model). ``auth`` asks for a user's bearer token with
    the ``account`` scope; with ``admin`` too, for a client's own token with ``admin`` (or
    an administrator's console session, ``identity.api.authentication``)."""

    method: str
    path: str
    summary: str
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    errors: tuple[int, ...]
    auth: bool
    handler: Callable[[ApiCall], Result] = field(repr=False, compare=False)
    query: type[BaseModel] | None = None
    other_successes: tuple[tuple[int, type[BaseModel] | None], ...] = ()
    admin: bool = False

    def __post_init__(self) -> None:
        if self.admin and not self.auth:
            raise ValueError(f"{self.method} {self.path}: an admin operation needs auth")
