"""Second factors: what an account has, authenticator apps (TOTP, RFC 6238), the recent
sign-in that changing them needs, and how a sign-in's methods (``amr``, RFC 8176) name the
assurance a token carries (``acr``). Recovery codes are in ``recovery_codes``, passkeys in
``passkeys``; the limiter and the owner's mails all of them share in ``factor_events``.

The hosted pages, the JSON API, the password grant and the CLI all call these; every rule
(replay, drift, the limiter, encryption at rest, single-use codes) lives here once.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pyotp
import segno
from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.errors import (
    InvalidCode,
    InvalidInput,
    ReauthenticationRequired,
    Throttled,
)
from identity.accounts.factor_events import (
    LIMITER,
    check_limiter,
    notify_owner,
    record_apart,
    refuse_code,
)
from identity.accounts.recovery_codes import new_recovery_codes, recovery_codes_for_first_factor
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.mail import PRODUCT
from identity.models import TotpFactor, User

LOA_ONE_FACTOR = "urn:identity:loa:1"
LOA_MULTI_FACTOR = "urn:identity:loa:2"
ACR_VALUES = (LOA_ONE_FACTOR, LOA_MULTI_FACTOR)
# How long a sign-in counts as recent, for removing a factor or regenerating codes; also
# how long a password-verified sign-in waits for its second factor.
RECENT = timedelta(minutes=5)

_PERIOD = 30
_DRIFT_STEPS = 1  # ±1 step: a phone clock 30 s off still works
_CODE_SHAPE = re.compile(r"[0-9]{6}")


def acr_of(amr: Iterable[str]) -> str:
    """The ``acr`` of a sign-in with these methods: two factors make level 2."""
    return LOA_MULTI_FACTOR if "mfa" in amr else LOA_ONE_FACTOR


def with_factor(amr: Sequence[str], method: str) -> list[str]:
    """The methods of a sign-in after a second factor ``method`` (``otp``, ``hwk``) was used
    on top of ``amr``: RFC 8176 adds ``mfa`` once two factors are in."""
    methods = [m for m in amr if m != "mfa"] or ["pwd"]
    if method not in methods:
        methods.append(method)
    return [*methods, "mfa"]


@dataclass(frozen=True)
class TotpSetup:
    """What an authenticator app needs: the seed and the ``otpauth://`` URI that holds it."""

    secret: str
    uri: str

    def qr_svg(self) -> str:
        """The URI as a QR code, an inline SVG drawn here (no external service)."""
        return str(segno.make(self.uri, error="m").svg_inline(scale=4, border=2))


@dataclass(frozen=True)
class FactorSummary:
    """What second factors an account has, as the account page and the API show them."""

    totp_added_at: datetime | None
    totp_last_used_at: datetime | None
    recovery_codes_left: int
    passkeys: int = 0

    @property
    def totp(self) -> bool:
        return self.totp_added_at is not None

    @property
    def any(self) -> bool:
        return self.totp or self.passkeys > 0


def summary(session: Session, user: User) -> FactorSummary:
    """The account's confirmed factors."""
    factor = repositories.get_totp_factor(session, user.id)
    confirmed = factor is not None and factor.confirmed_at is not None
    return FactorSummary(
        totp_added_at=factor.confirmed_at if confirmed and factor else None,
        totp_last_used_at=factor.last_used_at if confirmed and factor else None,
        recovery_codes_left=repositories.count_unused_recovery_codes(session, user.id),
        passkeys=repositories.count_passkeys(session, user.id),
    )


def has_second_factor(session: Session, user: User) -> bool:
    """True when a sign-in to this account must also show a second factor: a confirmed
    authenticator app or a passkey (one with user verification is two factors by itself,
    and after a password it is the second)."""
    if repositories.count_passkeys(session, user.id):
        return True
    factor = repositories.get_totp_factor(session, user.id)
    return factor is not None and factor.confirmed_at is not None


def has_totp(session: Session, user: User) -> bool:
    """True when the account's authenticator app is on (its codes can be asked for)."""
    factor = repositories.get_totp_factor(session, user.id)
    return factor is not None and factor.confirmed_at is not None


# -- authenticator apps --------------------------------------------------------------------


def _setup(accounts: Accounts, user: User, secret: str) -> TotpSetup:
    site = urlsplit(accounts.settings.issuer).hostname or PRODUCT
    issuer = PRODUCT if site in {"localhost", "127.0.0.1", "::1"} else f"{PRODUCT} ({site})"
    uri = pyotp.TOTP(secret, interval=_PERIOD).provisioning_uri(name=user.email, issuer_name=issuer)
    return TotpSetup(secret, uri)


def begin_totp(accounts: Accounts, session: Session, user: User) -> TotpSetup:
    """A new, unconfirmed authenticator app (or the one already waiting for its first code).
    InvalidInput when the account already has one: remove it first."""
    factor = repositories.get_totp_factor(session, user.id)
    if factor is not None and factor.confirmed_at is not None:
        raise InvalidInput({"code": "An authenticator app is already set up. Remove it first."})
    if factor is not None:
        return _setup(accounts, user, accounts.secret_box.open(factor.secret_sealed))
    secret = pyotp.random_base32()  # 160 bits, RFC 4226's recommended length
    repositories.put_totp_factor(
        session,
        TotpFactor(
            user_id=user.id,
            secret_sealed=accounts.secret_box.seal(secret),
            created_at=accounts.now(),
        ),
    )
    return _setup(accounts, user, secret)


def pending_totp(accounts: Accounts, session: Session, user: User) -> TotpSetup | None:
    """The authenticator app waiting for its first code, if one is."""
    factor = repositories.get_totp_factor(session, user.id)
    if factor is None or factor.confirmed_at is not None:
        return None
    return _setup(accounts, user, accounts.secret_box.open(factor.secret_sealed))


def confirm_totp(
    accounts: Accounts,
    session: Session,
    user: User,
    code: str,
    context: RequestContext,
    *,
    authenticated_at: datetime | None,
    password: str | None = None,
) -> list[str]:
    """Turn the waiting authenticator app on with its first code. Returns the recovery codes
    made with the account's first factor (to show once), or [] when it already has some.

    Adding a factor needs a recent sign-in or the password, as removing one does
    (``check_recent``): a session left open must not let someone else add their own app."""
    check_recent(accounts, user, authenticated_at, password, context)
    factor = repositories.get_totp_factor(session, user.id)
    if factor is None or factor.confirmed_at is not None:
        raise InvalidCode("Start the setup again: there is no authenticator app waiting.")
    _check_code(accounts, session, user, factor, code, context)
    factor.confirmed_at = accounts.now()
    factor.last_used_at = None  # its step stays spent; "last used" means a sign-in
    audit.record(
        session, "mfa.added", context=context, subject=str(user.id), detail={"factor": "totp"}
    )
    notify_owner(accounts, session, user, "second_factor_added")
    return recovery_codes_for_first_factor(accounts, session, user)


def check_totp(
    accounts: Accounts, session: Session, user: User, code: str, context: RequestContext
) -> None:
    """Accept a code of the account's authenticator app as a second factor, or refuse it
    (InvalidCode, Throttled). Each code works once."""
    factor = repositories.get_totp_factor(session, user.id)
    if factor is None or factor.confirmed_at is None:
        refuse_code(accounts, user, "no_factor", context)
    _check_code(accounts, session, user, factor, code, context)
    audit.record(
        session, "mfa.used", context=context, subject=str(user.id), detail={"factor": "totp"}
    )


def _check_code(
    accounts: Accounts,
    session: Session,
    user: User,
    factor: TotpFactor,
    code: str,
    context: RequestContext,
) -> None:
    check_limiter(accounts, user, context)
    code = re.sub(r"\s", "", code)
    secret = accounts.secret_box.open(factor.secret_sealed)
    step = _matching_step(secret, code, accounts.now()) if _CODE_SHAPE.fullmatch(code) else None
    if step is None:
        refuse_code(accounts, user, "wrong_code", context)
    # The step is remembered, so the same code (or an older one) never works again.
    if factor.last_step is not None and step <= factor.last_step:
        refuse_code(accounts, user, "replayed_code", context)
    # A request racing this one with the same code read the same row: the UPDATE is
    # conditional, so one wins. The loser's audit row is skipped: on SQLite its transaction
    # holds the write lock that a row of its own would wait for.
    if not repositories.use_totp_step(session, user.id, step, accounts.now()):
        refuse_code(accounts, user, "replayed_code", context, record=False)
    if not accounts.secret_box.sealed_with_first_key(factor.secret_sealed):
        factor.secret_sealed = accounts.secret_box.seal(secret)  # a rotated key takes over
    accounts.limiter.reset(LIMITER, str(user.id))


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    totp = pyotp.TOTP(secret, interval=_PERIOD)
    current = totp.timecode(now)
    for step in range(current - _DRIFT_STEPS, current + _DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def remove_totp(accounts: Accounts, session: Session, user: User, context: RequestContext) -> bool:
    """Remove the account's authenticator app (the caller checked for a recent sign-in).
    When it was the last factor the recovery codes go too: they stand in for a second factor
    the account no longer has."""
    factor = repositories.get_totp_factor(session, user.id)
    if factor is None:
        return False
    repositories.delete_totp_factor(session, user.id)
    if factor.confirmed_at is None:
        return True  # a setup never finished: nothing to tell
    if not has_second_factor(session, user):
        repositories.delete_recovery_codes(session, user.id)
    audit.record(
        session, "mfa.removed", context=context, subject=str(user.id), detail={"factor": "totp"}
    )
    notify_owner(accounts, session, user, "second_factor_removed")
    return True


def reset(
    accounts: Accounts, session: Session, user: User, context: RequestContext, actor: str
) -> None:
    """An operator's reset: every factor (authenticator app, passkeys) and recovery code of
    the account goes."""
    repositories.delete_totp_factor(session, user.id)
    repositories.delete_passkeys(session, user.id)
    repositories.delete_recovery_codes(session, user.id)
    audit.record(session, "mfa.reset", context=context, actor=actor, subject=str(user.id))
    notify_owner(accounts, session, user, "second_factor_removed", factor="all")


# -- recovery codes (the codes themselves are in ``recovery_codes``) -----------------------


def regenerate_recovery_codes(
    accounts: Accounts, session: Session, user: User, context: RequestContext
) -> list[str]:
    """A new set of recovery codes; the old set stops working. Here rather than in
    ``recovery_codes`` because it needs ``has_second_factor``, and this module already
    imports that one (confirming an authenticator app makes the first set)."""
    if not has_second_factor(session, user):
        raise InvalidInput({"recovery_codes": "Set up a second factor first."})
    codes = new_recovery_codes(accounts, session, user)
    audit.record(session, "mfa.recovery_codes_regenerated", context=context, subject=str(user.id))
    return codes


# -- a recent sign-in ----------------------------------------------------------------------


def check_recent(
    accounts: Accounts,
    user: User,
    authenticated_at: datetime | None,
    password: str | None,
    context: RequestContext,
) -> None:
    """Removing a factor or making new recovery codes needs a sign-in (or a factor used)
    within the last five minutes, or the password typed again now (ReauthenticationRequired,
    InvalidInput on ``password``, Throttled)."""
    if authenticated_at is not None and accounts.now() - authenticated_at <= RECENT:
        return
    if not password:
        raise ReauthenticationRequired()
    blocked = accounts.limiter.peek("login.account", user.email)
    if blocked is not None and not blocked.allowed:
        raise Throttled(blocked.retry_after)
    if (
        len(password) > 1024
        or user.password_hash is None
        or not accounts.hasher.verify(user.password_hash, password)
    ):
        accounts.limiter.hit("login.account", user.email)
        record_apart(accounts, "reauthentication.failed", user, context, {})
        raise InvalidInput({"password": "That password is wrong."})
