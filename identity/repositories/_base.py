"""What several query modules share: the backend test and the insert that ignores duplicates."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_ignoring_duplicates(session: Session, model: Any, values: dict[str, Any]) -> None:
    # Two racing requests may write the same key; the loser must not turn into a 500.
    insert = postgresql_insert if is_postgresql(session) else sqlite_insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing())
