"""The refresh-token grant: rotation on every use and reuse detection per family (a family
is the chain of tokens rotated from one login), and refresh tokens at revocation and
introspection."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, TokenMixin, grants
from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.audit import RequestContext
from identity.models import Client, RefreshToken, User, secret_digest, utcnow
from identity.protocol.grants import IssuingGrant, within_grant
from identity.protocol.refresh_tokens import RefreshParent, RefreshTokens, successor_value
from identity.protocol.server import IdentityServer, current_session
from identity.protocol.tokens import Authentication


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
    row = server.refresh_tokens.find(current_session(), raw)
    return RefreshTokenView(row) if row is not None else None


def revoke_refresh_token(
    server: IdentityServer, view: RefreshTokenView, context: RequestContext | None
) -> None:
    """RFC 7009 for a refresh token: the whole family goes, with its access tokens."""
    server.families.revoke_family(
        current_session(), view.row.family_id, reason="revoked", context=context
    )


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
    _user: User | None = None

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
        within_grant(list(row.audience), self.request)
        user = repositories.get_user(session, row.user_id)
        if user is None or not user.is_active:
            return None
        # Held for authenticate_user: the session's identity map keeps rows only while
        # something refers to them, and without this it read the user a second time.
        self._user = user
        # The conditional update alone picks one winner; the family lock also keeps losers
        # (which may revoke the family) from deadlocking each other on PostgreSQL.
        repositories.lock_refresh_family(session, row.family_id)
        successor_digest = secret_digest(successor_value(refresh_token))
        if repositories.claim_refresh_rotation(session, row.digest, now, successor_digest):
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
        self.server.families.revoke_family(
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
        user = self._user
        if user is None or user.id != refresh_token.row.user_id:
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
        return Authentication(row.auth_time, tuple(row.amr), row.session_id, row.idp)

    def granted_audience(self) -> list[str]:
        # The family's: every resource of the original grant (RFC 8707 §2.2).
        assert self._parent is not None
        return list(self._parent.row.audience)

    def refresh_family(self) -> tuple[Any, Any] | None:
        assert self._parent is not None
        return self._parent.row.family_id, self._parent

    def issue_token(self, user: User, refresh_token: RefreshTokenView) -> dict[str, Any]:
        """Authlib's hook for the refresh grant's token: a grace retry repeats the successor
        already issued (with its scope) and gets only a new access token."""
        successor = self._grace_successor
        if successor is None:
            token: dict[str, Any] = super().issue_token(user, refresh_token)
            return token
        assert self._parent is not None
        token = self.generate_token(user=user, scope=successor.scope, include_refresh_token=False)
        self._service.reattach_access(current_session(), successor, self.request.issued[-1])
        token["refresh_token"] = successor_value(self._parent.raw)
        return token
