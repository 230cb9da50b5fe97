"""The queries of clients."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from identity.models import Client
from identity.repositories.cache_generations import bump_cache_generation

__all__ = ["add_client", "delete_client", "get_client", "list_clients"]


def get_client(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


def list_clients(session: Session) -> Sequence[Client]:
    return session.scalars(select(Client).order_by(Client.created_at, Client.client_id)).all()


def add_client(session: Session, client: Client) -> None:
    session.add(client)
    session.flush()


def delete_client(session: Session, client_id: str) -> bool:
    result = session.execute(delete(Client).where(Client.client_id == client_id))
    # Every instance's client cache drops its copy within IDENTITY_CACHE_CHECK_SECONDS.
    bump_cache_generation(session, "clients")
    return int(result.rowcount) > 0  # type: ignore[attr-defined]
