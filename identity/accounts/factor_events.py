"""What every kind of second factor (authenticator app, recovery code, passkey) reports the
same way: wrong attempts, counted in one per-account limiter and audited in their own
transaction, and the mails that tell an account's owner its factors changed.

One limiter for every kind, so switching from codes to a recovery code or a passkey gives
no fresh tries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from sqlalchemy.orm import Session

from identity import audit
from identity.accounts.errors import InvalidCode, Throttled
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import User

LIMITER = "mfa.account"


def check_limiter(
    accounts: Accounts,
    user: User,
    context: RequestContext,
    detail: Mapping[str, object] | None = None,
) -> None:
    """Refuse before comparing when the account's wrong attempts are over the limit; another
    try while blocked makes the block longer (progressive). ``detail`` goes into the
    ``mfa.throttled`` audit row."""
    blocked = accounts.limiter.peek(LIMITER, str(user.id))
    if blocked is not None and not blocked.allowed:
        decision = accounts.limiter.hit(LIMITER, str(user.id))
        record_apart(accounts, "mfa.throttled", user, context, detail or {})
        raise Throttled(max(decision.retry_after, blocked.retry_after))


def refuse_code(
    accounts: Accounts, user: User, reason: str, context: RequestContext, *, record: bool = True
) -> NoReturn:
    """Count a wrong (or replayed) code in the limiter, audit it unless ``record`` is off,
    and refuse it (InvalidCode)."""
    accounts.limiter.hit(LIMITER, str(user.id))
    if record:
        record_apart(accounts, "mfa.failed", user, context, {"reason": reason})
    raise InvalidCode("That code is wrong or was already used.")


def record_apart(
    accounts: Accounts,
    kind: str,
    user: User | None,
    context: RequestContext,
    detail: Mapping[str, object],
) -> None:
    """Audit a failure in its own transaction: the caller's rolls back with the refusal."""
    subject = str(user.id) if user is not None else None
    with accounts.database.transaction() as own:
        audit.record(
            own, kind, context=context, outcome="failure", subject=subject, detail=dict(detail)
        )


def notify_owner(
    accounts: Accounts,
    session: Session,
    user: User,
    template: str,
    *,
    factor: str = "totp",
    **extra: object,
) -> None:
    """Mail the account's own address about a change of its factors (``factor`` names which:
    ``totp``, ``passkey`` or ``all``)."""
    accounts.mailer.enqueue(
        session,
        user.email,
        template,
        name=user.name,
        account_link=f"{accounts.settings.issuer}/account",
        reset_link=f"{accounts.settings.issuer}/forgot-password",
        factor=factor,
        **extra,
    )
