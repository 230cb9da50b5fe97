"""Signing in with another provider: how an upstream identity finds, creates or joins a local
account, without account-takeover holes.

Upstream identities are keyed by (provider, upstream ``sub``), never by email: an address can
change hands upstream, and an upstream may vouch for addresses it never checked. So an email
only matters the first time a subject is seen, and only when the upstream marks it verified:
it makes a new account, or, when a local account has it, asks the person to prove that they
own that account before anything is linked (that proof is ``federation_links``'s).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity import audit, logs, metrics, repositories
from identity.accounts import factors
from identity.accounts.errors import AccountError, InvalidInput
from identity.accounts.fields import clean_name, normalise_email
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.models import FederatedIdentity, User
from identity.upstream_http import UpstreamIdentity
from identity.upstream_providers import ProviderConfig

# What an upstream's amr values must look like to reach our tokens: an upstream is not ours
# to trust with the text of our ID tokens.
_METHOD = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MAX_METHODS = 10
_LABEL_PREFIX = re.compile(r"^(continue|sign in|log in|login|signin)\s+with\s+", re.IGNORECASE)


@dataclass(frozen=True)
class SignIn:
    """The upstream identity is (now) a local account's: sign it in with ``amr``, naming the
    provider ``idp``. ``needs_second_factor``: the account has its own second factor, which
    this sign-in has not shown (identity's second step comes first)."""

    user: User
    amr: list[str]
    idp: str
    needs_second_factor: bool


@dataclass(frozen=True)
class NeedsProof:
    """A local account has the upstream's (verified) email: nothing is linked until the
    person proves they own that account. ``amr`` is the upstream sign-in's methods."""

    user_id: uuid.UUID
    provider: str
    subject: str
    email: str
    amr: list[str]

    def as_data(self) -> dict[str, Any]:
        """A JSON form, for a browser's server-side session data (``from_data`` reads it)."""
        return {
            "user": str(self.user_id),
            "provider": self.provider,
            "subject": self.subject,
            "email": self.email,
            "amr": self.amr,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> NeedsProof:
        """The proof ``as_data`` wrote."""
        amr = [str(method) for method in data.get("amr") or []]
        user_id = uuid.UUID(str(data["user"]))
        return cls(user_id, str(data["provider"]), str(data["subject"]), str(data["email"]), amr)

    def amr_with_password(self) -> list[str]:
        """The sign-in's methods once the local account's password was typed too."""
        methods = [m for m in self.amr if m != "mfa"]
        if "pwd" not in methods:
            methods.append("pwd")
        return [*methods, "mfa"] if "mfa" in self.amr else methods


@dataclass(frozen=True)
class Refused:
    """No sign-in: ``reason`` is ``unverified_email`` (the upstream gave no address it
    vouches for), ``invalid_email`` or ``disabled`` (the local account is)."""

    reason: str


@dataclass(frozen=True)
class ProviderLink:
    """One of an account's links, as the account page shows it."""

    provider: str
    title: str
    email: str
    created_at: datetime
    last_used_at: datetime | None


class LinkedElsewhere(AccountError):
    """The upstream account was linked to another local account in the meantime."""

    code = "linked_elsewhere"

    def __init__(self) -> None:
        super().__init__("That account at the provider is already linked to another account.")


def provider_title(label: str) -> str:
    """The provider's name in a sentence: its button label without "Continue with"."""
    return _LABEL_PREFIX.sub("", label).strip() or label


def federated_amr(provider: ProviderConfig, upstream_amr: Sequence[str]) -> list[str]:
    """``fed`` and the upstream's methods; ``mfa`` only when the operator trusts this
    provider's second factor (``trust_mfa``) and the upstream says one was used."""
    methods = ["fed"]
    for method in list(upstream_amr)[:_MAX_METHODS]:
        if method != "mfa" and method not in methods and _METHOD.fullmatch(method):
            methods.append(method)
    if provider.trust_mfa and "mfa" in upstream_amr:
        methods.append("mfa")
    return methods


def resolve(
    accounts: Accounts,
    session: Session,
    provider: ProviderConfig,
    upstream: UpstreamIdentity,
    context: RequestContext,
) -> SignIn | NeedsProof | Refused:
    """Who the upstream identity is here: a linked account (SignIn), a new account made for
    it (SignIn), a local account with its email that must be proven first (NeedsProof), or
    nobody (Refused). Never links by email alone."""
    amr = federated_amr(provider, upstream.amr)
    link = repositories.get_federated_identity(session, provider.name, upstream.subject)
    if link is not None:
        return _sign_in_linked(accounts, session, provider, link, upstream, amr, context)
    if upstream.email is None or not upstream.email_verified:
        return _refuse(session, provider, "unverified_email", context)
    try:
        email = normalise_email(upstream.email)
    except InvalidInput:
        return _refuse(session, provider, "invalid_email", context)
    user = repositories.get_user_by_email(session, email)
    if user is None:
        created = _create_account(accounts, session, provider, upstream, email, amr, context)
        if created is not None:
            return created
        user = repositories.get_user_by_email(session, email)  # a racing signup won
        assert user is not None
    if not user.is_active:
        return _refuse(session, provider, "disabled", context, user)
    return NeedsProof(user.id, provider.name, upstream.subject, email, amr)


def _sign_in_linked(
    accounts: Accounts,
    session: Session,
    provider: ProviderConfig,
    link: FederatedIdentity,
    upstream: UpstreamIdentity,
    amr: list[str],
    context: RequestContext,
) -> SignIn | Refused:
    user = repositories.get_user(session, link.user_id)
    if user is None or not user.is_active:
        return _refuse(session, provider, "disabled", context, user)
    if upstream.email:
        link.email = upstream.email[:320]  # what the account page shows: the latest
    link.last_used_at = accounts.now()
    return signed_in(session, provider, user, amr, context)


def _create_account(
    accounts: Accounts,
    session: Session,
    provider: ProviderConfig,
    upstream: UpstreamIdentity,
    email: str,
    amr: list[str],
    context: RequestContext,
) -> SignIn | None:
    """A verified account without a password, linked; None when a racing request made an
    account with this address first."""
    try:
        name = clean_name(upstream.name)
    except InvalidInput:
        name = ""
    user = User(email=email, name=name, password_hash=None, email_verified=True)
    try:
        with session.begin_nested():
            repositories.add_user(session, user)
    except IntegrityError:
        return None
    audit.record(
        session,
        "federation.account_created",
        context=context,
        subject=str(user.id),
        detail={"provider": provider.name},
    )
    add_link(accounts, session, provider.name, upstream.subject, user, email, context)
    return signed_in(session, provider, user, amr, context)


def signed_in(
    session: Session, provider: ProviderConfig, user: User, amr: list[str], context: RequestContext
) -> SignIn:
    """Audit and count ``user``'s sign-in through ``provider``; the SignIn says whether the
    account's own second factor is still to come."""
    audit.record(
        session,
        "federation.signed_in",
        context=context,
        subject=str(user.id),
        detail={"provider": provider.name, "amr": amr},
    )
    metrics.count_login("succeeded")
    logs.note(user_id=str(user.id))
    # The account's own second factor still counts unless the upstream's is trusted.
    needs = "mfa" not in amr and factors.has_second_factor(session, user)
    return SignIn(user, amr, provider.name, needs)


def _refuse(
    session: Session,
    provider: ProviderConfig,
    reason: str,
    context: RequestContext,
    user: User | None = None,
) -> Refused:
    audit.record(
        session,
        "federation.refused",
        context=context,
        outcome="failure",
        subject=str(user.id) if user is not None else None,
        detail={"provider": provider.name, "reason": reason},
    )
    return Refused(reason)


def add_link(
    accounts: Accounts,
    session: Session,
    provider: str,
    subject: str,
    user: User,
    email: str,
    context: RequestContext,
) -> None:
    """Link (provider, subject) to ``user``; LinkedElsewhere when a racing request linked
    it to another account."""
    now = accounts.now()
    link = FederatedIdentity(
        provider=provider,
        subject=subject,
        user_id=user.id,
        email=email[:320],
        created_at=now,
        last_used_at=now,
    )
    try:
        with session.begin_nested():
            repositories.add_federated_identity(session, link)
    except IntegrityError:
        existing = repositories.get_federated_identity(session, provider, subject)
        if existing is None or existing.user_id != user.id:
            raise LinkedElsewhere() from None
        return
    audit.record(
        session,
        "federation.linked",
        context=context,
        subject=str(user.id),
        detail={"provider": provider},
    )


# -- the account page ---------------------------------------------------------------------------


def links(session: Session, user: User) -> list[ProviderLink]:
    """The account's links to providers, oldest first."""
    return [
        ProviderLink(
            link.provider,
            provider_title(provider.label),
            link.email,
            link.created_at,
            link.last_used_at,
        )
        for link, provider in repositories.links_of(session, user.id)
    ]


def unlink(
    accounts: Accounts, session: Session, user: User, provider_name: str, context: RequestContext
) -> None:
    """Remove the account's link to ``provider_name``, only while another way to sign in
    remains (a password, a passkey or another provider). LookupError when there is none."""
    if not any(
        link.provider == provider_name for link, _ in repositories.links_of(session, user.id)
    ):
        raise LookupError(provider_name)
    others = (
        user.password_hash is not None
        or repositories.count_passkeys(session, user.id) > 0
        or repositories.count_sign_in_links(session, user.id, except_provider=provider_name) > 0
    )
    if not others:
        raise InvalidInput(
            {
                "provider": "This is your only way to sign in. Set a password first "
                '(use "Forgot password?" on the sign-in page) or add a passkey, then unlink it.'
            }
        )
    repositories.delete_federated_identities(session, user.id, provider_name)
    audit.record(
        session,
        "federation.unlinked",
        context=context,
        subject=str(user.id),
        detail={"provider": provider_name},
    )


def record_upstream_error(
    session: Session, provider_name: str, reason: str, context: RequestContext
) -> None:
    """Audit a sign-in the upstream (or its answer) failed; ``reason`` is UpstreamError's."""
    audit.record(
        session,
        "federation.upstream_error",
        context=context,
        outcome="failure",
        detail={"provider": provider_name, "reason": reason},
    )
