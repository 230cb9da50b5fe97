"""Secrets at rest: the keys, where they come from, and rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from identity.secret_box import KEY_FILE, SecretBox, SecretBoxError, new_key


def test_a_missing_key_file_is_made_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    first = SecretBox.from_sources(None, tmp_path)
    sealed = first.seal("JBSWY3DPEHPK3PXP")
    again = SecretBox.from_sources(None, tmp_path)  # a second process: the same key
    assert again.open(sealed) == "JBSWY3DPEHPK3PXP"
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no draft left behind


def test_the_setting_wins_over_the_file_and_its_first_key_seals(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    sealed_before = SecretBox([old]).seal("seed")
    box = SecretBox.from_sources(f"{new}, {old}", tmp_path)
    assert not (tmp_path / KEY_FILE).exists()
    assert box.open(sealed_before) == "seed"
    assert not box.sealed_with_first_key(sealed_before)
    assert SecretBox([new]).open(box.seal("seed")) == "seed"


def test_a_value_no_key_opens_is_refused(tmp_path: Path) -> None:
    sealed = SecretBox([new_key()]).seal("seed")
    with pytest.raises(SecretBoxError):
        SecretBox([new_key()]).open(sealed)


def test_a_malformed_key_is_refused_with_the_way_to_make_one() -> None:
    with pytest.raises(SecretBoxError, match="identity keys secret"):
        SecretBox(["not-a-key"])


def test_a_keys_folder_where_no_file_can_be_made_says_what_to_set(tmp_path: Path) -> None:
    # A read-only mount refuses the new file; so does a "folder" that is a file, whoever runs
    # the test (root writes to read-only folders).
    not_a_folder = tmp_path / "keys"
    not_a_folder.write_text("")
    with pytest.raises(SecretBoxError, match="IDENTITY_SECRET_KEY"):
        SecretBox.from_sources(None, not_a_folder)
