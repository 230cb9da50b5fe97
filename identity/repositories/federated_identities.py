"""The queries of federated identities: the links of local users to upstream accounts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from identity.models import FederatedIdentity, UpstreamProvider

__all__ = [
    "add_federated_identity",
    "count_sign_in_links",
    "delete_federated_identities",
    "get_federated_identity",
    "links_of",
]


def get_federated_identity(
    session: Session, provider: str, subject: str, *, for_update: bool = False
) -> FederatedIdentity | None:
    """The link of the upstream account ``subject`` at ``provider``, if any."""
    query = select(FederatedIdentity).where(
        FederatedIdentity.provider == provider, FederatedIdentity.subject == subject
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def add_federated_identity(session: Session, link: FederatedIdentity) -> None:
    session.add(link)
    session.flush()


def links_of(
    session: Session, user_id: uuid.UUID
) -> Sequence[tuple[FederatedIdentity, UpstreamProvider]]:
    """The user's links with their providers, oldest first."""
    query = (
        select(FederatedIdentity, UpstreamProvider)
        .join(UpstreamProvider, UpstreamProvider.name == FederatedIdentity.provider)
        .where(FederatedIdentity.user_id == user_id)
        .order_by(FederatedIdentity.created_at, FederatedIdentity.id)
    )
    return [(link, provider) for link, provider in session.execute(query).all()]


def count_sign_in_links(
    session: Session, user_id: uuid.UUID, *, except_provider: str | None = None
) -> int:
    """How many of the user's links can sign in now (their provider is enabled), leaving
    out those to ``except_provider``."""
    query = (
        select(func.count())
        .select_from(FederatedIdentity)
        .join(UpstreamProvider, UpstreamProvider.name == FederatedIdentity.provider)
        .where(FederatedIdentity.user_id == user_id, UpstreamProvider.enabled.is_(True))
    )
    if except_provider is not None:
        query = query.where(FederatedIdentity.provider != except_provider)
    return int(session.scalar(query) or 0)


def delete_federated_identities(session: Session, user_id: uuid.UUID, provider: str) -> int:
    """Remove the user's links to ``provider``; how many there were."""
    result = session.execute(
        delete(FederatedIdentity).where(
            FederatedIdentity.user_id == user_id, FederatedIdentity.provider == provider
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
