"""Second factors at the service level: authenticator apps (RFC 6238) and recovery codes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select

from identity.accounts import factors, recovery_codes
from identity.accounts.errors import InvalidCode, InvalidInput, ReauthenticationRequired, Throttled
from identity.accounts.service import Accounts
from identity.db import Database
from identity.models import RecoveryCode, TotpFactor, User
from tests.accounts.conftest import (
    CONTEXT,
    PASSWORD,
    Clock,
    audit_types,
    create_user,
    mails,
)


def _enrol(accounts: Accounts, database: Database, user: User) -> tuple[pyotp.TOTP, list[str]]:
    """Set up an authenticator app and confirm it with its current code."""
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get(User, user.id))
    totp = pyotp.TOTP(setup.secret)
    with database.transaction() as session:
        codes = factors.confirm_totp(
            accounts,
            session,
            session.get(User, user.id),
            totp.at(accounts.now()),
            CONTEXT,
            authenticated_at=accounts.now(),
        )
    return totp, codes


def _check(accounts: Accounts, database: Database, user: User, code: str) -> None:
    with database.transaction() as session:
        factors.check_totp(accounts, session, session.get(User, user.id), code, CONTEXT)


def _recover(accounts: Accounts, database: Database, user: User, code: str) -> None:
    with database.transaction() as session:
        recovery_codes.use_recovery_code(
            accounts, session, session.get(User, user.id), code, CONTEXT
        )


def test_setup_uri_names_the_site_and_the_email(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "uri@example.com")
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get(User, user.id))
    assert setup.uri.startswith("otpauth://totp/")
    assert "uri%40example.com" in setup.uri and "issuer=identity" in setup.uri
    assert f"secret={setup.secret}" in setup.uri
    assert setup.qr_svg().startswith("<svg")


def test_an_unconfirmed_app_is_no_second_factor(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "unconfirmed@example.com")
    with database.transaction() as session:
        factors.begin_totp(accounts, session, session.get(User, user.id))
        assert not factors.has_second_factor(session, session.get(User, user.id))


def test_the_seed_is_encrypted_at_rest(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "sealed@example.com")
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get(User, user.id))
    with database.transaction() as session:
        row = session.get(TotpFactor, user.id)
        assert row is not None
        assert setup.secret not in row.secret_sealed
        assert accounts.secret_box.open(row.secret_sealed) == setup.secret


def test_confirming_gives_ten_recovery_codes_once(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "codes@example.com")
    _totp, codes = _enrol(accounts, database, user)
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert len(code) == 11 and code[5] == "-"
        assert set(code.replace("-", "")) <= set("23456789abcdefghjkmnpqrstuvwxyz")
    with database.transaction() as session:
        stored = session.scalars(select(RecoveryCode.code_hash)).all()
        assert all(code not in " ".join(stored) for code in codes)
        assert factors.has_second_factor(session, session.get(User, user.id))
    assert "mfa.added" in audit_types(database, user)
    assert mails(database, user.email, "second_factor_added")


def test_a_code_works_once(
    accounts: Accounts, database: Database, clock: Clock, accounts_on: Callable[[Clock], Accounts]
) -> None:
    accounts = accounts_on(clock)
    user = create_user(accounts, database, "replay@example.com")
    totp, _ = _enrol(accounts, database, user)
    clock.advance(timedelta(seconds=30))
    code = totp.at(clock.now)
    _check(accounts, database, user, code)
    with pytest.raises(InvalidCode):
        _check(accounts, database, user, code)
    assert audit_types(database, user).count("mfa.failed") == 1


def test_one_step_of_drift_either_way_is_accepted(
    database: Database, clock: Clock, accounts_on: Callable[[Clock], Accounts]
) -> None:
    accounts = accounts_on(clock)
    user = create_user(accounts, database, "drift@example.com")
    totp, _ = _enrol(accounts, database, user)
    clock.advance(timedelta(minutes=5))
    _check(accounts, database, user, totp.at(clock.now - timedelta(seconds=30)))
    clock.advance(timedelta(minutes=5))
    _check(accounts, database, user, totp.at(clock.now + timedelta(seconds=30)))
    clock.advance(timedelta(minutes=5))
    with pytest.raises(InvalidCode):
        _check(accounts, database, user, totp.at(clock.now - timedelta(seconds=60)))
    with pytest.raises(InvalidCode):
        _check(accounts, database, user, totp.at(clock.now + timedelta(seconds=60)))


def test_wrong_codes_are_limited_per_account_with_growing_blocks(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "limited@example.com")
    totp, _ = _enrol(accounts, database, user)
    right = totp.now()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(5):
        with pytest.raises(InvalidCode):
            _check(accounts, database, user, wrong)
    with pytest.raises(Throttled) as first:
        _check(accounts, database, user, right)  # even the right code waits
    with pytest.raises(Throttled) as second:
        _check(accounts, database, user, right)
    assert second.value.retry_after >= first.value.retry_after >= 1


def test_a_recovery_code_works_once_with_or_without_dash(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "recover@example.com")
    _, codes = _enrol(accounts, database, user)
    _recover(accounts, database, user, codes[0].replace("-", "").upper())
    with pytest.raises(InvalidCode):
        _recover(accounts, database, user, codes[0])
    _recover(accounts, database, user, " " + codes[1].replace("-", " - ") + " ")
    with database.transaction() as session:
        assert factors.summary(session, session.get(User, user.id)).recovery_codes_left == 8
    assert "mfa.recovery_code_used" in audit_types(database, user)
    assert len(mails(database, user.email, "recovery_code_used")) == 2


def test_regenerating_voids_the_old_codes(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "regen@example.com")
    _, old = _enrol(accounts, database, user)
    with database.transaction() as session:
        new = factors.regenerate_recovery_codes(
            accounts, session, session.get(User, user.id), CONTEXT
        )
    with pytest.raises(InvalidCode):
        _recover(accounts, database, user, old[2])
    _recover(accounts, database, user, new[2])


def test_removing_needs_a_recent_sign_in_or_the_password(
    database: Database, clock: Clock, accounts_on: Callable[[Clock], Accounts]
) -> None:
    accounts = accounts_on(clock)
    user = create_user(accounts, database, "remove@example.com")
    signed_in_at = clock.now
    factors.check_recent(accounts, user, signed_in_at, None, CONTEXT)
    clock.advance(timedelta(minutes=6))
    with pytest.raises(ReauthenticationRequired):
        factors.check_recent(accounts, user, signed_in_at, None, CONTEXT)
    with pytest.raises(InvalidInput):
        factors.check_recent(accounts, user, signed_in_at, "not-the-password", CONTEXT)
    factors.check_recent(accounts, user, signed_in_at, PASSWORD, CONTEXT)


def test_removing_the_app_removes_its_recovery_codes(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "gone@example.com")
    _, _codes = _enrol(accounts, database, user)
    with database.transaction() as session:
        assert factors.remove_totp(accounts, session, session.get(User, user.id), CONTEXT)
    with database.transaction() as session:
        assert not factors.has_second_factor(session, session.get(User, user.id))
        assert factors.summary(session, session.get(User, user.id)).recovery_codes_left == 0
    assert mails(database, user.email, "second_factor_removed")


def test_a_rotated_secret_key_still_opens_and_reseals(
    accounts: Accounts, database: Database
) -> None:
    from identity.secret_box import SecretBox, new_key

    user = create_user(accounts, database, "rotate@example.com")
    old_box = accounts.secret_box
    totp, _ = _enrol(accounts, database, user)
    first = new_key()
    with database.transaction() as session:
        sealed = session.get(TotpFactor, user.id).secret_sealed
    # The old key stays in the list, after the new one.
    accounts.secret_box = SecretBox([first, *old_box._keys])
    _check(accounts, database, user, totp.at(accounts.now() + timedelta(seconds=30)))
    with database.transaction() as session:
        resealed = session.get(TotpFactor, user.id).secret_sealed
    assert resealed != sealed
    assert SecretBox([first]).open(resealed) == totp.secret


def test_amr_and_acr() -> None:
    assert factors.acr_of(["pwd"]) == "urn:identity:loa:1"
    assert factors.with_factor(["pwd"], "otp") == ["pwd", "otp", "mfa"]
    assert factors.with_factor(["pwd", "otp", "mfa"], "otp") == ["pwd", "otp", "mfa"]
    assert factors.acr_of(factors.with_factor(["pwd"], "hwk")) == "urn:identity:loa:2"
