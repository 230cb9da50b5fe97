"""The queries of cache generations (see identity.row_cache)."""

from __future__ import annotations

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.models import CacheGeneration

__all__ = ["bump_cache_generation", "cache_generation"]

_TABLE: Table = CacheGeneration.__table__  # type: ignore[assignment]


def cache_generation(session: Session, name: str) -> int:
    query = select(_TABLE.c.generation).where(_TABLE.c.name == name)
    return int(session.scalar(query) or 0)


def bump_cache_generation(session: Session, name: str) -> None:
    """Move the counter in ``session``'s transaction. Plain Core on the session's connection,
    so it may run inside a flush (the users' hook does)."""
    connection = session.connection()
    bump = update(_TABLE).where(_TABLE.c.name == name).values(generation=_TABLE.c.generation + 1)
    if connection.execute(bump).rowcount:
        return
    # The migration makes the row; if someone emptied the table, make it again. Another
    # transaction may be doing the same: then its row stands and the retry moves it.
    try:
        with connection.begin_nested():
            connection.execute(insert(_TABLE).values(name=name, generation=1))
    except IntegrityError:
        connection.execute(bump)
