"""Accounts: signup, email verification, login, password reset and change, profile changes.

The hosted pages and the JSON API both call these; every rule lives here once. Answers that
could reveal whether an address has an account are the same either way, in the same time.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import redis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity import audit, logs, metrics, repositories
from identity.accounts.credential_events import CredentialEvent, CredentialEvents, Current
from identity.accounts.emailed_secrets import EmailedSecrets
from identity.accounts.errors import (
    EmailNotVerified,
    FieldErrors,
    InvalidCode,
    InvalidCredentials,
    InvalidInput,
    InvalidLink,
    Throttled,
)
from identity.accounts.fields import clean_name, normalise_email
from identity.accounts.passwords import (
    PasswordHasher,
    PasswordPolicyError,
    check_policy,
    fingerprint,
)
from identity.audit import RequestContext
from identity.config import Settings, SettingsError
from identity.db import Database
from identity.limits import DEFAULT_LIMITS, RateLimiter, parse_overrides
from identity.loop_redis import LoopRedis
from identity.mail import Mailer
from identity.models import User, VerificationChallenge, utcnow
from identity.rendering import TEMPLATES_DIR
from identity.secret_box import SecretBox, SecretBoxError
from identity.token_families import TokenFamilies


@dataclass
class Accounts:
    """The account services, with their collaborators."""

    settings: Settings
    database: Database
    hasher: PasswordHasher
    mailer: Mailer
    limiter: RateLimiter
    # Refresh-token families (and their access tokens) end with the credentials that made them.
    families: TokenFamilies
    # Codes and links mailed for verification, password reset and email change.
    emailed_secrets: EmailedSecrets
    # Seals the secrets that must be read back (TOTP seeds); identity.secret_box.
    secret_box: SecretBox
    # Every expiry the rules check reads this one clock (the emailed secrets share it).
    clock: Callable[[], datetime] = utcnow

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        database: Database,
        redis_client: redis.Redis | None,
        loop_redis: LoopRedis | None,
        families: TokenFamilies,
        clock: Callable[[], datetime] = utcnow,
    ) -> Accounts:
        """The services as the settings configure them."""
        try:
            limits = {**DEFAULT_LIMITS, **parse_overrides(settings.rate_limits)}
        except ValueError as error:
            raise SettingsError(f"IDENTITY_RATE_LIMITS: {error}") from None
        try:
            secret_box = SecretBox.from_sources(settings.secret_key, settings.keys_dir)
        except SecretBoxError as error:
            raise SettingsError(f"IDENTITY_SECRET_KEY: {error}") from None
        limiter = RateLimiter(limits, redis_client, settings.redis_prefix, loop_redis=loop_redis)
        # The mailer counts every mail against its address's cap, whichever flow sends it.
        mailer = Mailer(settings, TEMPLATES_DIR, limiter)
        return cls(
            settings=settings,
            database=database,
            hasher=PasswordHasher(
                settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
            ),
            mailer=mailer,
            limiter=limiter,
            families=families,
            emailed_secrets=EmailedSecrets(settings, mailer, clock),
            secret_box=secret_box,
            clock=clock,
        )

    def now(self) -> datetime:
        """The current time, from the accounts' clock."""
        return self.clock()

    def credentials_changed(
        self,
        session: Session,
        user: User,
        event: CredentialEvent,
        *,
        current: Current | None = None,
        context: RequestContext | None = None,
    ) -> None:
        """End what the credential-event table (``credential_events``) says ``event`` ends."""
        CredentialEvents(self.families, self.emailed_secrets).apply(
            session, user, event, current=current, context=context
        )

    def set_password(self, session: Session, user: User, normalised: str) -> None:
        """Store a new (policy-checked) password and tell the owner by mail."""
        user.password_hash = self.hasher.hash(normalised)
        user.password_changed_at = self.now()
        self.mailer.enqueue(
            session,
            user.email,
            "password_changed",
            name=user.name,
            reset_link=f"{self.settings.issuer}/forgot-password",
        )

    def end_client_tokens(self, session: Session, user: User, client_id: str) -> None:
        """End the refresh-token families one client holds for ``user``."""
        self.families.revoke_for_user(session, user.id, client_id)

    def limit(self, name: str, key: str) -> None:
        """Count one attempt on a named limiter; Throttled once it is over its limit."""
        decision = self.limiter.hit(name, key)
        if not decision.allowed:
            with self.database.transaction() as session:
                audit.record(session, "throttled", outcome="failure", detail={"limiter": name})
            raise Throttled(decision.retry_after)

    def _record_apart(self, kind: str, context: RequestContext, **fields: object) -> None:
        """An audit row in its own transaction: the caller's will roll back."""
        with self.database.transaction() as session:
            audit.record(session, kind, context=context, outcome="failure", **fields)  # type: ignore[arg-type]

    # -- signup and verification -----------------------------------------------------------

    def check_password(self, password: str, email: str, name: str | None, field_name: str) -> str:
        """The normalised password, or InvalidInput on ``field_name``; length checked first."""
        if len(password) > 1024:  # before any normalising or hashing work
            raise InvalidInput({field_name: "Use at most 1024 characters."})
        try:
            return check_policy(password, email=email, name=name)
        except PasswordPolicyError as error:
            raise InvalidInput({field_name: str(error)}) from None

    def signup(
        self, session: Session, *, email: str, name: str, password: str, context: RequestContext
    ) -> str:
        """Create an unverified account and mail it a code; the answer never says whether
        the address was taken (its owner gets a notice instead).

        Each signup is an attempt: its password and name go with its own code and link, and
        whoever verifies gets the password of the attempt they verify (pre-hijacking).
        Returns the fingerprint of this attempt's password, for the browser that typed it."""
        self.limit("signup.ip", context.ip or "unknown")
        errors = FieldErrors()
        with errors.check():
            email = normalise_email(email)
        with errors.check():
            name = clean_name(name)
        with errors.check():  # against the typed email and name, even when they are refused
            normalised = self.check_password(password, email, name, "password")
        errors.raise_any()
        password_hash = self.hasher.hash(normalised)
        user = repositories.get_user_by_email(session, email, for_update=True)
        if user is None:
            user = User(email=email, name=name, password_hash=password_hash, signup_attempts=1)
            try:
                with session.begin_nested():  # a racing signup for the same address may win
                    repositories.add_user(session, user)
            except IntegrityError:
                user = repositories.get_user_by_email(session, email, for_update=True)
                assert user is not None
                self._signup_existing(session, user, name, password_hash, context)
                return fingerprint(password_hash)
            self.emailed_secrets.issue_code(session, user, password_hash=password_hash, name=name)
            audit.record(session, "signup", context=context, subject=str(user.id))
            return fingerprint(password_hash)
        # A verified address keeps its password: this fingerprint never matches it.
        self._signup_existing(session, user, name, password_hash, context)
        return fingerprint(password_hash)

    def _signup_existing(
        self, session: Session, user: User, name: str, password_hash: str, context: RequestContext
    ) -> None:
        if user.email_verified:
            self.mailer.enqueue(
                session,
                user.email,
                "signup_exists",
                login_link=f"{self.settings.issuer}/login",
                reset_link=f"{self.settings.issuer}/forgot-password",
            )
            audit.record(session, "signup.duplicate", context=context, subject=str(user.id))
            return
        # Another attempt at an unverified address, maybe by someone else: the account keeps
        # the password and name it has (a later registrant must not replace the first one's),
        # and this attempt's own go with its own code. Verifying decides who wins.
        user.signup_attempts += 1
        self.emailed_secrets.issue_code(session, user, password_hash=password_hash, name=name)
        audit.record(session, "signup.repeated", context=context, subject=str(user.id))

    def resend_code(self, session: Session, email: str, context: RequestContext) -> None:
        """Mail a fresh code to an unverified account; silent for any other address."""
        try:
            email = normalise_email(email)
        except InvalidInput:
            return
        self.limit("verify.resend", email)
        user = repositories.get_user_by_email(session, email)
        if user is not None and not user.email_verified and user.is_active:
            # Anyone can ask for this code, so it may carry the account's password only when
            # one signup (or an operator) set it. Past one attempt nobody can tell whose the
            # password is: the code then proves the mailbox only.
            single = user.signup_attempts <= 1
            self.emailed_secrets.issue_code(
                session,
                user,
                password_hash=user.password_hash if single else None,
                name=user.name if single else None,
            )
            audit.record(session, "verify.resent", context=context, subject=str(user.id))

    def verify_code(self, session: Session, email: str, code: str, context: RequestContext) -> User:
        """Verify with a 6-digit code: the account gets the password and name of the signup
        attempt the code was mailed for.

        Wrong codes count per address and client IP, not per code (SECURITY.md: codes are
        "invalid after 5 wrong tries" and "others' guesses never lock the owner out"). One IP
        gets 5 tries per address in 10 minutes, then waits 10 minutes, doubling; as a code
        lives 10 minutes, every code live at an IP's first wrong try is dead before that IP
        may try again. All IPs together get 30 tries per address in 10 minutes, with the same
        back-off, against a guess spread over many IPs. Neither limit touches the emailed
        link, which is 256 bits and no guess, so the owner always has a way in."""
        wrong = InvalidCode("That code is wrong or has expired.")
        try:
            email = normalise_email(email)
        except InvalidInput:
            raise wrong from None
        # Counted before the comparison, atomically (Redis INCR or a lock), so concurrent
        # guesses cannot slip past a limit, and outside the transaction, so counts stick.
        self.limit("verify.account_ip", f"{email} {context.ip or 'unknown'}")
        self.limit("verify.account", email)
        # Locked: two attempts verified at once run one after the other, and one wins.
        user = repositories.get_user_by_email(session, email, for_update=True)
        if user is None or user.email_verified:
            raise wrong
        challenge = self.emailed_secrets.matching_code(session, user, code)
        if challenge is None:
            self._record_apart("verify.failed", context, subject=str(user.id))
            raise wrong
        if not self.emailed_secrets.consume_code(session, challenge):
            raise wrong
        self._mark_verified(session, user, challenge, context)
        return user

    def verify_link(self, session: Session, token: str, context: RequestContext) -> User:
        """Verify with the link from the mail (single use, same lifetime as the code)."""
        challenge = self.emailed_secrets.consume_code_link(session, token)
        if challenge is None:
            raise InvalidLink()
        user = repositories.get_user(session, challenge.user_id)
        assert user is not None
        if user.email_verified:  # a verified account's password changes only by its owner
            raise InvalidLink()
        self._mark_verified(session, user, challenge, context)
        return user

    def _mark_verified(
        self,
        session: Session,
        user: User,
        challenge: VerificationChallenge,
        context: RequestContext,
    ) -> None:
        """The mailbox is proven for the attempt ``challenge`` was mailed for: the account
        takes its password and name, and every other attempt's code, link, password and
        session die."""
        if challenge.password_hash != user.password_hash:
            user.password_hash = challenge.password_hash  # None: choose one with a reset
            user.password_changed_at = self.now()
        user.name = challenge.name or ""
        user.email_verified = True
        repositories.delete_user_sessions(session, user.id)  # set up before the proof: gone
        self.emailed_secrets.discard_codes(session, user.id)
        audit.record(
            session,
            "email.verified",
            context=context,
            subject=str(user.id),
            detail={"with_password": challenge.password_hash is not None},
        )

    # -- login ---------------------------------------------------------------------------------

    def authenticate(
        self, session: Session, email: str, password: str, context: RequestContext
    ) -> User:
        """Check email and password. Limiters are checked before the password; unknown users
        cost a dummy argon2 verify so timing does not reveal accounts."""
        try:
            email = normalise_email(email)
        except InvalidInput:
            email = ""
        blocked = self.limiter.peek("login.account", email) if email else None
        if blocked is not None and not blocked.allowed:
            # Counting this try too turns a full window into a block that grows each time.
            decision = self.limiter.hit("login.account", email)
            self._record_apart("login.throttled", context, detail={"limiter": "login.account"})
            metrics.count_login("throttled")
            raise Throttled(max(decision.retry_after, blocked.retry_after))
        self.limit("login.ip", context.ip or "unknown")
        if len(password) > 1024:
            raise InvalidCredentials()
        user = repositories.get_user_by_email(session, email) if email else None
        if user is None or user.password_hash is None:
            self.hasher.dummy_verify(password)
            self._login_failed(email, None, "unknown_account", context)
        assert user is not None and user.password_hash is not None
        if not self.hasher.verify(user.password_hash, password):
            self._login_failed(email, user, "wrong_password", context)
        if not user.is_active:
            self._login_failed(email, user, "disabled", context)
        if self.hasher.needs_rehash(user.password_hash):
            user.password_hash = self.hasher.hash(unicodedata.normalize("NFKC", password))
        self.limiter.reset("login.account", email)
        if not user.email_verified:
            # Committed on its own: the caller's transaction ends with this refusal.
            with self.database.transaction() as own:
                unverified = repositories.get_user(own, user.id)
                assert unverified is not None
                # A code for this password may be in the inbox right now: it stays valid and
                # no mail goes out ("Send a new code" is the person's choice). Only when none
                # is live does one go out, bound to the password just proven. A live code of
                # another attempt does not count: it would give its user another password.
                bound = unverified.password_hash
                if self.emailed_secrets.live_code_for(own, unverified, bound) is None:
                    self.emailed_secrets.issue_code(
                        own,
                        unverified,
                        password_hash=unverified.password_hash,
                        name=unverified.name,
                    )
                audit.record(own, "login.unverified", context=context, subject=str(user.id))
            # The fingerprint of the password the codes are bound to, which was just proven.
            raise EmailNotVerified(email, fingerprint(bound) if bound else "")
        audit.record(session, "login.succeeded", context=context, subject=str(user.id))
        metrics.count_login("succeeded")
        logs.note(user_id=str(user.id))
        return user

    def _login_failed(
        self, email: str, user: User | None, reason: str, context: RequestContext
    ) -> None:
        decision = self.limiter.hit("login.account", email or "invalid")
        subject = str(user.id) if user is not None else None
        self._record_apart("login.failed", context, subject=subject, detail={"reason": reason})
        metrics.count_login("failed")
        if not decision.allowed:
            self._record_apart("login.throttled", context, subject=subject)
            metrics.count_login("throttled")
        raise InvalidCredentials()
