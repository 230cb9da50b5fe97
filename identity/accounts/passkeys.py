"""Passkeys (WebAuthn, on py_webauthn): adding one to an account, signing in with one (alone,
or as the second step after a password), and listing, renaming and removing them.

Every ceremony asks for user verification, so a passkey alone is two factors: something
held and a PIN or biometric (amr ``hwk``, ``user``, ``mfa``). The challenge of a ceremony is
handed to the caller as a small ``state`` dict to keep server-side (the browser session's
data) and to give back when the ceremony finishes; it lives five minutes
(``passkey_ceremonies``, with the refusals).

Passkeys are bound to the issuer's host (the relying party id). Browsers refuse WebAuthn on
an IP-literal host, so with such an issuer passkeys are off (``available``)."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import webauthn
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from webauthn.helpers import bytes_to_base64url, structs
from webauthn.helpers.cose import COSEAlgorithmIdentifier

from identity import audit, logs, metrics, repositories
from identity.accounts import factors
from identity.accounts.errors import InvalidInput
from identity.accounts.factor_events import LIMITER, check_limiter, notify_owner, record_apart
from identity.accounts.passkey_ceremonies import (
    AUTHENTICATION,
    CEREMONY_LIFETIME,
    EXPIRED,
    REFUSED,
    REGISTRATION,
    PasskeyRefused,
    challenge_of,
    descriptor,
    new_state,
    read_credential,
    refuse_sign_in,
    transports_of,
    user_handle_matches,
)
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.config import Settings
from identity.mail import PRODUCT
from identity.models import Passkey, User

# A passkey with user verification: the device held and the PIN or biometric that unlocked it.
PASSKEY_AMR = ["hwk", "user", "mfa"]
DEFAULT_NAME = "Passkey"
MOST_PASSKEYS = 20  # also bounds the allowCredentials list a second step sends
_NAME_LENGTH = 100
_CREDENTIAL_ID_LENGTH = 1400  # base64url of WebAuthn's 1023-byte ceiling
_ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
_SYNCED = structs.CredentialDeviceType.MULTI_DEVICE  # backup eligible: a synced passkey
_PASSKEY = {"factor": "passkey"}


def rp_id(settings: Settings) -> str | None:
    """The relying party id: the issuer's host. None when it is an IP literal, which browsers
    refuse for WebAuthn ("This is an invalid domain."): passkeys are off then."""
    host = urlsplit(settings.issuer).hostname
    if not host or settings.issuer_host_is_address:
        return None
    return host


def available(settings: Settings) -> bool:
    """True when this issuer can offer passkeys (its host is a name, not an IP address)."""
    return rp_id(settings) is not None


def expected_origin(settings: Settings) -> str:
    """The origin a browser reports for the issuer's pages: scheme://host[:port]."""
    parts = urlsplit(settings.issuer)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _relying_party(accounts: Accounts) -> str:
    found = rp_id(accounts.settings)
    if found is None:
        raise PasskeyRefused("Passkeys are not available on this server.")
    return found


# -- adding a passkey ----------------------------------------------------------------------


def registration_options(
    accounts: Accounts, session: Session, user: User, *, authenticated_at: datetime | None
) -> tuple[str, dict[str, Any]]:
    """The options for ``navigator.credentials.create()`` (JSON) and the ceremony's state for
    the caller to keep server-side. A discoverable credential, user verification required.

    Adding a factor needs a sign-in within five minutes (``authenticated_at``), as removing
    one does: a session left open must not let someone else add their own authenticator
    (ReauthenticationRequired). The state lives five minutes, so the ceremony's end is
    covered too."""
    factors.check_recent(accounts, user, authenticated_at, None, RequestContext())
    site = _relying_party(accounts)
    existing = repositories.passkeys_of(session, user.id)
    if len(existing) >= MOST_PASSKEYS:
        raise InvalidInput(
            {"passkey": f"An account holds at most {MOST_PASSKEYS} passkeys. Remove one first."}
        )
    options = webauthn.generate_registration_options(
        rp_id=site,
        rp_name=PRODUCT,
        user_name=user.email,
        # The account's UUID: stable, and no personal data on the authenticator.
        user_id=user.id.bytes,
        user_display_name=user.name or user.email,
        timeout=int(CEREMONY_LIFETIME.total_seconds() * 1000),
        authenticator_selection=structs.AuthenticatorSelectionCriteria(
            resident_key=structs.ResidentKeyRequirement.REQUIRED,
            user_verification=structs.UserVerificationRequirement.REQUIRED,
        ),
        # The browser then refuses to make a second passkey on an authenticator holding one.
        exclude_credentials=[descriptor(passkey) for passkey in existing],
        supported_pub_key_algs=_ALGORITHMS,
    )
    state = new_state(REGISTRATION, options.challenge, accounts.now(), user.id)
    return webauthn.options_to_json(options), state


def finish_registration(
    accounts: Accounts,
    session: Session,
    user: User,
    state: dict[str, Any] | None,
    credential_json: str,
    name: str,
    context: RequestContext,
) -> Passkey:
    """Verify the browser's answer to ``registration_options`` and store the passkey
    (PasskeyRefused, InvalidInput on ``name``). The owner is told by mail."""
    clean = clean_passkey_name(name)
    site = _relying_party(accounts)
    challenge, owner = challenge_of(state, REGISTRATION, accounts.now())
    if owner != user.id:
        raise PasskeyRefused(EXPIRED)
    credential = read_credential(credential_json)
    try:
        verified = webauthn.verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=site,
            expected_origin=expected_origin(accounts.settings),
            require_user_verification=True,
            supported_pub_key_algs=_ALGORITHMS,
        )
    except Exception:
        # py_webauthn parses untrusted bytes (CBOR, COSE, base64url) and may raise more
        # than its own exceptions on malformed ones: every failure is the same refusal.
        raise PasskeyRefused("That passkey could not be added. Try again.") from None
    passkey = Passkey(
        user_id=user.id,
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=transports_of(credential),
        aaguid=verified.aaguid,
        backup_eligible=verified.credential_device_type == _SYNCED,
        backup_state=verified.credential_backed_up,
        name=clean,
        created_at=accounts.now(),
    )
    if len(passkey.credential_id) > _CREDENTIAL_ID_LENGTH:
        raise PasskeyRefused("That passkey could not be added. Try again.")
    try:
        with session.begin_nested():  # the same credential may be registered at once elsewhere
            repositories.add_passkey(session, passkey)
    except IntegrityError:
        raise PasskeyRefused("This passkey is already registered.") from None
    audit.record(
        session, "mfa.added", context=context, subject=str(user.id), detail={"factor": "passkey"}
    )
    notify_owner(accounts, session, user, "second_factor_added", factor="passkey")
    return passkey


# -- signing in with a passkey -------------------------------------------------------------


def authentication_options(
    accounts: Accounts, session: Session, user: User | None = None
) -> tuple[str, dict[str, Any]]:
    """The options for ``navigator.credentials.get()`` (JSON) and the ceremony's state. With
    no user the browser offers any passkey of this site (discoverable, conditional UI);
    with one, only theirs (the second step after a password)."""
    site = _relying_party(accounts)
    allowed: list[structs.PublicKeyCredentialDescriptor] = []
    if user is not None:
        allowed = [descriptor(passkey) for passkey in repositories.passkeys_of(session, user.id)]
        if not allowed:
            raise PasskeyRefused("This account has no passkey.")
    options = webauthn.generate_authentication_options(
        rp_id=site,
        timeout=int(CEREMONY_LIFETIME.total_seconds() * 1000),
        allow_credentials=allowed,
        user_verification=structs.UserVerificationRequirement.REQUIRED,
    )
    state = new_state(AUTHENTICATION, options.challenge, accounts.now(), user.id if user else None)
    return webauthn.options_to_json(options), state


def finish_authentication(
    accounts: Accounts,
    session: Session,
    state: dict[str, Any] | None,
    credential_json: str,
    context: RequestContext,
    expected_user_id: uuid.UUID | None = None,
) -> User:
    """The user whose passkey signed the challenge of ``authentication_options``, or a refusal
    (PasskeyRefused, Throttled). With ``expected_user_id`` (or options made for a user) it is
    a second step: another account's passkey is refused."""
    site = _relying_party(accounts)
    challenge, owner = challenge_of(state, AUTHENTICATION, accounts.now())
    expected = expected_user_id or owner
    second_step = expected is not None
    if owner is not None and expected != owner:
        raise PasskeyRefused(EXPIRED)
    expected_user = repositories.get_user(session, expected) if expected is not None else None
    if second_step and expected_user is None:
        raise PasskeyRefused(REFUSED)
    if expected_user is not None:
        check_limiter(accounts, expected_user, context, _PASSKEY)
    else:
        accounts.limit("login.ip", context.ip or "unknown")  # as every password sign-in is
    credential = read_credential(credential_json)
    credential_id = credential.get("id")
    passkey = (
        repositories.get_passkey_by_credential_id(session, credential_id)
        if isinstance(credential_id, str) and len(credential_id) <= _CREDENTIAL_ID_LENGTH
        else None
    )
    if passkey is None:
        refuse_sign_in(accounts, expected_user, "unknown_passkey", context, second_step)
    assert passkey is not None
    if expected_user is not None and passkey.user_id != expected_user.id:
        refuse_sign_in(accounts, expected_user, "another_account", context, second_step)
    user = expected_user or repositories.get_user(session, passkey.user_id)
    assert user is not None  # the passkey's row goes with its user (ON DELETE CASCADE)
    if expected_user is None:
        check_limiter(accounts, user, context, _PASSKEY)
    if not user_handle_matches(credential, user):
        refuse_sign_in(accounts, user, "user_handle_mismatch", context, second_step)
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=site,
            expected_origin=expected_origin(accounts.settings),
            credential_public_key=passkey.public_key,
            # The counter is compared below, once the signature holds: a lower one is then a
            # copy of the authenticator, not merely a forgery.
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except Exception:
        # As at registration: malformed input may raise more than py_webauthn's own errors.
        refuse_sign_in(accounts, user, "not_verified", context, second_step)
    seen, presented = passkey.sign_count, verified.new_sign_count
    if (seen > 0 or presented > 0) and presented <= seen:
        counts = {"passkey": passkey.id, "stored_count": seen, "presented_count": presented}
        record_apart(accounts, "passkey.clone_suspected", user, context, counts)
        refuse_sign_in(accounts, user, "counter_not_increased", context, second_step, record=False)
    if not user.is_active:
        refuse_sign_in(accounts, user, "disabled", context, second_step)
    if not user.email_verified:
        refuse_sign_in(accounts, user, "unverified", context, second_step)
    # Of two racing uses of one assertion, the conditional update lets one through.
    now = accounts.now()
    if not repositories.use_passkey(
        session, passkey.id, seen, presented, verified.credential_backed_up, now
    ):
        refuse_sign_in(accounts, user, "counter_raced", context, second_step, record=False)
    accounts.limiter.reset(LIMITER, str(user.id))
    used = {"factor": "passkey"}
    audit.record(session, "mfa.used", context=context, subject=str(user.id), detail=used)
    if not second_step:
        via = {"via": "passkey"}
        audit.record(session, "login.succeeded", context=context, subject=str(user.id), detail=via)
        metrics.count_login("succeeded")
    logs.note(user_id=str(user.id))
    return user


# -- the account's passkeys ----------------------------------------------------------------


def list_passkeys(session: Session, user: User) -> Sequence[Passkey]:
    """The account's passkeys, oldest first."""
    return repositories.passkeys_of(session, user.id)


def has_passkey(session: Session, user: User) -> bool:
    """True when the account has at least one passkey."""
    return repositories.count_passkeys(session, user.id) > 0


def rename_passkey(
    accounts: Accounts,
    session: Session,
    user: User,
    passkey_id: int,
    name: str,
    context: RequestContext,
) -> Passkey:
    """Give one of the account's passkeys a new name (InvalidInput on ``name`` or ``passkey``)."""
    clean = clean_passkey_name(name)
    passkey = repositories.get_passkey(session, user.id, passkey_id)
    if passkey is None:
        raise InvalidInput({"passkey": "That passkey is not on this account."})
    passkey.name = clean
    renamed = {"passkey": passkey.id}
    audit.record(session, "passkey.renamed", context=context, subject=str(user.id), detail=renamed)
    return passkey


def remove_passkey(
    accounts: Accounts, session: Session, user: User, passkey_id: int, context: RequestContext
) -> bool:
    """Remove one of the account's passkeys (the caller checked for a recent sign-in with
    ``factors.check_recent``); False when the account has no such passkey."""
    if not repositories.delete_passkey(session, user.id, passkey_id):
        return False
    if not factors.has_second_factor(session, user):
        # Recovery codes stand in for a second factor the account no longer has.
        repositories.delete_recovery_codes(session, user.id)
    audit.record(
        session, "mfa.removed", context=context, subject=str(user.id), detail={"factor": "passkey"}
    )
    notify_owner(accounts, session, user, "second_factor_removed", factor="passkey")
    return True


def clean_passkey_name(raw: str) -> str:
    """The name as stored: NFKC, trimmed, one line of at most 100 characters; empty is the
    default name."""
    name = unicodedata.normalize("NFKC", raw).strip()
    if not name:
        return DEFAULT_NAME
    if len(name) > _NAME_LENGTH or any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidInput(
            {"name": f"Name the passkey in one line of up to {_NAME_LENGTH} characters."}
        )
    return name
