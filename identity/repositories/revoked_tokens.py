"""The queries of the denylist."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, exists, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from identity.models import RevokedToken
from identity.repositories._base import insert_ignoring_duplicates

__all__ = [
    "IS_TOKEN_REVOKED_SQLITE",
    "add_revoked_token",
    "is_token_revoked",
    "live_revoked_tokens",
    "prune_revoked_tokens",
]


def add_revoked_token(session: Session, jti: str, expires_at: datetime) -> None:
    insert_ignoring_duplicates(session, RevokedToken, {"jti": jti, "expires_at": expires_at})


_IS_TOKEN_REVOKED = select(exists().where(RevokedToken.jti == bindparam("jti")))
# The same query as SQLite text with one positional parameter (the jti), for readers outside
# SQLAlchemy (``Database.read_in_loop``); it answers one row, (1,) or (0,).
IS_TOKEN_REVOKED_SQLITE = str(
    _IS_TOKEN_REVOKED.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True})
)


def is_token_revoked(session: Session, jti: str) -> bool:
    return bool(session.scalar(_IS_TOKEN_REVOKED, {"jti": jti}))


def live_revoked_tokens(session: Session, now: datetime) -> Sequence[tuple[str, datetime]]:
    rows = session.execute(
        select(RevokedToken.jti, RevokedToken.expires_at).where(RevokedToken.expires_at > now)
    )
    return [(jti, expires_at) for jti, expires_at in rows]


def prune_revoked_tokens(session: Session, now: datetime) -> int:
    result = session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]
