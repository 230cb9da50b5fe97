"""What ends when the credentials of an account change: the one rule, as one table.

Every surface (pages, JSON API, CLI, admin) reaches this through ``Accounts.credentials_changed``;
no flow deletes "its own" sessions, tokens or links by hand, so none can forget a piece.

event                  | sessions  | refresh families   | email change | reset | codes
-----------------------|-----------|--------------------|--------------|-------|------
password reset         | all       | all                | cancelled    | all   | -
password changed       | all but   | all but the        | cancelled    | all   | -
                       | current   | calling app's own  |              |       |
email change confirmed | all but   | all                | -            | all   | -
                       | current   |                    |              |       |
signed out everywhere  | all       | all                | cancelled    | -     | -
user disabled/deleted  | all       | all, for good      | cancelled    | all   | all

Ending a refresh family puts its live access tokens on the denylist too. Every event also
ends the sign-ins still waiting for their second factor (the password grant's mfa_tokens):
they are sessions not yet started.
(A reset spends its own link before this runs, so "all" reset links are the others.)
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from identity import repositories
from identity.accounts.emailed_secrets import EMAIL_CHANGE, PASSWORD_RESET, EmailedSecrets
from identity.audit import RequestContext
from identity.models import User, utcnow
from identity.token_families import TokenFamilies

# The purpose of the one-time tokens that carry a sign-in from its password to its second
# factor (the password grant's ``mfa_token``).
MFA_PENDING = "mfa"


class Scope(enum.Enum):
    """How much of one kind of credential an event ends."""

    NONE = "none"
    ALL = "all"
    ALL_BUT_CURRENT = "all but the current one"


class CredentialEvent(enum.Enum):
    """A change of an account's credentials (the rows of the table)."""

    PASSWORD_RESET = enum.auto()
    PASSWORD_CHANGED = enum.auto()
    EMAIL_CHANGED = enum.auto()
    SIGNED_OUT_EVERYWHERE = enum.auto()
    USER_DISABLED = enum.auto()
    USER_DELETED = enum.auto()


@dataclass(frozen=True)
class Ends:
    """One row of the table: what an event ends."""

    sessions: Scope
    refresh_families: Scope
    pending_email_change: bool
    reset_links: bool
    verification: bool


RULES: dict[CredentialEvent, Ends] = {
    CredentialEvent.PASSWORD_RESET: Ends(Scope.ALL, Scope.ALL, True, True, False),
    CredentialEvent.PASSWORD_CHANGED: Ends(
        Scope.ALL_BUT_CURRENT, Scope.ALL_BUT_CURRENT, True, True, False
    ),
    CredentialEvent.EMAIL_CHANGED: Ends(Scope.ALL_BUT_CURRENT, Scope.ALL, False, True, False),
    CredentialEvent.SIGNED_OUT_EVERYWHERE: Ends(Scope.ALL, Scope.ALL, True, False, False),
    CredentialEvent.USER_DISABLED: Ends(Scope.ALL, Scope.ALL, True, True, True),
    CredentialEvent.USER_DELETED: Ends(Scope.ALL, Scope.ALL, True, True, True),
}


@dataclass(frozen=True)
class Current:
    """What the request that changed the credentials runs in, and may keep where the table
    says "all but the current one": its browser session (pages) or its app (the API)."""

    browser_session_id: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class CredentialEvents:
    """Applies ``RULES``; built once with the services it ends things through."""

    families: TokenFamilies
    emailed_secrets: EmailedSecrets

    def apply(
        self,
        session: Session,
        user: User,
        event: CredentialEvent,
        *,
        current: Current | None = None,
        context: RequestContext | None = None,
    ) -> None:
        """End what ``event`` ends for ``user``, in the caller's transaction."""
        ends, current = RULES[event], current or Current()
        repositories.delete_one_time_tokens(session, user.id, MFA_PENDING)
        if ends.sessions is Scope.ALL:
            repositories.delete_user_sessions(session, user.id)
        elif ends.sessions is Scope.ALL_BUT_CURRENT:
            repositories.delete_user_sessions(session, user.id, keep=current.browser_session_id)
        if ends.refresh_families is not Scope.NONE:
            keep_client = (
                current.client_id if ends.refresh_families is Scope.ALL_BUT_CURRENT else None
            )
            self._end_families(session, user.id, keep_client, event, context)
        if ends.pending_email_change:
            self.emailed_secrets.discard(session, user.id, EMAIL_CHANGE)
        if ends.reset_links:
            self.emailed_secrets.discard(session, user.id, PASSWORD_RESET)
        if ends.verification:
            self.emailed_secrets.discard_codes(session, user.id)

    def _end_families(
        self,
        session: Session,
        user_id: uuid.UUID,
        keep_client: str | None,
        event: CredentialEvent,
        context: RequestContext | None,
    ) -> None:
        families = repositories.live_refresh_families(session, user_id, None, utcnow())
        if keep_client is not None:
            kept = set(repositories.live_refresh_families(session, user_id, keep_client, utcnow()))
            families = [family for family in families if family not in kept]
        # One order for everyone, so two of these never wait on each other's families.
        for family in sorted(families):
            self.families.revoke_family(session, family, reason=event.name.lower(), context=context)
