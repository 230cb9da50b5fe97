"""Refresh tokens: issuing, finding and re-pointing them. Only SHA-256 digests are stored; a
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

from sqlalchemy.orm import Session

from identity import repositories
from identity.config import Settings
from identity.denylist import Denylist
from identity.models import Client, RefreshToken, secret_digest, utcnow
from identity.protocol.tokens import Authentication, IssuedToken
from identity.token_families import TokenFamilies

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

    def __init__(self, settings: Settings, denylist: Denylist, families: TokenFamilies) -> None:
        self.settings = settings
        self.denylist = denylist
        self.families = families

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
        values = dict(
            digest=secret_digest(raw),
            family_id=family_id or uuid.uuid4(),
            parent_digest=parent.row.digest if parent else None,
            client_id=client.client_id,
            user_id=user_id,
            scope=scope,
            audience=list(audience),
            auth_time=authentication.auth_time,
            amr=list(authentication.amr),
            idp=authentication.idp,
            session_id=authentication.session_id,
            created_at=now,
            expires_at=min(
                now + timedelta(seconds=self.settings.refresh_token_idle_ttl), family_expires_at
            ),
            family_expires_at=family_expires_at,
            access_jti=access.jti,
            access_expires_at=datetime.fromtimestamp(access.claims["exp"], UTC),
        )
        # A parent's successor digest was recorded when it was claimed
        # (``claim_refresh_rotation``), in the same transaction.
        repositories.add_refresh_token(session, values)
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
