"""Refresh tokens: rotation on every use, reuse detection per family, and the grant.

A family is the chain of tokens rotated from one login. Only SHA-256 digests are stored; a
successor's raw value is derived from its parent's, so a grace-period retry can answer with
the same successor without any raw secret at rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, TokenMixin, grants
from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.audit import RequestContext
from identity.config import Settings
from identity.denylist import Denylist
from identity.models import Client, RefreshToken, User, secret_digest, utcnow
from identity.protocol.grants import IssuingGrant
from identity.protocol.server import IdentityServer, current_session
from identity.protocol.tokens import Authentication, IssuedToken

_SUCCESSOR_LABEL = b"identity refresh successor"


def successor_value(parent_raw: str) -> str:
    """The raw value of the token that replaces ``parent_raw``: HMAC-derived, so only a
    holder of the parent can compute it."""
    mac = hmac.new(parent_raw.encode(), _SUCCESSOR_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@dataclass(frozen=True)
class RefreshParent:
    """The token being rotated with the raw value the client presented (the successor's
    value is derived from it)."""

    row: RefreshToken
    raw: str


class RefreshTokens:
    """Issue, find and revoke refresh tokens."""

    def __init__(self, settings: Settings, denylist: Denylist) -> None:
        self.settings = settings
        self.denylist = denylist

    def should_issue(self, client: Client, scope: str) -> bool:
        if "offline_access" in scope.split():
            return True
        return not client.is_public and client.refresh_without_offline_access

    def issue(
        self,
        session: Session,
        *,
        client: Client,
        user_id: uuid.UUID,
        scope: str,
        audience: list[str],
        authentication: Authentication,
        access: IssuedToken,
        family_id: uuid.UUID | None = None,
        parent: RefreshParent | None = None,
    ) -> str:
        """Store a new token (its digest only) and return its raw value."""
        now = utcnow()
        if parent is None:
            raw = secrets.token_urlsafe(32)
            family_expires_at = now + timedelta(seconds=self.settings.refresh_token_absolute_ttl)
        else:
            raw = successor_value(parent.raw)
            family_expires_at = parent.row.family_expires_at
            family_id = parent.row.family_id
        row = RefreshToken(
            digest=secret_digest(raw),
            family_id=family_id or uuid.uuid4(),
            parent_digest=parent.row.digest if parent else None,
            client_id=client.client_id,
            user_id=user_id,
            scope=scope,
            audience=list(audience),
            auth_time=authentication.auth_time,
            amr=list(authentication.amr),
            session_id=authentication.session_id,
            created_at=now,
            expires_at=min(
                now + timedelta(seconds=self.settings.refresh_token_idle_ttl), family_expires_at
            ),
            family_expires_at=family_expires_at,
            access_jti=access.jti,
            access_expires_at=datetime.fromtimestamp(access.claims["exp"], UTC),
        )
        repositories.add_refresh_token(session, row)
        if parent is not None:
            repositories.set_refresh_successor(session, parent.row.digest, row.digest)
        return raw

    def reattach_access(self, session: Session, row: RefreshToken, access: IssuedToken) -> None:
        """A grace retry got a new access token for an existing successor: deny the one the
        lost response carried, so the family still tracks every live access token."""
        if row.access_jti and row.access_expires_at and row.access_expires_at > utcnow():
            self.denylist.revoke(session, row.access_jti, row.access_expires_at)
        expires_at = datetime.fromtimestamp(access.claims["exp"], UTC)
        repositories.set_refresh_access(session, row.digest, access.jti, expires_at)

    def find(self, session: Session, raw: str) -> RefreshToken | None:
        if not raw or len(raw) > 512:
            return None
        return repositories.get_refresh_token(session, secret_digest(raw))

    def revoke_family(
        self,
        session: Session,
        family_id: uuid.UUID,
        *,
        reason: str,
        context: RequestContext | None,
    ) -> int:
        """Revoke every live token of the family and deny its unexpired access tokens."""
        repositories.lock_refresh_family(session, family_id)
        now = utcnow()
        for jti, expires_at in repositories.refresh_family_access_tokens(session, family_id, now):
            self.denylist.revoke(session, jti, expires_at)
        revoked = repositories.revoke_refresh_family(session, family_id, now)
        if revoked:
            owner = repositories.refresh_family_owner(session, family_id)
            audit.record(
                session,
                "refresh.family_revoked",
                context=context,
                subject=str(owner[0]) if owner else None,  # so the owner sees it in /me/events
                client_id=owner[1] if owner else None,
                detail={"reason": reason, "family_id": str(family_id), "tokens": revoked},
            )
        return revoked

    def revoke_for_user(
        self,
        session: Session,
        user_id: uuid.UUID,
        client_id: str | None = None,
        *,
        reason: str = "user",
        context: RequestContext | None = None,
    ) -> int:
        """Revoke every live family of the user (of one client when given); return how many
        tokens were revoked. For logout everywhere, password reset, disabling, consent."""
        families = repositories.live_refresh_families(session, user_id, client_id, utcnow())
        # One order for everyone, so two of these never wait on each other's families.
        families = sorted(families)
        return sum(
            self.revoke_family(session, family, reason=reason, context=context)
            for family in families
        )


@dataclass
class RefreshTokenView(TokenMixin):  # type: ignore[misc]
    """A refresh-token row seen through Authlib's token interface."""

    row: RefreshToken
    token_type: str = "refresh_token"  # noqa: S105 (a type name, not a secret)

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def subject(self) -> str:
        return str(self.row.user_id)

    def check_client(self, client: Client) -> bool:
        return self.row.client_id == client.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return int((self.row.expires_at - self.row.created_at).total_seconds())

    def is_expired(self) -> bool:
        now = utcnow()
        return self.row.expires_at <= now or self.row.family_expires_at <= now

    def is_revoked(self) -> bool:
        # A rotated token is spent: presenting it again is reuse, never a live token.
        return self.row.revoked_at is not None or self.row.rotated_at is not None


def find_refresh_token(server: IdentityServer, raw: str) -> RefreshTokenView | None:
    """The refresh token ``raw`` if this server issued it (live or not); else None."""
    service: RefreshTokens | None = server.refresh_tokens
    row = service.find(current_session(), raw) if service is not None else None
    return RefreshTokenView(row) if row is not None else None


def revoke_refresh_token(
    server: IdentityServer, view: RefreshTokenView, context: RequestContext | None
) -> None:
    """RFC 7009 for a refresh token: the whole family goes, with its access tokens."""
    service: RefreshTokens = server.refresh_tokens
    service.revoke_family(current_session(), view.row.family_id, reason="revoked", context=context)


def introspect_refresh_token(view: RefreshTokenView) -> dict[str, Any]:
    row = view.row
    return {
        "active": True,
        "token_type": "refresh_token",
        "scope": row.scope,
        "client_id": row.client_id,
        "sub": str(row.user_id),
        "exp": int(row.expires_at.timestamp()),
        "iat": int(row.created_at.timestamp()),
    }


class RefreshTokenGrant(IssuingGrant, grants.RefreshTokenGrant):  # type: ignore[misc]
    """RFC 6749 §6 with rotation on every use (OAuth 2.1 §4.3.1) and RFC 9700 reuse
    detection: a rotated token presented again revokes its whole family."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    _parent: RefreshParent | None = None
    # Set on a grace retry: the successor already issued, which this response repeats.
    _grace_successor: RefreshToken | None = None

    @property
    def _service(self) -> RefreshTokens:
        service: RefreshTokens = self.server.refresh_tokens
        return service

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshTokenView | None:
        session, now = current_session(), utcnow()
        row = self._service.find(session, refresh_token)
        if row is None or row.client_id != self.request.client.client_id:
            return None
        if row.revoked_at is not None or row.expires_at <= now or row.family_expires_at <= now:
            return None
        view = RefreshTokenView(row)
        # Refuse before the claim: a refused request must not spend the client's token.
        self._validate_token_scope(view)
        user = repositories.get_user(session, row.user_id)
        if user is None or not user.is_active:
            return None
        # The conditional update alone picks one winner; the family lock also keeps losers
        # (which may revoke the family) from deadlocking each other on PostgreSQL.
        repositories.lock_refresh_family(session, row.family_id)
        if repositories.claim_refresh_rotation(session, row.digest, now):
            self._parent = RefreshParent(row, refresh_token)
            return view
        # Lost the claim: re-read what the winner (or an earlier request) committed.
        row = repositories.get_refresh_token(session, row.digest, fresh=True)
        if row is None or row.revoked_at is not None:
            return None
        successor = self._grace_successor_for(session, row, refresh_token, now)
        if successor is not None:
            self._parent, self._grace_successor = RefreshParent(row, refresh_token), successor
            return RefreshTokenView(row)
        self._service.revoke_family(
            session, row.family_id, reason="reuse", context=self.request.context
        )
        audit.record(
            session,
            "refresh.reuse_detected",
            context=self.request.context,
            outcome="failure",
            subject=str(row.user_id),
            client_id=row.client_id,
            detail={"family_id": str(row.family_id)},
        )
        return None

    def _grace_successor_for(
        self, session: Session, row: RefreshToken, raw: str, now: datetime
    ) -> RefreshToken | None:
        """The successor to repeat when this is a retry of the family's newest rotation
        within the grace period; None means reuse."""
        grace = self.server.refresh_tokens.settings.refresh_grace_seconds
        if grace <= 0 or row.rotated_at is None or row.successor_digest is None:
            return None
        if now - row.rotated_at > timedelta(seconds=grace):
            return None
        expected = secret_digest(successor_value(raw))
        if not hmac.compare_digest(expected, row.successor_digest):
            return None
        # Locked: concurrent retries take turns re-pointing its access token.
        successor = repositories.get_refresh_token(session, expected, for_update=True)
        if successor is None or successor.rotated_at is not None or successor.revoked_at:
            return None
        return successor

    def authenticate_user(self, refresh_token: RefreshTokenView) -> User:
        user = repositories.get_user(current_session(), refresh_token.row.user_id)
        if user is None or not user.is_active:
            raise InvalidGrantError("The user of this refresh token is not active.")
        return user

    def revoke_old_credential(self, refresh_token: RefreshTokenView) -> None:
        """Nothing left to do: the claim rotated the token in this same transaction, before
        the successor was issued, so issue, save and revoke commit (or fail) together."""

    def authentication(self) -> Authentication | None:
        assert self._parent is not None
        row = self._parent.row
        return Authentication(row.auth_time, tuple(row.amr), row.session_id)

    def audience(self) -> list[str]:
        assert self._parent is not None
        return list(self._parent.row.audience)

    def refresh_family(self) -> tuple[Any, Any] | None:
        assert self._parent is not None
        return self._parent.row.family_id, self._parent

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        successor = self._grace_successor
        if successor is None:
            return super().generate_token(
                user=user,
                scope=scope,
                grant_type=grant_type,
                expires_in=expires_in,
                include_refresh_token=include_refresh_token,
            )
        # A grace retry: the same successor (and its scope) with a new access token.
        assert self._parent is not None
        token = super().generate_token(
            user=user, scope=successor.scope, grant_type=grant_type, include_refresh_token=False
        )
        self._service.reattach_access(current_session(), successor, self.request.issued[-1])
        token["refresh_token"] = successor_value(self._parent.raw)
        return token
