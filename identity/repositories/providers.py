"""The queries of upstream identity providers (see identity.upstream_providers)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.models import FederatedIdentity, UpstreamProvider
from identity.repositories.cache_generations import bump_cache_generation

__all__ = [
    "PROVIDERS_GENERATION",
    "add_upstream_provider",
    "count_links_of_provider",
    "delete_upstream_provider",
    "get_upstream_provider",
    "list_upstream_providers",
    "upstream_providers_changed",
]

# The cache generation every instance's provider list is filled under.
PROVIDERS_GENERATION = "upstream_providers"


def get_upstream_provider(session: Session, name: str) -> UpstreamProvider | None:
    return session.get(UpstreamProvider, name)


def list_upstream_providers(session: Session) -> Sequence[UpstreamProvider]:
    # Oldest first: the order the sign-in page shows its buttons in stays put as more come.
    query = select(UpstreamProvider).order_by(UpstreamProvider.created_at, UpstreamProvider.name)
    return session.scalars(query).all()


def add_upstream_provider(session: Session, provider: UpstreamProvider) -> bool:
    """Store a new provider; False when its name is taken (also by a racing add)."""
    if session.get(UpstreamProvider, provider.name) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(provider)
    except IntegrityError:
        return False
    upstream_providers_changed(session)
    return True


def upstream_providers_changed(session: Session) -> None:
    """Flush the changes made to provider rows and move the generation in the same
    transaction, so every instance re-reads its list within IDENTITY_CACHE_CHECK_SECONDS."""
    session.flush()
    bump_cache_generation(session, PROVIDERS_GENERATION)


def delete_upstream_provider(session: Session, name: str) -> bool:
    """Delete the provider and (by the foreign key's cascade) every link to it."""
    result = session.execute(delete(UpstreamProvider).where(UpstreamProvider.name == name))
    bump_cache_generation(session, PROVIDERS_GENERATION)
    return int(result.rowcount) > 0  # type: ignore[attr-defined]


def count_links_of_provider(session: Session, name: str) -> int:
    """How many local accounts are linked to an account at provider ``name``."""
    query = select(func.count()).where(FederatedIdentity.provider == name)
    return int(session.scalar(query) or 0)
