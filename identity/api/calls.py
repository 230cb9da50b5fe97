"""What one JSON API request hands its handler: the counterpart of ``web.Visit``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User

Model = TypeVar("Model", bound=BaseModel)


@dataclass
class ApiCall:
    """One request, inside its one transaction (``db``); ``user`` and ``claims`` are set for
    bearer-authenticated operations."""

    db: Session
    accounts: Accounts
    oauth: Any
    context: RequestContext
    body: BaseModel | None = None
    query: BaseModel | None = None
    path: dict[str, str] = field(default_factory=dict)
    user: User | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    def body_as(self, model: type[Model]) -> Model:
        assert isinstance(self.body, model), "the operation declares another request model"
        return self.body

    def query_as(self, model: type[Model]) -> Model:
        assert isinstance(self.query, model), "the operation declares another query model"
        return self.query

    @property
    def me(self) -> User:
        assert self.user is not None, "the operation is not bearer-authenticated"
        return self.user


@dataclass(frozen=True)
class Reply:
    """A success other than the operation's usual one (PATCH /me starting an email change)."""

    status: int
    body: BaseModel | None = None


Result = BaseModel | Reply | None
