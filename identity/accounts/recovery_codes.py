"""Recovery codes: ten single-use codes that stand in for an account's second factor when
its authenticator app or passkey is out of reach.

A set is made when the account gets its first second factor and shown once; only argon2id
hashes are kept. A wrong code counts in the same limiter as a wrong authenticator code
(``factor_events``). Making a new set on request (``factors.regenerate_recovery_codes``)
needs a second factor to exist, so it sits in ``factors``, which imports this module:
confirming an authenticator app makes the first set."""

from __future__ import annotations

import re
import secrets

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.factor_events import LIMITER, check_limiter, notify_owner, refuse_code
from identity.accounts.passwords import PasswordHasher
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User

_RECOVERY_CODES = 10
# Lower-case letters and digits without the look-alikes 0/o, 1/l/i.
_RECOVERY_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
_RECOVERY_SHAPE = re.compile(r"[a-z0-9]{10}")


def recovery_codes_for_first_factor(accounts: Accounts, session: Session, user: User) -> list[str]:
    """The recovery codes made when the account's first second factor is added (to show
    once), or [] when it already has a set."""
    if repositories.count_unused_recovery_codes(session, user.id):
        return []
    return new_recovery_codes(accounts, session, user)


def new_recovery_codes(accounts: Accounts, session: Session, user: User) -> list[str]:
    """A new set of codes (``abcde-fghij``, to show once) in place of the account's old set,
    which stops working."""
    repositories.delete_recovery_codes(session, user.id)
    raw = [
        "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
        for _ in range(_RECOVERY_CODES)
    ]
    hasher = _recovery_hasher(accounts)
    repositories.add_recovery_codes(
        session, user.id, [hasher.hash(code) for code in raw], accounts.now()
    )
    return [f"{code[:5]}-{code[5:]}" for code in raw]


def use_recovery_code(
    accounts: Accounts, session: Session, user: User, code: str, context: RequestContext
) -> None:
    """Accept one unused recovery code (with or without its dash and spaces) in place of the
    second factor; it never works again. Wrong ones count in the same limiter as TOTP codes."""
    check_limiter(accounts, user, context)
    typed = re.sub(r"[\s\-]", "", code).lower()
    hasher = _recovery_hasher(accounts)
    match = None
    if _RECOVERY_SHAPE.fullmatch(typed):
        for row in repositories.unused_recovery_codes(session, user.id):
            if hasher.verify(row.code_hash, typed):
                match = row
                break
    if match is None:
        refuse_code(accounts, user, "wrong_recovery_code", context)
    if not repositories.use_recovery_code(session, match.id, accounts.now()):
        refuse_code(accounts, user, "wrong_recovery_code", context, record=False)  # a race lost
    accounts.limiter.reset(LIMITER, str(user.id))
    left = repositories.count_unused_recovery_codes(session, user.id)
    audit.record(
        session,
        "mfa.recovery_code_used",
        context=context,
        subject=str(user.id),
        detail={"left": left},
    )
    notify_owner(accounts, session, user, "recovery_code_used", left=left)


def _recovery_hasher(accounts: Accounts) -> PasswordHasher:
    # OWASP's smallest argon2id setting (19 MiB, 2 passes) at most: the codes are ~50-bit
    # random values, and a use may try up to ten hashes. Lower settings (tests) stay lower.
    settings = accounts.settings
    return PasswordHasher(
        min(settings.argon2_time_cost, 2), min(settings.argon2_memory_kib, 19456), 1
    )
