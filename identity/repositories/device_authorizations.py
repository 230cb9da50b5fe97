"""The queries of device authorizations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from identity.models import DeviceAuthorization
from identity.repositories._base import is_postgresql

__all__ = [
    "add_device_authorization",
    "decide_device_authorization",
    "get_device_authorization",
    "pending_device_authorization",
    "prune_device_authorizations",
    "use_device_authorization",
]


# Imported here rather than at the top so this section stays one self-contained edit.


def add_device_authorization(session: Session, values: dict[str, Any]) -> bool:
    """Insert a device authorization; False when its user code is taken (the caller retries)."""
    insert = postgresql_insert if is_postgresql(session) else sqlite_insert
    # RETURNING, not rowcount: an ORM insert on PostgreSQL reports rowcount -1.
    added = session.scalar(
        insert(DeviceAuthorization)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(DeviceAuthorization.device_code_digest)
    )
    return added is not None


def get_device_authorization(
    session: Session, device_code_digest: str, *, for_update: bool = False
) -> DeviceAuthorization | None:
    # FOR UPDATE: two concurrent polls of one device code take turns (PostgreSQL).
    query = select(DeviceAuthorization).where(
        DeviceAuthorization.device_code_digest == device_code_digest
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def pending_device_authorization(
    session: Session, user_code: str, now: datetime
) -> DeviceAuthorization | None:
    query = select(DeviceAuthorization).where(
        DeviceAuthorization.user_code == user_code,
        DeviceAuthorization.status == "pending",
        DeviceAuthorization.expires_at > now,
    )
    return session.scalars(query).one_or_none()


def decide_device_authorization(
    session: Session,
    user_code: str,
    now: datetime,
    *,
    status: str,
    user_id: uuid.UUID,
    auth_time: datetime,
    amr: list[str] | None = None,
    session_id: str | None = None,
    idp: str | None = None,
) -> DeviceAuthorization | None:
    """Approve or deny a pending, live authorization atomically; None if it is not one.
    ``auth_time``, ``amr``, ``idp`` and ``session_id`` say how the deciding person signed in."""
    decide = (
        update(DeviceAuthorization)
        .where(
            DeviceAuthorization.user_code == user_code,
            DeviceAuthorization.status == "pending",
            DeviceAuthorization.expires_at > now,
        )
        .values(
            status=status,
            user_id=user_id,
            auth_time=auth_time,
            amr=list(amr or []),
            idp=idp,
            session_id=session_id,
        )
        .returning(DeviceAuthorization)
        .execution_options(synchronize_session=False)
    )
    return session.scalars(decide).one_or_none()


def use_device_authorization(session: Session, device_code_digest: str) -> bool:
    """Spend an approved authorization; False when another poll spent it first."""
    result = session.execute(
        update(DeviceAuthorization)
        .where(
            DeviceAuthorization.device_code_digest == device_code_digest,
            DeviceAuthorization.status == "approved",
        )
        .values(status="used")
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def prune_device_authorizations(session: Session, now: datetime) -> int:
    result = session.execute(
        delete(DeviceAuthorization).where(DeviceAuthorization.expires_at <= now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
