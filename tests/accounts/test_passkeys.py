"""Passkeys at the service level, driven by a software authenticator (tests.software_authenticator):
adding one, signing in with one, the counter that betrays a copy, and the account's list."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from identity.accounts import passkeys
from identity.accounts.errors import InvalidInput, Throttled
from identity.accounts.passkey_ceremonies import PasskeyRefused
from identity.accounts.service import Accounts
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, Passkey, User
from tests.accounts.conftest import CONTEXT, Clock, audit_types, create_user, mails
from tests.software_authenticator import AAGUID, SoftwareAuthenticator, b64url

LOCAL_ISSUER = "http://localhost:8000"


@pytest.fixture
def settings(settings_for: Callable[..., Settings]) -> Settings:
    """Browsers offer WebAuthn on ``localhost`` but never on an IP address."""
    return settings_for(issuer=LOCAL_ISSUER)


def _loaded(session: Session, user: User) -> User:
    """``user`` as ``session`` sees it."""
    found = session.get(User, user.id)
    assert found is not None
    return found


def _register(
    accounts: Accounts,
    database: Database,
    user: User,
    device: SoftwareAuthenticator,
    name: str = "",
    **answer: Any,
) -> Passkey:
    with database.transaction() as session:
        options, state = passkeys.registration_options(
            accounts, session, _loaded(session, user), authenticated_at=accounts.now()
        )
    credential = device.create(options, **answer)
    with database.transaction() as session:
        return passkeys.finish_registration(
            accounts, session, _loaded(session, user), state, json.dumps(credential), name, CONTEXT
        )


def _sign_in(
    accounts: Accounts,
    database: Database,
    device: SoftwareAuthenticator,
    *,
    for_user: User | None = None,
    **answer: Any,
) -> User:
    with database.transaction() as session:
        owner = _loaded(session, for_user) if for_user else None
        options, state = passkeys.authentication_options(accounts, session, owner)
    credential = device.get(options, **answer)
    with database.transaction() as session:
        return passkeys.finish_authentication(
            accounts, session, state, json.dumps(credential), CONTEXT
        )


def _stored(database: Database, device: SoftwareAuthenticator) -> Passkey:
    with database.transaction() as session:
        row = session.scalars(select(Passkey).where(Passkey.credential_id == device.id)).first()
        assert row is not None
        return row


def _failure_reasons(database: Database, user: User) -> list[str]:
    query = select(AuditEvent).where(
        AuditEvent.subject == str(user.id), AuditEvent.outcome == "failure"
    )
    with database.transaction() as session:
        return [
            str((row.detail or {}).get("reason"))
            for row in session.scalars(query.order_by(AuditEvent.id))
        ]


# -- where passkeys work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "rp_id", "origin"),
    [
        ("http://localhost:8000", "localhost", "http://localhost:8000"),
        ("https://ID.example.com:443/tenant", "id.example.com", "https://id.example.com"),
        ("https://id.example.com:8443", "id.example.com", "https://id.example.com:8443"),
    ],
)
def test_the_relying_party_is_the_issuers_host(
    settings_for: Callable[..., Settings], issuer: str, rp_id: str, origin: str
) -> None:
    settings = settings_for(issuer=issuer)
    assert passkeys.rp_id(settings) == rp_id
    assert passkeys.expected_origin(settings) == origin
    assert passkeys.available(settings)


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8000", "http://[::1]:8000"])
def test_an_ip_literal_issuer_has_no_passkeys(
    settings_for: Callable[..., Settings], issuer: str
) -> None:
    settings = settings_for(issuer=issuer)
    assert passkeys.rp_id(settings) is None
    assert not passkeys.available(settings)


# -- adding a passkey ------------------------------------------------------------------------


def test_registration_options_ask_for_a_verified_discoverable_passkey(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "options@example.com")
    with database.transaction() as session:
        options_json, state = passkeys.registration_options(
            accounts, session, _loaded(session, user), authenticated_at=accounts.now()
        )
    options = json.loads(options_json)
    assert options["rp"]["id"] == "localhost"
    assert options["user"]["id"] == b64url(user.id.bytes)  # the UUID, not the address
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -257]
    assert options["excludeCredentials"] == []
    assert state["challenge"] == options["challenge"]


def test_registration_stores_the_passkey_and_tells_the_owner(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "register@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings), synced=True)
    passkey = _register(accounts, database, user, device, name="  Laptop  ")
    row = _stored(database, device)
    assert row.id == passkey.id and row.user_id == user.id
    assert row.name == "Laptop"
    assert row.sign_count == 0 and row.last_used_at is None
    assert row.aaguid == str(uuid.UUID(bytes=AAGUID))
    assert row.transports == ["hybrid", "internal"]
    assert row.backup_eligible and row.backup_state
    assert "mfa.added" in audit_types(database, user)
    assert len(mails(database, user.email, "second_factor_added")) == 1
    with database.transaction() as session:
        assert passkeys.has_passkey(session, _loaded(session, user))


def test_a_passkey_without_a_name_is_called_passkey(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "unnamed@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    assert _register(accounts, database, user, device).name == "Passkey"


def test_registration_without_user_verification_is_refused(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "no-uv@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    with pytest.raises(PasskeyRefused):
        _register(accounts, database, user, device, user_verified=False)
    with database.transaction() as session:
        assert not passkeys.has_passkey(session, _loaded(session, user))


def test_registration_from_another_origin_is_refused(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "origin@example.com")
    device = SoftwareAuthenticator("http://localhost:9999")
    with pytest.raises(PasskeyRefused):
        _register(accounts, database, user, device)


def test_a_registration_challenge_lives_five_minutes(
    accounts_on: Callable[[Clock], Accounts], database: Database, clock: Clock
) -> None:
    accounts = accounts_on(clock)
    user = create_user(accounts, database, "late@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    with database.transaction() as session:
        options, state = passkeys.registration_options(
            accounts, session, _loaded(session, user), authenticated_at=accounts.now()
        )
    clock.advance(timedelta(minutes=5, seconds=1))
    with database.transaction() as session, pytest.raises(PasskeyRefused):
        passkeys.finish_registration(
            accounts,
            session,
            _loaded(session, user),
            state,
            json.dumps(device.create(options)),
            "",
            CONTEXT,
        )


def test_a_registration_started_for_another_account_is_refused(
    accounts: Accounts, database: Database
) -> None:
    ada = create_user(accounts, database, "ada-start@example.com")
    eve = create_user(accounts, database, "eve-start@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    with database.transaction() as session:
        options, state = passkeys.registration_options(
            accounts, session, _loaded(session, ada), authenticated_at=accounts.now()
        )
    with database.transaction() as session, pytest.raises(PasskeyRefused):
        passkeys.finish_registration(
            accounts,
            session,
            _loaded(session, eve),
            state,
            json.dumps(device.create(options)),
            "",
            CONTEXT,
        )


def test_registration_options_exclude_the_accounts_passkeys(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "exclude@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    with database.transaction() as session:
        options, _state = passkeys.registration_options(
            accounts, session, _loaded(session, user), authenticated_at=accounts.now()
        )
    excluded = json.loads(options)["excludeCredentials"]
    assert [entry["id"] for entry in excluded] == [device.id]
    assert excluded[0]["transports"] == ["hybrid", "internal"]


def test_the_same_passkey_cannot_be_registered_twice(
    accounts: Accounts, database: Database
) -> None:
    ada = create_user(accounts, database, "ada-twice@example.com")
    eve = create_user(accounts, database, "eve-twice@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, ada, device)
    with pytest.raises(PasskeyRefused):
        _register(accounts, database, eve, device)
    assert _stored(database, device).user_id == ada.id


def test_a_long_or_multiline_name_is_refused(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "long-name@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    for name in ("x" * 101, "two\nlines"):
        with pytest.raises(InvalidInput) as refused:
            _register(accounts, database, user, device, name=name)
        assert "name" in refused.value.fields


# -- signing in ------------------------------------------------------------------------------


def test_a_passkey_signs_its_owner_in(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "sign-in@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    with database.transaction() as session:
        options, _state = passkeys.authentication_options(accounts, session)
    assert json.loads(options)["allowCredentials"] == []  # discoverable: any of this site's
    assert json.loads(options)["userVerification"] == "required"
    signed_in = _sign_in(accounts, database, device)
    assert signed_in.id == user.id
    row = _stored(database, device)
    assert row.sign_count == 1 and row.last_used_at is not None
    assert audit_types(database, user)[-2:] == ["mfa.used", "login.succeeded"]
    assert passkeys.PASSKEY_AMR == ["hwk", "user", "mfa"]


def test_an_authenticator_without_a_counter_keeps_working(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "synced@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings), synced=True)
    _register(accounts, database, user, device)
    for _ in range(2):  # synced passkeys report 0 every time
        assert _sign_in(accounts, database, device, counter=0).id == user.id


def test_a_counter_going_backwards_is_refused_and_audited(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "clone@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    _sign_in(accounts, database, device, counter=7)
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, device, counter=7)  # a copy that signed as often
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, device, counter=3)
    assert audit_types(database, user).count("passkey.clone_suspected") == 2
    assert _stored(database, device).sign_count == 7
    assert _sign_in(accounts, database, device, counter=8).id == user.id


def test_signing_in_from_another_origin_is_refused(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "phish@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, device, origin="https://login.example.net")
    assert _failure_reasons(database, user) == ["not_verified"]


def test_signing_in_without_user_verification_is_refused(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "presence-only@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, device, user_verified=False)
    assert _stored(database, device).last_used_at is None


def test_a_signature_by_another_key_is_refused(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "forged@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    forger = SoftwareAuthenticator(device.origin)
    forger.credential_id, forger.user_handle = device.credential_id, device.user_handle
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, forger, counter=50)
    assert "passkey.clone_suspected" not in audit_types(database, user)
    assert _stored(database, device).sign_count == 0


def test_an_unknown_passkey_is_refused(accounts: Accounts, database: Database) -> None:
    stranger = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    stranger.user_handle = b"\x00" * 16
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, stranger)


def test_a_disabled_account_cannot_sign_in_with_its_passkey(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "disabled-passkey@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    with database.transaction() as session:
        session.execute(update(User).where(User.id == user.id).values(is_active=False))
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, device)
    assert _failure_reasons(database, user) == ["disabled"]


def test_an_unverified_account_cannot_sign_in_with_a_passkey(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "unverified-passkey@example.com", verified=False)
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, device)
    assert _failure_reasons(database, user) == ["unverified"]


def test_failed_passkeys_are_throttled_per_account(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "throttled-passkey@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    _register(accounts, database, user, device)
    for _ in range(5):  # the mfa.account limiter's default: 5 in 5 minutes
        with pytest.raises(PasskeyRefused):
            _sign_in(accounts, database, device, user_verified=False)
    with pytest.raises(Throttled):
        _sign_in(accounts, database, device)
    assert "mfa.throttled" in audit_types(database, user)


# -- the second step after a password --------------------------------------------------------


def test_a_second_step_offers_only_the_accounts_passkeys(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "second-step@example.com")
    devices = [SoftwareAuthenticator(passkeys.expected_origin(accounts.settings)) for _ in range(2)]
    for device in devices:
        _register(accounts, database, user, device)
    with database.transaction() as session:
        options, state = passkeys.authentication_options(accounts, session, _loaded(session, user))
    assert [e["id"] for e in json.loads(options)["allowCredentials"]] == [d.id for d in devices]
    assert state["user"] == str(user.id)
    assert _sign_in(accounts, database, devices[1], for_user=user).id == user.id
    assert "login.succeeded" not in audit_types(database, user)  # the password sign-in says it


def test_a_second_step_refuses_another_accounts_passkey(
    accounts: Accounts, database: Database
) -> None:
    ada = create_user(accounts, database, "ada-step@example.com")
    eve = create_user(accounts, database, "eve-step@example.com")
    ada_device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    eve_device = SoftwareAuthenticator(ada_device.origin)
    _register(accounts, database, ada, ada_device)
    _register(accounts, database, eve, eve_device)
    with database.transaction() as session:
        _options, state = passkeys.authentication_options(accounts, session, _loaded(session, ada))
        eve_options, _eve_state = passkeys.authentication_options(accounts, session)
    # Eve's authenticator signs the challenge that was sent for Ada's second step.
    answer = eve_device.get(
        json.dumps({**json.loads(eve_options), "challenge": state["challenge"]})
    )
    with database.transaction() as session, pytest.raises(PasskeyRefused):
        passkeys.finish_authentication(accounts, session, state, json.dumps(answer), CONTEXT)
    assert _failure_reasons(database, ada) == ["another_account"]
    with database.transaction() as session, pytest.raises(PasskeyRefused):
        passkeys.finish_authentication(
            accounts, session, _eve_state, json.dumps(answer), CONTEXT, expected_user_id=ada.id
        )


def test_an_account_without_passkeys_has_no_second_step(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "no-passkeys@example.com")
    with database.transaction() as session, pytest.raises(PasskeyRefused):
        passkeys.authentication_options(accounts, session, _loaded(session, user))


# -- the account's passkeys ------------------------------------------------------------------


def test_renaming_and_removing_a_passkey(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "manage@example.com")
    other = create_user(accounts, database, "manage-other@example.com")
    device = SoftwareAuthenticator(passkeys.expected_origin(accounts.settings))
    passkey = _register(accounts, database, user, device)
    with database.transaction() as session:
        owner, stranger = _loaded(session, user), _loaded(session, other)
        with pytest.raises(InvalidInput):
            passkeys.rename_passkey(accounts, session, stranger, passkey.id, "Mine", CONTEXT)
        passkeys.rename_passkey(accounts, session, owner, passkey.id, "Phone", CONTEXT)
        assert [p.name for p in passkeys.list_passkeys(session, owner)] == ["Phone"]
        assert not passkeys.remove_passkey(accounts, session, stranger, passkey.id, CONTEXT)
        assert passkeys.remove_passkey(accounts, session, owner, passkey.id, CONTEXT)
        assert not passkeys.has_passkey(session, owner)
    assert audit_types(database, user)[-1] == "mfa.removed"
    assert len(mails(database, user.email, "second_factor_removed")) == 1
    with pytest.raises(PasskeyRefused):
        _sign_in(accounts, database, device)
