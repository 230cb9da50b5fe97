"""JSON API handlers of the signed-out account flows: register, verify, reset.

Each is a thin call into ``accounts`` / ``recovery``; every rule (enumeration-safe answers,
limiters, code attempts, token lifetimes) lives there once."""

from __future__ import annotations

from identity.accounts import recovery
from identity.api.bodies import (
    AccountStatus,
    EmailRequest,
    RegisterRequest,
    ResetPasswordRequest,
    VerifyEmailRequest,
)
from identity.api.calls import ApiCall, Result
from identity.api.problems import invalid_input
from identity.models import User

CHECK_EMAIL = AccountStatus(status="check_email")


def _verified(user: User) -> AccountStatus:
    """A code that proved the mailbox only (anyone could ask for it, so it carried no
    password) leaves the account without one: the client sends the person to a reset."""
    return AccountStatus(status="verified" if user.password_hash else "verified_without_password")


def register(call: ApiCall) -> Result:
    """The same answer whether or not the address has an account (its owner gets a mail)."""
    body = call.body_as(RegisterRequest)
    call.accounts.signup(
        call.db, email=body.email, name=body.name, password=body.password, context=call.context
    )
    return CHECK_EMAIL


def verify_email(call: ApiCall) -> Result:
    body = call.body_as(VerifyEmailRequest)
    if body.token is not None:
        if body.email is not None or body.code is not None:
            raise invalid_input({"token": "Send either a token, or an email and a code."})
        return _verified(call.accounts.verify_link(call.db, body.token, call.context))
    missing = {
        name: "This field is required (or send the emailed link's token)."
        for name, value in (("email", body.email), ("code", body.code))
        if value is None
    }
    if missing:
        raise invalid_input(missing)
    assert body.email is not None and body.code is not None
    return _verified(call.accounts.verify_code(call.db, body.email, body.code, call.context))


def resend_verification(call: ApiCall) -> Result:
    """The same answer for any address."""
    call.accounts.resend_code(call.db, call.body_as(EmailRequest).email, call.context)
    return CHECK_EMAIL


def forgot_password(call: ApiCall) -> Result:
    """The same answer for any address."""
    recovery.request_reset(call.accounts, call.db, call.body_as(EmailRequest).email, call.context)
    return CHECK_EMAIL


def reset_password(call: ApiCall) -> Result:
    body = call.body_as(ResetPasswordRequest)
    recovery.reset_password(call.accounts, call.db, body.token, body.password, call.context)
    return AccountStatus(status="password_reset")
