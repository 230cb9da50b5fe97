"""Emailed one-time secrets: the verification code and link, the password-reset link and the
email-change link. One implementation of issuing them (a random value is made, only its
SHA-256 is stored with an expiry, the link is built from the issuer, the mail goes through the
outbox) and of finding and spending them once.

A secret is stored only when its mail was queued: over the address's mail cap the mail is
dropped, and then nothing changes (an earlier live link or code keeps working).

The rules about when a secret may be asked for or what using it changes stay with the flows
that call this (``service``, ``recovery``, ``profile``)."""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from identity import repositories
from identity.config import Settings
from identity.mail import Mailer
from identity.models import OneTimeToken, User, VerificationChallenge, secret_digest, utcnow


@dataclass(frozen=True)
class LinkPurpose:
    """What an emailed single-use link is for: the ``purpose`` stored on its row, how long it
    lives, the page it opens and the mail that carries it."""

    name: str
    lifetime: timedelta
    path: str
    template: str


PASSWORD_RESET = LinkPurpose(
    "password_reset", timedelta(minutes=30), "/reset-password", "password_reset"
)
EMAIL_CHANGE = LinkPurpose(
    "email_change", timedelta(hours=24), "/account/email/confirm", "email_change_confirm"
)
# The verification code and its link are one row (a VerificationChallenge), not a OneTimeToken:
# the code is short, so it is bound to its account, and it carries the signup attempt it was
# mailed for. Wrong tries are counted by the named limiters (``Accounts.verify_code``).
CODE_LIFETIME = timedelta(minutes=10)
# A new code never voids a live one (someone may be typing it), but only a few live at once:
# the oldest give way beyond this. The mail cap keeps the issuing rate lower anyway.
LIVE_CODES = 5
_CODE_PATH = "/verify-email"
# The user id of the rows a decoy deletes: no user has it.
_NOBODY = uuid.UUID(int=0)


def _minutes(lifetime: timedelta) -> int:
    return int(lifetime.total_seconds() // 60)


def _new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def _new_link_token() -> str:
    return secrets.token_urlsafe(32)  # 256 bits: a fast hash of it is safe to store


def _code_digest(user: User, code: str) -> str:
    # Bound to the account: the same code means nothing for another user.
    return secret_digest(f"{user.id}:{code}")


class EmailedSecrets:
    """Issue, find and spend the secrets mailed to people; only their digests are stored."""

    def __init__(
        self, settings: Settings, mailer: Mailer, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._issuer = settings.issuer
        self._mailer = mailer
        self._clock = clock

    def link(self, path: str, token: str) -> str:
        """The URL of ``path`` carrying ``token``."""
        # Links come from the issuer, never from the request's Host header.
        return f"{self._issuer}{path}?token={token}"

    # -- single-use links (password reset, email change) -----------------------------------

    def issue(
        self,
        session: Session,
        user: User,
        purpose: LinkPurpose,
        *,
        to: str | None = None,
        data: Mapping[str, Any] | None = None,
        **mail: Any,
    ) -> bool:
        """Replace ``user``'s links of ``purpose`` with a new one (newest wins) and mail it to
        ``to`` (the account's address unless given), with ``mail`` added to the template.
        False when the mail was dropped (over the cap): then the earlier link stays."""
        token = _new_link_token()
        # The mail carries no name: anyone can have a reset (or, with an account, an
        # email-change) link sent to any address.
        queued = self._mailer.enqueue(
            session,
            to or user.email,
            purpose.template,
            link=self.link(purpose.path, token),
            minutes=_minutes(purpose.lifetime),
            **mail,
        )
        if queued is None:
            return False
        self.discard(session, user.id, purpose)
        repositories.add_one_time_token(
            session,
            OneTimeToken(
                digest=secret_digest(token),
                user_id=user.id,
                purpose=purpose.name,
                data=dict(data or {}),
                expires_at=self._clock() + purpose.lifetime,
            ),
        )
        return True

    def issue_decoy(self, session: Session, email: str, purpose: LinkPurpose) -> None:
        """The work of ``issue`` for an address with no usable account, none of it kept, so
        that the time a request takes does not tell known addresses from unknown ones: a
        token is made and hashed, the mail rendered and counted against the address's cap,
        the rows written inside a savepoint that is then rolled back. Nothing is sent."""
        token = _new_link_token()
        savepoint = session.begin_nested()
        try:
            self._mailer.enqueue(
                session,
                email,
                purpose.template,
                link=self.link(purpose.path, token),
                minutes=_minutes(purpose.lifetime),
            )
            repositories.delete_one_time_tokens(session, _NOBODY, purpose.name)
            # The token's own row needs a real user (a foreign key): a read of it by its
            # digest, an index lookup on the same table, stands in for that INSERT.
            repositories.get_one_time_token(session, secret_digest(token), purpose.name)
        finally:
            savepoint.rollback()

    def discard(self, session: Session, user_id: uuid.UUID, purpose: LinkPurpose) -> None:
        """Delete every link of ``purpose`` the user has, used or not."""
        repositories.delete_one_time_tokens(session, user_id, purpose.name)

    def peek(self, session: Session, purpose: LinkPurpose, token: str) -> OneTimeToken | None:
        """The live (unused, unexpired) row of ``token``, spending nothing: for a GET."""
        row = (
            repositories.get_one_time_token(session, secret_digest(token), purpose.name)
            if token
            else None
        )
        if row is None or row.used_at is not None or row.expires_at <= self._clock():
            return None
        return row

    def consume(self, session: Session, purpose: LinkPurpose, token: str) -> OneTimeToken | None:
        """Spend ``token`` once: its row, or None when it is unknown, of another purpose,
        expired, replaced or already spent (by this or a racing request)."""
        if not token:
            return None
        digest = secret_digest(token)
        row = repositories.get_one_time_token(session, digest, purpose.name)
        # The conditional update, not the row read above, decides: a race has one winner.
        if row is None or not repositories.use_one_time_token(session, digest, self._clock()):
            return None
        return row

    def pending(
        self, session: Session, user_id: uuid.UUID, purpose: LinkPurpose
    ) -> OneTimeToken | None:
        """The user's newest live link of ``purpose``, if any."""
        return repositories.live_one_time_token(session, user_id, purpose.name, self._clock())

    # -- the verification code and its link ---------------------------------------------------

    def issue_code(
        self, session: Session, user: User, *, password_hash: str | None, name: str | None
    ) -> bool:
        """Mail ``user`` a new 6-digit code and link bound to one signup attempt: whoever
        verifies with them gets ``password_hash`` and ``name`` (None: the code proves the
        mailbox only). Earlier live codes keep working, up to ``LIVE_CODES``. False when
        the mail was dropped (over the cap): then nothing is stored."""
        now = self._clock()
        taken = {c.code_digest for c in repositories.live_challenges(session, user.id, now)}
        code = _new_code()
        while _code_digest(user, code) in taken:  # two live codes of one account differ
            code = _new_code()
        token = _new_link_token()
        queued = self._mailer.enqueue(
            session,
            user.email,
            "verify_email",
            code=code,
            link=self.link(_CODE_PATH, token),
            minutes=_minutes(CODE_LIFETIME),
        )
        if queued is None:
            return False
        repositories.add_challenge(
            session,
            VerificationChallenge(
                user_id=user.id,
                code_digest=_code_digest(user, code),
                link_digest=secret_digest(token),
                password_hash=password_hash,
                name=name,
                created_at=now,
                expires_at=now + CODE_LIFETIME,
            ),
        )
        repositories.keep_newest_challenges(session, user.id, now, LIVE_CODES)
        return True

    def discard_codes(self, session: Session, user_id: uuid.UUID) -> None:
        """Delete every verification code (and link) the user has."""
        repositories.delete_challenges(session, user_id)

    def live_code(self, session: Session, user: User) -> VerificationChallenge | None:
        """The user's newest unused, unexpired verification code, if any."""
        live = repositories.live_challenges(session, user.id, self._clock())
        return live[0] if live else None

    def live_code_for(
        self, session: Session, user: User, password_hash: str | None
    ) -> VerificationChallenge | None:
        """The user's newest live code bound to ``password_hash`` (an attempt), if any."""
        live = repositories.live_challenges(session, user.id, self._clock())
        return next((c for c in live if c.password_hash == password_hash), None)

    def matching_code(
        self, session: Session, user: User, code: str
    ) -> VerificationChallenge | None:
        """The user's live verification code that ``code`` is, if any."""
        for challenge in repositories.live_challenges(session, user.id, self._clock()):
            if self.code_matches(user, challenge, code):
                return challenge
        return None

    def code_matches(self, user: User, challenge: VerificationChallenge, code: str) -> bool:
        """True when ``code`` is six digits and the one ``challenge`` was issued with."""
        code = code.strip()
        return (
            len(code) == 6
            and code.isdigit()
            and hmac.compare_digest(_code_digest(user, code), challenge.code_digest)
        )

    def consume_code(self, session: Session, challenge: VerificationChallenge) -> bool:
        """Spend ``challenge``; False when another request spent it first."""
        return repositories.use_challenge(session, challenge.id, self._clock())

    def consume_code_link(self, session: Session, token: str) -> VerificationChallenge | None:
        """Spend the verification link ``token``: its challenge, or None when it is unknown,
        expired or spent. Wrong codes never touch it: the link is not a guess."""
        challenge = repositories.challenge_by_link(session, secret_digest(token))
        if challenge is None or challenge.used_at is not None:
            return None
        if challenge.expires_at <= self._clock():
            return None
        # Two attempts' links used at once: one waits for the other, then finds its own
        # challenge gone with the rest.
        owner = repositories.lock_challenge_owner(session, challenge)
        if owner is None or not self.consume_code(session, challenge):
            return None
        return challenge
