"""The queries. Nothing else in identity builds SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from identity.models import (
    AuditEvent,
    AuthorizationCode,
    BrowserSession,
    Client,
    Consent,
    DeviceAuthorization,
    OneTimeToken,
    OutboxMessage,
    RefreshToken,
    RevokedToken,
    User,
    VerificationChallenge,
)


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert_ignoring_duplicates(session: Session, model: Any, values: dict[str, Any]) -> None:
    # Two racing requests may write the same key; the loser must not turn into a 500.
    insert = postgresql_insert if _is_postgresql(session) else sqlite_insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing())


# -- clients ------------------------------------------------------------------------------


def get_client(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


def list_clients(session: Session) -> Sequence[Client]:
    return session.scalars(select(Client).order_by(Client.created_at, Client.client_id)).all()


def add_client(session: Session, client: Client) -> None:
    session.add(client)
    session.flush()


def delete_client(session: Session, client_id: str) -> bool:
    result = session.execute(delete(Client).where(Client.client_id == client_id))
    return int(result.rowcount) > 0  # type: ignore[attr-defined]


# -- the denylist ---------------------------------------------------------------------------


def add_revoked_token(session: Session, jti: str, expires_at: datetime) -> None:
    _insert_ignoring_duplicates(session, RevokedToken, {"jti": jti, "expires_at": expires_at})


def is_token_revoked(session: Session, jti: str) -> bool:
    return bool(session.scalar(select(exists().where(RevokedToken.jti == jti))))


def live_revoked_tokens(session: Session, now: datetime) -> Sequence[tuple[str, datetime]]:
    rows = session.execute(
        select(RevokedToken.jti, RevokedToken.expires_at).where(RevokedToken.expires_at > now)
    )
    return [(jti, expires_at) for jti, expires_at in rows]


def prune_revoked_tokens(session: Session, now: datetime) -> int:
    result = session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- audit ----------------------------------------------------------------------------------


def add_audit_event(session: Session, event: AuditEvent) -> None:
    session.add(event)


def list_audit_events(
    session: Session,
    *,
    subject: str | None = None,
    client_id: str | None = None,
    type_prefix: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
    newest_first: bool = False,
) -> Sequence[AuditEvent]:
    order = AuditEvent.id.desc() if newest_first else AuditEvent.id
    query = select(AuditEvent).order_by(order).limit(limit)
    if subject is not None:
        query = query.where(AuditEvent.subject == subject)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    if type_prefix is not None:
        query = query.where(AuditEvent.type.startswith(type_prefix, autoescape=True))
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if after_id is not None:
        query = query.where(AuditEvent.id > after_id)
    return session.scalars(query).all()


def prune_audit_events(session: Session, before: datetime) -> int:
    result = session.execute(delete(AuditEvent).where(AuditEvent.occurred_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- users ----------------------------------------------------------------------------------


def get_user(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def get_user_by_email(session: Session, email: str, *, for_update: bool = False) -> User | None:
    query = select(User).where(User.email == email)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def add_user(session: Session, user: User) -> None:
    session.add(user)
    session.flush()


def list_users(session: Session, limit: int = 1000) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.created_at, User.id).limit(limit)).all()


def delete_user(session: Session, user: User) -> None:
    session.delete(user)
    session.flush()


# -- browser sessions -----------------------------------------------------------------------


def get_browser_session(session: Session, session_id: str) -> BrowserSession | None:
    return session.get(BrowserSession, session_id)


def add_browser_session(session: Session, browser_session: BrowserSession) -> None:
    session.add(browser_session)
    session.flush()


def delete_browser_session(session: Session, session_id: str) -> None:
    session.execute(delete(BrowserSession).where(BrowserSession.id == session_id))


def delete_user_sessions(session: Session, user_id: uuid.UUID, *, keep: str | None = None) -> int:
    query = delete(BrowserSession).where(BrowserSession.user_id == user_id)
    if keep is not None:
        query = query.where(BrowserSession.id != keep)
    return int(session.execute(query).rowcount)  # type: ignore[attr-defined]


def list_user_sessions(
    session: Session, user_id: uuid.UUID, now: datetime
) -> Sequence[BrowserSession]:
    query = (
        select(BrowserSession)
        .where(BrowserSession.user_id == user_id, BrowserSession.expires_at > now)
        .order_by(BrowserSession.last_seen_at.desc())
    )
    return session.scalars(query).all()


def prune_browser_sessions(session: Session, now: datetime) -> int:
    result = session.execute(delete(BrowserSession).where(BrowserSession.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- verification challenges and one-time tokens -------------------------------------------


def add_challenge(session: Session, challenge: VerificationChallenge) -> None:
    session.add(challenge)
    session.flush()


def delete_challenges(session: Session, user_id: uuid.UUID) -> None:
    session.execute(delete(VerificationChallenge).where(VerificationChallenge.user_id == user_id))


def live_challenge(
    session: Session, user_id: uuid.UUID, now: datetime
) -> VerificationChallenge | None:
    query = (
        select(VerificationChallenge)
        .where(
            VerificationChallenge.user_id == user_id,
            VerificationChallenge.used_at.is_(None),
            VerificationChallenge.expires_at > now,
        )
        .order_by(VerificationChallenge.id.desc())
        .limit(1)
    )
    return session.scalars(query).one_or_none()


def challenge_by_link(session: Session, link_digest: str) -> VerificationChallenge | None:
    query = select(VerificationChallenge).where(VerificationChallenge.link_digest == link_digest)
    return session.scalars(query).one_or_none()


def take_challenge_attempt(session: Session, challenge_id: int, max_attempts: int) -> bool:
    """Count one try, atomically; False when the challenge has no tries left (or is used)."""
    result = session.execute(
        update(VerificationChallenge)
        .where(
            VerificationChallenge.id == challenge_id,
            VerificationChallenge.attempts < max_attempts,
            VerificationChallenge.used_at.is_(None),
        )
        .values(attempts=VerificationChallenge.attempts + 1)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def use_challenge(session: Session, challenge_id: int, now: datetime) -> bool:
    """Mark used; False when another request used it first."""
    result = session.execute(
        update(VerificationChallenge)
        .where(VerificationChallenge.id == challenge_id, VerificationChallenge.used_at.is_(None))
        .values(used_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def add_one_time_token(session: Session, token: OneTimeToken) -> None:
    session.add(token)
    session.flush()


def get_one_time_token(session: Session, digest: str, purpose: str) -> OneTimeToken | None:
    token = session.get(OneTimeToken, digest)
    return token if token is not None and token.purpose == purpose else None


def use_one_time_token(session: Session, digest: str, now: datetime) -> bool:
    """Spend a token atomically; False when it was spent, expired or replaced."""
    result = session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.digest == digest,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .values(used_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def delete_one_time_tokens(session: Session, user_id: uuid.UUID, purpose: str) -> None:
    session.execute(
        delete(OneTimeToken).where(OneTimeToken.user_id == user_id, OneTimeToken.purpose == purpose)
    )


def prune_one_time_secrets(session: Session, now: datetime) -> None:
    session.execute(delete(OneTimeToken).where(OneTimeToken.expires_at <= now))
    session.execute(delete(VerificationChallenge).where(VerificationChallenge.expires_at <= now))


# -- the mail outbox ------------------------------------------------------------------------


def add_outbox_message(session: Session, message: OutboxMessage) -> None:
    session.add(message)
    session.flush()


def claim_due_messages(
    session: Session, now: datetime, *, limit: int, claim_for: timedelta
) -> Sequence[OutboxMessage]:
    """Claim up to ``limit`` due messages for ``claim_for``, in one UPDATE ... RETURNING, so
    two senders can never claim the same message. On PostgreSQL the candidate rows are
    locked with SKIP LOCKED, so concurrent senders take different ones instead of waiting;
    the claim (``claimed_until``) also lets a crashed sender's messages go out later."""
    due = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
            (OutboxMessage.claimed_until.is_(None)) | (OutboxMessage.claimed_until < now),
        )
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    if _is_postgresql(session):
        due = due.with_for_update(skip_locked=True)
    claim = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + claim_for)
        .returning(OutboxMessage)
        .execution_options(synchronize_session=False)
    )
    return sorted(session.scalars(claim).all(), key=lambda message: message.id)


def mark_message_sent(session: Session, message_id: int, now: datetime) -> None:
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(sent_at=now, claimed_until=None, text_body="", html_body="", last_error=None)
    )


def mark_message_failed(
    session: Session, message_id: int, error: str, next_attempt_at: datetime
) -> None:
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(
            attempts=OutboxMessage.attempts + 1,
            last_error=error[:500],
            next_attempt_at=next_attempt_at,
            claimed_until=None,
        )
    )


def outbox_backlog(session: Session) -> int:
    query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    return int(session.scalar(query) or 0)


def get_user_session_by_public_id(
    session: Session, user_id: uuid.UUID, public_id: str
) -> BrowserSession | None:
    query = select(BrowserSession).where(
        BrowserSession.user_id == user_id, BrowserSession.public_id == public_id
    )
    return session.scalars(query).one_or_none()


def live_one_time_token(
    session: Session, user_id: uuid.UUID, purpose: str, now: datetime
) -> OneTimeToken | None:
    query = (
        select(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .order_by(OneTimeToken.created_at.desc())
        .limit(1)
    )
    return session.scalars(query).one_or_none()


# -- refresh tokens (protocol/refresh.py) ----------------------------------------------------


_REFRESH_FAMILY_LOCKS = 0x52465446  # the advisory-lock namespace of refresh families


def lock_refresh_family(session: Session, family_id: uuid.UUID) -> None:
    """Serialize writers of one family until the transaction ends. Racing refreshes and
    revocations would otherwise deadlock on PostgreSQL (rows and denylist inserts locked in
    different orders); SQLite already lets one writer at a time."""
    if _is_postgresql(session):
        key = int.from_bytes(family_id.bytes[:4], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(_REFRESH_FAMILY_LOCKS, key)))


def add_refresh_token(session: Session, token: RefreshToken) -> None:
    session.add(token)
    session.flush()


def get_refresh_token(
    session: Session, digest: str, *, fresh: bool = False, for_update: bool = False
) -> RefreshToken | None:
    """``fresh`` re-reads a row this session already holds (another request may have changed
    it); ``for_update`` locks it on PostgreSQL until the transaction ends."""
    query = select(RefreshToken).where(RefreshToken.digest == digest)
    if fresh or for_update:
        query = query.execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def claim_refresh_rotation(session: Session, digest: str, now: datetime) -> bool:
    """Mark a token rotated atomically: exactly one of any number of racing refreshes wins."""
    result = session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.digest == digest,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(rotated_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def set_refresh_successor(session: Session, digest: str, successor_digest: str) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.digest == digest)
        .values(successor_digest=successor_digest)
    )


def set_refresh_access(session: Session, digest: str, jti: str, expires_at: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.digest == digest)
        .values(access_jti=jti, access_expires_at=expires_at)
    )


def refresh_family_access_tokens(
    session: Session, family_id: uuid.UUID, now: datetime
) -> Sequence[tuple[str, datetime]]:
    """(jti, expiry) of the family's access tokens that have not expired yet."""
    rows = session.execute(
        select(RefreshToken.access_jti, RefreshToken.access_expires_at).where(
            RefreshToken.family_id == family_id,
            RefreshToken.access_jti.is_not(None),
            RefreshToken.access_expires_at > now,
        )
    )
    return [(jti, expires_at) for jti, expires_at in rows if jti and expires_at]


def revoke_refresh_family(session: Session, family_id: uuid.UUID, now: datetime) -> int:
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def refresh_family_owner(session: Session, family_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """(user_id, client_id) of a refresh-token family."""
    row = session.execute(
        select(RefreshToken.user_id, RefreshToken.client_id)
        .where(RefreshToken.family_id == family_id)
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def live_refresh_families(
    session: Session, user_id: uuid.UUID, client_id: str | None, now: datetime
) -> Sequence[uuid.UUID]:
    query = select(RefreshToken.family_id).where(
        RefreshToken.user_id == user_id,
        RefreshToken.revoked_at.is_(None),
        RefreshToken.family_expires_at > now,
    )
    if client_id is not None:
        query = query.where(RefreshToken.client_id == client_id)
    return list(session.scalars(query.distinct()))


def live_refresh_tokens_with_client_names(
    session: Session, user_id: uuid.UUID, now: datetime
) -> Sequence[tuple[RefreshToken, str]]:
    """Every token of the user's live families, oldest first, with its client's name."""
    query = (
        select(RefreshToken, Client.name)
        .join(Client, Client.client_id == RefreshToken.client_id)
        .where(
            RefreshToken.user_id == user_id,
            RefreshToken.revoked_at.is_(None),
            RefreshToken.family_expires_at > now,
        )
        .order_by(RefreshToken.created_at)
    )
    return [(row, name) for row, name in session.execute(query)]


# -- consents (protocol/authorize.py) -----------------------------------------------------------


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


# -- device authorizations (protocol/device.py) -------------------------------------------------

# Imported here rather than at the top so this section stays one self-contained edit.


def add_device_authorization(session: Session, values: dict[str, Any]) -> bool:
    """Insert a device authorization; False when its user code is taken (the caller retries)."""
    insert = postgresql_insert if _is_postgresql(session) else sqlite_insert
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
) -> DeviceAuthorization | None:
    """Approve or deny a pending, live authorization atomically; None if it is not one."""
    decide = (
        update(DeviceAuthorization)
        .where(
            DeviceAuthorization.user_code == user_code,
            DeviceAuthorization.status == "pending",
            DeviceAuthorization.expires_at > now,
        )
        .values(status=status, user_id=user_id, auth_time=auth_time)
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
