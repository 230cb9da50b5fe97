"""The queries of consents."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from identity.models import AuthorizationCode, Client, Consent

__all__ = [
    "add_authorization_code",
    "code_nonce_exists",
    "delete_consent",
    "get_authorization_code",
    "get_consent",
    "list_consents",
    "save_consent",
    "use_authorization_code",
]


def get_consent(session: Session, user_id: uuid.UUID, client_id: str) -> Consent | None:
    return session.get(Consent, (user_id, client_id))


def save_consent(session: Session, user_id: uuid.UUID, client_id: str, scope: str) -> None:
    """Remember the scopes a user allowed a client, adding to what was allowed before."""
    consent = session.get(Consent, (user_id, client_id))
    if consent is None:
        session.add(Consent(user_id=user_id, client_id=client_id, scope=scope))
    else:
        merged = dict.fromkeys([*consent.scope.split(), *scope.split()])
        consent.scope = " ".join(merged)
    session.flush()


def list_consents(session: Session, user_id: uuid.UUID) -> Sequence[tuple[Consent, Client]]:
    query = (
        select(Consent, Client)
        .join(Client, Client.client_id == Consent.client_id)
        .where(Consent.user_id == user_id)
        .order_by(Consent.granted_at)
    )
    return [(consent, client) for consent, client in session.execute(query)]


def delete_consent(session: Session, user_id: uuid.UUID, client_id: str) -> bool:
    result = session.execute(
        delete(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
    )
    return int(result.rowcount) > 0  # type: ignore[attr-defined]


def add_authorization_code(session: Session, code: AuthorizationCode) -> None:
    session.add(code)
    session.flush()


def get_authorization_code(session: Session, digest: str) -> AuthorizationCode | None:
    return session.get(AuthorizationCode, digest)


def use_authorization_code(session: Session, digest: str, now: datetime) -> bool:
    """Spend a code atomically: exactly one of any number of racing redemptions wins."""
    result = session.execute(
        update(AuthorizationCode)
        .where(
            AuthorizationCode.digest == digest,
            AuthorizationCode.used_at.is_(None),
            AuthorizationCode.expires_at > now,
        )
        .values(used_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def code_nonce_exists(session: Session, client_id: str, nonce: str, now: datetime) -> bool:
    query = select(
        exists().where(
            AuthorizationCode.client_id == client_id,
            AuthorizationCode.nonce == nonce,
            AuthorizationCode.expires_at > now,
        )
    )
    return bool(session.scalar(query))
