"""Refresh-token families: ending them, with the access tokens they carry.

Shared below ``accounts`` and ``protocol``: a credential event (accounts) and a revocation,
a reuse or a replayed code (protocol) end families the same way."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.audit import RequestContext
from identity.denylist import Denylist
from identity.models import utcnow


class TokenFamilies:
    """Revoke refresh-token families and put their live access tokens on the denylist."""

    def __init__(self, denylist: Denylist) -> None:
        self.denylist = denylist

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
