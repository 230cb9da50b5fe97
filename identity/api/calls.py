"""What one JSON API request hands its handler: the counterpart of ``web.Visit``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from identity import audit
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User

Model = TypeVar("Model", bound=BaseModel)


@dataclass
class ApiCall:
    """One request, inside its one transaction (``db``); ``user`` and ``claims`` are set for
    bearer-authenticated operations, ``actor`` for admin ones (the admin client's id, or the
    id of the administrator whose console session made the call)."""

    db: Session
    accounts: Accounts
    oauth: Any
    context: RequestContext
    body: BaseModel | None = None
    query: BaseModel | None = None
    path: dict[str, str] = field(default_factory=dict)
    user: User | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None

    def body_as(self, model: type[Model]) -> Model:
        assert isinstance(self.body, model), "the operation declares another request model"
        return self.body

    def query_as(self, model: type[Model]) -> Model:
        assert isinstance(self.query, model), "the operation declares another query model"
        return self.query

    def record(
        self,
        type: str,
        *,
        subject: str | None = None,
        client_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """An audit row of this call's actor and context, in its transaction."""
        audit.record(
            self.db,
            type,
            context=self.context,
            actor=self.operator,
            subject=subject,
            client_id=client_id,
            detail=detail,
        )

    @property
    def operator(self) -> str:
        """The actor of an admin operation."""
        assert self.actor is not None, "the operation is not an admin one"
        return self.actor

    @property
    def me(self) -> User:
        assert self.user is not None, "the operation is not bearer-authenticated"
        return self.user

    @property
    def authenticated_at(self) -> datetime | None:
        """When the user behind the access token signed in (its ``auth_time``), if it says."""
        auth_time = self.claims.get("auth_time")
        # bool is an int too; our tokens carry whole seconds since the epoch.
        if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
            return None
        try:
            return datetime.fromtimestamp(auth_time, UTC)
        except (OverflowError, OSError, ValueError):
            return None


@dataclass(frozen=True)
class Reply:
    """A success other than the operation's usual one (PATCH /me starting an email change)."""

    status: int
    body: BaseModel | None = None


Result = BaseModel | Reply | None
