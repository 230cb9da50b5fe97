"""JSON API handlers of the signed-in user's second factors (``/api/v1/me/mfa...``): thin
calls into ``factors``, which keeps every rule, audit row and mail.

Adding or removing a factor and making new recovery codes need a recent sign-in: the access
token's ``auth_time`` within ``factors.RECENT``, or else the password sent in the body.
"""

from __future__ import annotations

from identity import models, repositories
from identity.accounts import factors, passkeys
from identity.accounts.errors import InvalidCode, InvalidInput
from identity.api.bodies import (
    ConfirmTotpRequest,
    Passkey,
    ReauthenticateRequest,
    RecoveryCodes,
    RecoveryCodesStatus,
    RenamePasskeyRequest,
    SecondFactors,
    TotpSetup,
    TotpStatus,
)
from identity.api.calls import ApiCall, Result
from identity.api.problems import Problem, conflict, invalid_code, invalid_input, not_found


def _totp_enabled() -> Problem:
    return conflict(
        "An authenticator app is already set up. Remove it first to set up another.",
        "totp-already-enabled",
        "Authenticator app already set up",
    )


def _confirm_recent_sign_in(call: ApiCall) -> None:
    """Pass when the token's sign-in is recent or the body's password is right (403, 400 on
    ``password`` or 429 otherwise)."""
    body = call.body_as(ReauthenticateRequest)
    factors.check_recent(call.accounts, call.me, call.authenticated_at, body.password, call.context)


def get_factors(call: ApiCall) -> Result:
    """The account's second factors, without any secret."""
    summary = factors.summary(call.db, call.me)
    return SecondFactors(
        totp=TotpStatus(
            enabled=summary.totp,
            added_at=summary.totp_added_at,
            last_used_at=summary.totp_last_used_at,
        ),
        recovery_codes=RecoveryCodesStatus(remaining=summary.recovery_codes_left),
        passkeys=[_passkey(passkey) for passkey in passkeys.list_passkeys(call.db, call.me)],
    )


def _passkey(passkey: models.Passkey) -> Passkey:
    return Passkey(
        id=str(passkey.id),
        name=passkey.name,
        created_at=passkey.created_at,
        last_used_at=passkey.last_used_at,
    )


def _passkey_id(call: ApiCall) -> int:
    """The path's passkey id; anything but a number of ours is a 404 before any query."""
    raw = call.path["passkey_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise not_found("You have no passkey with this id.")
    return int(raw)


def rename_passkey(call: ApiCall) -> Result:
    """Give one of the account's passkeys a new name."""
    body = call.body_as(RenamePasskeyRequest)
    passkey_id = _passkey_id(call)
    if repositories.get_passkey(call.db, call.me.id, passkey_id) is None:
        raise not_found("You have no passkey with this id.")
    try:
        renamed = passkeys.rename_passkey(
            call.accounts, call.db, call.me, passkey_id, body.name, call.context
        )
    except InvalidInput as error:
        raise invalid_input(error.fields) from None
    return _passkey(renamed)


def remove_passkey(call: ApiCall) -> Result:
    """Remove one of the account's passkeys (needs a recent sign-in, as any factor's removal)."""
    passkey_id = _passkey_id(call)
    if repositories.get_passkey(call.db, call.me.id, passkey_id) is None:
        raise not_found("You have no passkey with this id.")
    _confirm_recent_sign_in(call)
    passkeys.remove_passkey(call.accounts, call.db, call.me, passkey_id, call.context)
    return None


def begin_totp(call: ApiCall) -> Result:
    """A new authenticator app waiting for its first code (or the one already waiting)."""
    factor = repositories.get_totp_factor(call.db, call.me.id)
    if factor is not None and factor.confirmed_at is not None:
        raise _totp_enabled()
    setup = factors.begin_totp(call.accounts, call.db, call.me)
    return TotpSetup(secret=setup.secret, otpauth_uri=setup.uri)


def confirm_totp(call: ApiCall) -> Result:
    """Turn the waiting app on with a code of it; the recovery codes come back once."""
    body = call.body_as(ConfirmTotpRequest)
    factor = repositories.get_totp_factor(call.db, call.me.id)
    if factor is not None and factor.confirmed_at is not None:
        raise _totp_enabled()
    if factor is None:
        raise conflict(
            "No authenticator app is waiting for its first code: start the setup first.",
            "totp-setup-not-started",
            "No setup waiting",
        )
    try:
        codes = factors.confirm_totp(
            call.accounts,
            call.db,
            call.me,
            body.code,
            call.context,
            authenticated_at=call.authenticated_at,
            password=body.password,
        )
    except InvalidCode as error:
        raise invalid_code(error, "code") from None
    return RecoveryCodes(recovery_codes=codes)


def remove_totp(call: ApiCall) -> Result:
    """Remove the authenticator app (or a setup never confirmed) and, with it, the recovery
    codes."""
    factor = repositories.get_totp_factor(call.db, call.me.id)
    if factor is None:
        raise not_found("No authenticator app is set up.")
    if factor.confirmed_at is not None:  # a setup never confirmed is no factor yet
        _confirm_recent_sign_in(call)
    factors.remove_totp(call.accounts, call.db, call.me, call.context)
    return None


def regenerate_recovery_codes(call: ApiCall) -> Result:
    """A new set of recovery codes, shown once; the old set stops working."""
    if not factors.has_second_factor(call.db, call.me):
        raise conflict(
            "Recovery codes come with a second factor: set one up first.",
            "no-second-factor",
            "No second factor",
        )
    _confirm_recent_sign_in(call)
    codes = factors.regenerate_recovery_codes(call.accounts, call.db, call.me, call.context)
    return RecoveryCodes(recovery_codes=codes)
