"""A passkey ceremony (adding a passkey, or signing in with one) between its two requests:
the challenge sent with the options, kept by the caller as a small ``state`` dict
(server-side, in the browser session's data) and given back with the browser's answer; how
the options name passkeys and how the answer is read; and the refusals when it does not
verify. The ceremonies themselves (options, verification, the stored passkey) are in
``passkeys``.

A ceremony lives five minutes: its options carry that timeout, and a state older than that
(or made for another kind of ceremony, or for another account) is refused as expired."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any, NoReturn

from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, structs

from identity import metrics
from identity.accounts.errors import InvalidCode
from identity.accounts.factor_events import LIMITER, record_apart
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import Passkey, User

CEREMONY_LIFETIME = timedelta(minutes=5)
REGISTRATION = "registration"
AUTHENTICATION = "authentication"
EXPIRED = "This passkey request expired. Start again."
REFUSED = "That passkey could not be used. Try again, or use another way to sign in."
_TRANSPORTS = {transport.value: transport for transport in structs.AuthenticatorTransport}


class PasskeyRefused(InvalidCode):
    """A ceremony that did not verify: unknown passkey, bad signature, expired challenge."""

    code = "passkey_refused"


def new_state(
    kind: str, challenge: bytes, now: datetime, user_id: uuid.UUID | None
) -> dict[str, Any]:
    """The state of a ceremony of ``kind`` that sent ``challenge`` now, for ``user_id`` (None:
    a sign-in with any passkey of this site)."""
    return {
        "kind": kind,
        "challenge": bytes_to_base64url(challenge),
        "at": now.timestamp(),
        "user": str(user_id) if user_id is not None else None,
    }


def challenge_of(
    state: dict[str, Any] | None, kind: str, now: datetime
) -> tuple[bytes, uuid.UUID | None]:
    """The challenge a live ceremony of ``kind`` sent, and the user it was for."""
    expired = PasskeyRefused(EXPIRED)
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise expired
    try:
        age = now.timestamp() - float(state["at"])
        challenge = base64url_to_bytes(str(state["challenge"]))
        owner = uuid.UUID(str(state["user"])) if state.get("user") else None
    except (KeyError, TypeError, ValueError):
        raise expired from None
    if not 0 <= age <= CEREMONY_LIFETIME.total_seconds() or not challenge:
        raise expired
    return challenge, owner


def read_credential(credential_json: str) -> dict[str, Any]:
    """The browser's answer (the credential's JSON) as a dict, or a refusal."""
    try:
        credential = json.loads(credential_json)
    except (TypeError, ValueError):
        credential = None
    if not isinstance(credential, dict):
        raise PasskeyRefused("The browser's answer could not be read. Try again.")
    return credential


def descriptor(passkey: Passkey) -> structs.PublicKeyCredentialDescriptor:
    """How the options name one of the account's passkeys (to exclude or to allow)."""
    return structs.PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(passkey.credential_id),
        transports=[_TRANSPORTS[t] for t in passkey.transports if t in _TRANSPORTS] or None,
    )


def transports_of(credential: dict[str, Any]) -> list[str]:
    """The browser's hint of how to reach the authenticator next time (usb, internal, ...)."""
    response = credential.get("response")
    listed = response.get("transports") if isinstance(response, dict) else None
    if not isinstance(listed, list):
        return []
    return sorted({t for t in listed if isinstance(t, str) and t in _TRANSPORTS})


def user_handle_matches(credential: dict[str, Any], user: User) -> bool:
    """False when the answer names an account (a discoverable credential's user handle)
    other than ``user``, the one that registered the passkey."""
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if handle is None:
        return True
    try:
        return isinstance(handle, str) and base64url_to_bytes(handle) == user.id.bytes
    except ValueError:
        return False


def refuse_sign_in(
    accounts: Accounts,
    user: User | None,
    reason: str,
    context: RequestContext,
    second_step: bool,
    *,
    record: bool = True,
) -> NoReturn:
    """Refuse a sign-in ceremony: the account's failure counts in the limiter of every
    second factor, is audited (``mfa.failed`` after a password, else ``login.failed``) unless
    ``record`` is off, and the answer never says which check failed."""
    if user is not None:
        accounts.limiter.hit(LIMITER, str(user.id))
    if record:
        kind = "mfa.failed" if second_step else "login.failed"
        record_apart(accounts, kind, user, context, {"factor": "passkey", "reason": reason})
    if not second_step:
        metrics.count_login("failed")
    raise PasskeyRefused(REFUSED)
