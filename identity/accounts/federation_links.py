"""Linking an upstream identity to a local account that already has its email, once the person
proves they own that account: its password (``Accounts.authenticate``'s rules), or, for an
account without one, a 6-digit code mailed to it. ``federation.resolve`` says when a proof is
needed (``NeedsProof``); nothing is linked before it.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.accounts.errors import InvalidCode, InvalidCredentials
from identity.accounts.federation import NeedsProof, add_link, provider_title, signed_in
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import OneTimeToken, User, secret_digest
from identity.upstream_providers import ProviderConfig


def prove_password(
    accounts: Accounts, session: Session, proof: NeedsProof, password: str, context: RequestContext
) -> User:
    """The account ``proof`` names, once ``password`` is its password: the login rules
    (limiters first, audit, unverified addresses) are ``Accounts.authenticate``'s."""
    user = repositories.get_user(session, proof.user_id)
    if user is None:
        raise InvalidCredentials()
    proven = accounts.authenticate(session, user.email, password, context)
    if proven.id != proof.user_id:  # the address changed hands since: prove nothing
        raise InvalidCredentials()
    return proven


LINK_CODE = "link_code"  # the purpose of the one-time tokens that hold mailed link codes
_LINK_CODE_MINUTES = 10


def send_link_code(
    accounts: Accounts, session: Session, proof: NeedsProof, provider_title: str
) -> None:
    """Mail a 6-digit code to the account ``proof`` names, for one without a password: the
    mailbox is then what proves the account. Bound to this upstream identity; 10 minutes;
    an earlier code stays valid (a new one never voids it)."""
    user = repositories.get_user(session, proof.user_id)
    if user is None:
        return
    code, nonce = f"{secrets.randbelow(1_000_000):06d}", secrets.token_urlsafe(16)
    now = accounts.now()
    repositories.add_one_time_token(
        session,
        OneTimeToken(
            digest=secret_digest(f"{nonce}:{code}"),
            user_id=user.id,
            purpose=LINK_CODE,
            data={"nonce": nonce, "provider": proof.provider, "subject": proof.subject},
            created_at=now,
            expires_at=now + timedelta(minutes=_LINK_CODE_MINUTES),
        ),
    )
    accounts.mailer.enqueue(
        session,
        user.email,
        "link_code",
        code=code,
        provider=provider_title,
        minutes=_LINK_CODE_MINUTES,
    )


def prove_code(
    accounts: Accounts, session: Session, proof: NeedsProof, code: str, context: RequestContext
) -> User:
    """The account ``proof`` names, once ``code`` is a live code mailed to it for this
    upstream identity (single use). Tries count in the verification-code limiters, per
    address and IP and per address (as ``Accounts.verify_code``'s do)."""
    user = repositories.get_user(session, proof.user_id)
    wrong = InvalidCode("That code is wrong or has expired.")
    if user is None or not user.is_active:
        raise wrong
    accounts.limit("verify.account_ip", f"{user.email} {context.ip or 'unknown'}")
    accounts.limit("verify.account", user.email)
    typed = re.sub(r"\s", "", code)
    now = accounts.now()
    for token in repositories.live_one_time_tokens(session, user.id, LINK_CODE, now):
        data = token.data
        bound = data.get("provider") == proof.provider and data.get("subject") == proof.subject
        digest = secret_digest(f"{data.get('nonce', '')}:{typed}")
        matches = bound and hmac.compare_digest(digest, token.digest)
        if matches and repositories.use_one_time_token(session, token.digest, now):
            return user
    with accounts.database.transaction() as own:
        audit.record(
            own,
            "federation.link_code_failed",
            context=context,
            outcome="failure",
            subject=str(user.id),
        )
    raise wrong


def link_after_proof(
    accounts: Accounts,
    session: Session,
    user: User,
    proof: NeedsProof,
    provider: ProviderConfig,
    context: RequestContext,
) -> None:
    """Link the upstream identity of ``proof`` to ``user``, whose owner has just proven the
    account (its password, and its second factor when it has one), and tell the owner."""
    if user.id != proof.user_id or provider.name != proof.provider:
        raise InvalidCredentials()
    add_link(accounts, session, provider.name, proof.subject, user, proof.email, context)
    accounts.mailer.enqueue(
        session,
        user.email,
        "provider_linked",
        name=user.name,
        provider=provider_title(provider.label),
        account_link=f"{accounts.settings.issuer}/account",
        reset_link=f"{accounts.settings.issuer}/forgot-password",
    )
    signed_in(session, provider, user, proof.amr, context)
