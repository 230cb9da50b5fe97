"""Passwords: the policy refuses what is short, huge, common or the email; argon2id hashes."""

from __future__ import annotations

import statistics
import time
import unicodedata
from collections.abc import Callable

import pytest

from identity.accounts.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    PasswordHasher,
    PasswordPolicyError,
    check_policy,
    normalise,
)

STRONG_8 = "vT7#kq9!"  # zxcvbn scores it 2: the shortest password the policy takes


def _fullwidth(ascii_text: str) -> str:
    """The same text in fullwidth forms (U+FF01..U+FF5E), which NFKC maps back to ASCII."""
    return "".join(chr(ord(char) + 0xFEE0) for char in ascii_text)


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_kib=8, parallelism=1)


def _refusal(password: str, **kwargs: str) -> str:
    with pytest.raises(PasswordPolicyError) as caught:
        check_policy(password, **kwargs)
    assert str(caught.value)  # a sentence the user can read
    return caught.value.code


def test_seven_characters_are_too_short() -> None:
    assert _refusal(STRONG_8[: MIN_LENGTH - 1]) == "too_short"


def test_eight_strong_characters_are_accepted() -> None:
    assert len(STRONG_8) == MIN_LENGTH
    assert check_policy(STRONG_8) == STRONG_8


def test_1025_characters_are_too_long() -> None:
    assert _refusal("x" * (MAX_LENGTH + 1)) == "too_long"


def test_huge_input_is_refused_before_any_other_work() -> None:
    huge = _fullwidth("p") * 10_000_000  # fullwidth: normalising it would be slow
    started = time.perf_counter()
    assert _refusal(huge) == "too_long"
    assert time.perf_counter() - started < 0.05


def test_1024_characters_are_accepted_and_never_truncated(hasher: PasswordHasher) -> None:
    password = "".join(chr(ord("a") + (i * 7) % 26) for i in range(MAX_LENGTH))
    assert check_policy(password) == password
    stored = hasher.hash(password)
    assert hasher.verify(stored, password)
    assert not hasher.verify(stored, password[:-1] + "!")
    assert not hasher.verify(stored, password[:-1])


@pytest.mark.parametrize(
    "password", ["password", "password123", "qwertyuiop", "iloveyou1", "12345678"]
)
def test_common_passwords_are_refused(password: str) -> None:
    assert _refusal(password) == "common"


def test_password_containing_the_email_local_part_is_refused() -> None:
    email = "alice.smith@example.com"
    assert _refusal("Alice.Smith-rocks-2024", email=email) == "contains_email"


def test_password_equal_to_the_email_is_refused_even_with_a_short_local_part() -> None:
    assert _refusal("bob@example.com", email="bob@example.com") == "contains_email"


def test_short_local_part_alone_does_not_refuse() -> None:
    assert check_policy("bobcat-in-the-rainforest", email="bob@example.com")


def test_a_word_of_the_name_counts_against_the_score() -> None:
    assert check_policy("okonkwo!98") == "okonkwo!98"
    assert _refusal("okonkwo!98", name="Marguerite Okonkwo") == "common"


def test_the_service_name_counts_against_the_score() -> None:
    assert _refusal("identity99!") == "common"


def test_no_composition_rules_a_lowercase_passphrase_is_accepted() -> None:
    passphrase = "correct horse battery staple"
    assert check_policy(passphrase) == passphrase


def test_policy_returns_the_nfkc_form() -> None:
    assert check_policy(_fullwidth(STRONG_8)) == STRONG_8


def test_composed_hash_verifies_with_the_decomposed_form(hasher: PasswordHasher) -> None:
    composed = check_policy("café-crème-brûlée")
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert hasher.verify(hasher.hash(composed), decomposed)


def test_fullwidth_password_verifies_against_the_ascii_hash(hasher: PasswordHasher) -> None:
    assert hasher.verify(hasher.hash(normalise("password")), _fullwidth("password"))


def test_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    assert hasher.verify(hasher.hash(STRONG_8), STRONG_8.upper()) is False


def test_needs_rehash_when_parameters_rise(hasher: PasswordHasher) -> None:
    stored = hasher.hash(STRONG_8)
    assert hasher.needs_rehash(stored) is False
    stronger = PasswordHasher(time_cost=2, memory_kib=8, parallelism=1)
    assert stronger.needs_rehash(stored) is True


@pytest.mark.parametrize(
    "password_hash",
    [
        "",
        "not-a-hash",
        "$argon2id$v=19$m=8,t=1,p=1$garbage",
        "$argon2id$v=19$m=8,t=1,p=1$$",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$argon2id$v=19$m=8,t=1,p=1$é$é",
    ],
)
def test_malformed_hash_verifies_false_without_raising(
    hasher: PasswordHasher, password_hash: str
) -> None:
    assert hasher.verify(password_hash, STRONG_8) is False
    assert hasher.needs_rehash(password_hash) is True


def test_dummy_verify_costs_about_what_verify_costs() -> None:
    hasher = PasswordHasher(time_cost=2, memory_kib=4096, parallelism=1)
    stored = hasher.hash(STRONG_8)
    hasher.dummy_verify(STRONG_8)  # the first call also makes the dummy hash

    def median_seconds(action: Callable[[], object]) -> float:
        runs = []
        for _ in range(15):
            started = time.perf_counter()
            action()
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    real = median_seconds(lambda: hasher.verify(stored, "wrong password"))
    dummy = median_seconds(lambda: hasher.dummy_verify("wrong password"))
    assert real / 3 < dummy < real * 3


def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    hasher = PasswordHasher(time_cost=2, memory_kib=64, parallelism=2)
    stored = hasher.hash(STRONG_8)
    assert stored.startswith("$argon2id$")
    assert "$m=64,t=2,p=2$" in stored
