"""Signing in with another provider, at the service level: what an upstream identity finds,
creates or may join, and the rules of amr, second factors and unlinking."""

from __future__ import annotations

import uuid

import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identity import repositories
from identity.accounts import factors, federation, federation_links
from identity.accounts.errors import InvalidCode, InvalidCredentials, InvalidInput
from identity.accounts.service import Accounts
from identity.db import Database
from identity.models import FederatedIdentity, Passkey, User
from identity.services import Services
from identity.upstream_http import UpstreamIdentity
from identity.upstream_providers import ProviderConfig, UpstreamProviders
from tests.accounts.conftest import CONTEXT, PASSWORD, audit_types, create_user, mails, reload


def _provider(
    services: Services, database: Database, name: str = "corp", **options: object
) -> ProviderConfig:
    """A provider stored as an operator adds one, as the sign-in flow reads it."""
    with database.transaction() as session:
        services.providers.add(
            session,
            name=name,
            issuer=f"https://{name}.example.com",
            client_id=f"{name}-client",
            client_secret="upstream-client-secret",
            **options,  # type: ignore[arg-type]
        )
    # A fresh reader: the app's caches its list for IDENTITY_CACHE_CHECK_SECONDS.
    reader = UpstreamProviders(services.settings, services.accounts.secret_box)
    with database.transaction() as session:
        config = reader.get(session, name)
    assert config is not None
    return config


def _upstream(
    subject: str = "upstream-1",
    email: str | None = "ada@example.com",
    verified: bool = True,
    amr: list[str] | None = None,
) -> UpstreamIdentity:
    return UpstreamIdentity(
        subject, email, verified, "Ada Lovelace", amr if amr is not None else ["pwd"]
    )


def _resolve(
    accounts: Accounts, database: Database, provider: ProviderConfig, upstream: UpstreamIdentity
) -> federation.SignIn | federation.NeedsProof | federation.Refused:
    with database.transaction() as session:
        return federation.resolve(accounts, session, provider, upstream, CONTEXT)


def _users(database: Database) -> int:
    with database.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


def _link(database: Database, provider: str, subject: str) -> FederatedIdentity | None:
    with database.transaction() as session:
        return repositories.get_federated_identity(session, provider, subject)


def _row(session: Session, user: User) -> User:
    row = session.get(User, user.id)
    assert row is not None
    return row


def _enrol_totp(accounts: Accounts, database: Database, user: User) -> None:
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, _row(session, user))
    with database.transaction() as session:
        factors.confirm_totp(
            accounts,
            session,
            _row(session, user),
            pyotp.TOTP(setup.secret).at(accounts.now()),
            CONTEXT,
            authenticated_at=accounts.now(),
        )


# -- first sign-in, and the next ones ---------------------------------------------------------


def test_a_new_verified_identity_creates_a_verified_account_without_password(
    accounts: Accounts, database: Database, services: Services
) -> None:
    provider = _provider(services, database)
    outcome = _resolve(accounts, database, provider, _upstream(email="  Ada@Example.COM "))
    assert isinstance(outcome, federation.SignIn)
    assert outcome.amr == ["fed", "pwd"] and outcome.idp == "corp"
    assert not outcome.needs_second_factor
    user = reload(database, outcome.user)
    assert user.email == "ada@example.com"  # normalised, as every address is
    assert user.email_verified and user.password_hash is None and user.name == "Ada Lovelace"
    link = _link(database, "corp", "upstream-1")
    assert link is not None and link.user_id == user.id and link.last_used_at is not None
    types = audit_types(database, user)
    assert {"federation.account_created", "federation.linked", "federation.signed_in"} <= set(types)


def test_the_same_subject_finds_its_account_again_even_with_another_email(
    accounts: Accounts, database: Database, services: Services
) -> None:
    provider = _provider(services, database)
    first = _resolve(accounts, database, provider, _upstream())
    assert isinstance(first, federation.SignIn)
    again = _resolve(
        accounts, database, provider, _upstream(email="new@example.com", verified=False)
    )
    assert isinstance(again, federation.SignIn)
    assert again.user.id == first.user.id
    assert _users(database) == 1
    link = _link(database, "corp", "upstream-1")
    assert link is not None and link.email == "new@example.com"  # the account page shows the latest


def test_an_existing_account_with_the_email_is_never_linked_silently(
    accounts: Accounts, database: Database, services: Services
) -> None:
    local = create_user(accounts, database, "ada@example.com")
    provider = _provider(services, database)
    outcome = _resolve(accounts, database, provider, _upstream())
    assert isinstance(outcome, federation.NeedsProof)
    assert (outcome.user_id, outcome.provider, outcome.subject) == (local.id, "corp", "upstream-1")
    assert _link(database, "corp", "upstream-1") is None
    assert _users(database) == 1
    assert "federation.linked" not in audit_types(database, local)


def test_another_subject_with_a_federated_accounts_email_must_prove_it_too(
    accounts: Accounts, database: Database, services: Services
) -> None:
    provider = _provider(services, database)
    first = _resolve(accounts, database, provider, _upstream(subject="first"))
    assert isinstance(first, federation.SignIn)
    second = _resolve(accounts, database, provider, _upstream(subject="second"))
    assert isinstance(second, federation.NeedsProof) and second.user_id == first.user.id
    assert _link(database, "corp", "second") is None


@pytest.mark.parametrize("email, verified", [("ada@example.com", False), (None, True)])
def test_an_email_the_upstream_does_not_vouch_for_creates_and_links_nothing(
    accounts: Accounts, database: Database, services: Services, email: str | None, verified: bool
) -> None:
    provider = _provider(services, database)
    outcome = _resolve(accounts, database, provider, _upstream(email=email, verified=verified))
    assert outcome == federation.Refused("unverified_email")
    assert _users(database) == 0 and _link(database, "corp", "upstream-1") is None


def test_an_unverified_email_of_an_existing_account_never_links(
    accounts: Accounts, database: Database, services: Services
) -> None:
    local = create_user(accounts, database, "ada@example.com")
    provider = _provider(services, database)
    outcome = _resolve(accounts, database, provider, _upstream(verified=False))
    assert outcome == federation.Refused("unverified_email")
    assert _link(database, "corp", "upstream-1") is None
    assert "federation.linked" not in audit_types(database, local)


def test_a_disabled_accounts_link_signs_nobody_in(
    accounts: Accounts, database: Database, services: Services
) -> None:
    provider = _provider(services, database)
    first = _resolve(accounts, database, provider, _upstream())
    assert isinstance(first, federation.SignIn)
    with database.transaction() as session:
        user = session.get(User, first.user.id)
        assert user is not None
        user.is_active = False
    assert _resolve(accounts, database, provider, _upstream()) == federation.Refused("disabled")


# -- amr and the second factor ----------------------------------------------------------------


def test_upstream_mfa_counts_only_for_a_provider_trusted_with_it(
    accounts: Accounts, database: Database, services: Services
) -> None:
    plain = _provider(services, database, "plain")
    trusted = _provider(services, database, "trusted", trust_mfa=True)
    assert federation.federated_amr(plain, ["pwd", "otp", "mfa"]) == ["fed", "pwd", "otp"]
    assert federation.federated_amr(trusted, ["pwd", "otp", "mfa"]) == ["fed", "pwd", "otp", "mfa"]
    assert federation.federated_amr(trusted, ["pwd"]) == ["fed", "pwd"]
    # Values that could not be an amr method never reach our tokens.
    assert federation.federated_amr(plain, ["fed", "pwd", "pwd", "<b>x</b>", ""]) == ["fed", "pwd"]


def test_an_account_with_its_own_second_factor_still_asks_for_it(
    accounts: Accounts, database: Database, services: Services
) -> None:
    provider = _provider(services, database)
    first = _resolve(accounts, database, provider, _upstream())
    assert isinstance(first, federation.SignIn)
    _enrol_totp(accounts, database, first.user)
    again = _resolve(accounts, database, provider, _upstream(amr=["pwd", "mfa"]))
    assert isinstance(again, federation.SignIn)
    assert again.needs_second_factor and "mfa" not in again.amr


def test_a_trusted_upstream_second_factor_stands_in_for_ours(
    accounts: Accounts, database: Database, services: Services
) -> None:
    provider = _provider(services, database, trust_mfa=True)
    first = _resolve(accounts, database, provider, _upstream())
    assert isinstance(first, federation.SignIn)
    _enrol_totp(accounts, database, first.user)
    with_mfa = _resolve(accounts, database, provider, _upstream(amr=["pwd", "otp", "mfa"]))
    assert isinstance(with_mfa, federation.SignIn) and not with_mfa.needs_second_factor
    assert with_mfa.amr == ["fed", "pwd", "otp", "mfa"]
    without = _resolve(accounts, database, provider, _upstream(amr=["pwd"]))
    assert isinstance(without, federation.SignIn) and without.needs_second_factor


# -- proving an existing account, then linking ----------------------------------------------


def test_a_wrong_password_proves_nothing(
    accounts: Accounts, database: Database, services: Services
) -> None:
    create_user(accounts, database, "ada@example.com")
    provider = _provider(services, database)
    proof = _resolve(accounts, database, provider, _upstream())
    assert isinstance(proof, federation.NeedsProof)
    with pytest.raises(InvalidCredentials), database.transaction() as session:
        federation_links.prove_password(accounts, session, proof, "not-the-password", CONTEXT)


def test_the_right_password_links_tells_the_owner_and_the_next_sign_in_finds_it(
    accounts: Accounts, database: Database, services: Services
) -> None:
    local = create_user(accounts, database, "ada@example.com")
    provider = _provider(services, database, label="Continue with Corp SSO")
    proof = _resolve(accounts, database, provider, _upstream())
    assert isinstance(proof, federation.NeedsProof)
    assert proof.amr_with_password() == ["fed", "pwd"]
    with database.transaction() as session:
        user = federation_links.prove_password(accounts, session, proof, PASSWORD, CONTEXT)
        federation_links.link_after_proof(accounts, session, user, proof, provider, CONTEXT)
    link = _link(database, "corp", "upstream-1")
    assert link is not None and link.user_id == local.id
    assert "federation.linked" in audit_types(database, local)
    [notice] = mails(database, "ada@example.com", "provider_linked")
    assert notice.subject == "Corp SSO was linked to your account"
    again = _resolve(accounts, database, provider, _upstream())
    assert isinstance(again, federation.SignIn) and again.user.id == local.id


def test_a_subject_linked_elsewhere_meanwhile_is_not_linked_twice(
    accounts: Accounts, database: Database, services: Services
) -> None:
    local = create_user(accounts, database, "ada@example.com")
    provider = _provider(services, database)
    proof = _resolve(accounts, database, provider, _upstream())
    assert isinstance(proof, federation.NeedsProof)
    other = create_user(accounts, database, "other@example.com")
    with database.transaction() as session:
        session.add(
            FederatedIdentity(
                provider="corp", subject="upstream-1", user_id=other.id, email="x@example.com"
            )
        )
    with pytest.raises(federation.LinkedElsewhere), database.transaction() as session:
        user = session.get(User, local.id)
        assert user is not None
        federation_links.link_after_proof(accounts, session, user, proof, provider, CONTEXT)
    link = _link(database, "corp", "upstream-1")
    assert link is not None and link.user_id == other.id


# -- the account page: links and unlinking -------------------------------------------------------


def _federated_user(accounts: Accounts, database: Database, provider: ProviderConfig) -> User:
    outcome = _resolve(accounts, database, provider, _upstream())
    assert isinstance(outcome, federation.SignIn)
    return outcome.user


def _unlink(accounts: Accounts, database: Database, user: User, name: str) -> None:
    with database.transaction() as session:
        fresh = session.get(User, user.id)
        assert fresh is not None
        federation.unlink(accounts, session, fresh, name, CONTEXT)


def test_the_only_way_in_cannot_be_unlinked(
    accounts: Accounts, database: Database, services: Services
) -> None:
    user = _federated_user(accounts, database, _provider(services, database))
    with pytest.raises(InvalidInput, match="only way to sign in"):
        _unlink(accounts, database, user, "corp")
    assert _link(database, "corp", "upstream-1") is not None


def test_a_password_lets_the_link_go(
    accounts: Accounts, database: Database, services: Services
) -> None:
    user = _federated_user(accounts, database, _provider(services, database))
    with database.transaction() as session:
        fresh = session.get(User, user.id)
        assert fresh is not None
        fresh.password_hash = accounts.hasher.hash(PASSWORD)
    _unlink(accounts, database, user, "corp")
    assert _link(database, "corp", "upstream-1") is None
    assert "federation.unlinked" in audit_types(database, user)
    with database.transaction() as session:
        assert federation.links(session, user) == []


def test_a_passkey_lets_the_link_go(
    accounts: Accounts, database: Database, services: Services
) -> None:
    user = _federated_user(accounts, database, _provider(services, database))
    with database.transaction() as session:
        session.add(
            Passkey(
                user_id=user.id,
                credential_id=uuid.uuid4().hex,
                public_key=b"cose",
                sign_count=0,
                aaguid=str(uuid.UUID(int=0)),
                name="laptop",
            )
        )
    _unlink(accounts, database, user, "corp")
    assert _link(database, "corp", "upstream-1") is None


def test_another_enabled_provider_lets_the_link_go(
    accounts: Accounts, database: Database, services: Services
) -> None:
    corp = _provider(services, database)
    other = _provider(services, database, "other")
    user = _federated_user(accounts, database, corp)
    with database.transaction() as session:
        fresh = session.get(User, user.id)
        assert fresh is not None
        proof = federation.NeedsProof(user.id, "other", "other-sub", user.email, ["fed"])
        federation_links.link_after_proof(accounts, session, fresh, proof, other, CONTEXT)
        titles = [link.title for link in federation.links(session, fresh)]
    assert titles == ["Corp", "Other"]
    with database.transaction() as session:
        services.providers.disable(session, "corp")
    # A disabled provider is no way in: the link to "other" is now the only one.
    with pytest.raises(InvalidInput):
        _unlink(accounts, database, user, "other")
    _unlink(accounts, database, user, "corp")
    assert _link(database, "corp", "upstream-1") is None
    assert _link(database, "other", "other-sub") is not None


def test_unlinking_a_provider_that_is_not_linked_is_a_lookup_error(
    accounts: Accounts, database: Database, services: Services
) -> None:
    _provider(services, database)
    user = create_user(accounts, database, "ada@example.com")
    with pytest.raises(LookupError):
        _unlink(accounts, database, user, "corp")


def test_a_mailed_link_code_works_once_and_only_for_its_upstream_identity(
    accounts: Accounts, database: Database, services: Services
) -> None:
    provider = _provider(services, database)
    first = _resolve(accounts, database, provider, _upstream(subject="first"))
    assert isinstance(first, federation.SignIn) and first.user.password_hash is None
    proof = _resolve(accounts, database, provider, _upstream(subject="second"))
    other = _resolve(accounts, database, provider, _upstream(subject="third"))
    assert isinstance(proof, federation.NeedsProof) and isinstance(other, federation.NeedsProof)
    with database.transaction() as session:
        federation_links.send_link_code(accounts, session, proof, "Corp")
    [mail] = mails(database, "ada@example.com", "link_code")
    code = mail.text_body.split("enter this code to link it:")[1].split()[0]
    with database.transaction() as session, pytest.raises(InvalidCode):
        federation_links.prove_code(accounts, session, other, code, CONTEXT)  # another identity's
    with database.transaction() as session:
        assert (
            federation_links.prove_code(accounts, session, proof, code, CONTEXT).id == first.user.id
        )
    with database.transaction() as session, pytest.raises(InvalidCode):
        federation_links.prove_code(accounts, session, proof, code, CONTEXT)
    assert "federation.link_code_failed" in audit_types(database, first.user)
