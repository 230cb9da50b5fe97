"""A command that only reads never creates a database where it happens to run: it names the
database it looked at and says it is missing or empty."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_main as _run

READING = [
    ["users", "list"],
    ["users", "show", "ada@example.com"],
    ["clients", "list"],
    ["clients", "show", "some-client"],
    ["audit", "list"],
    ["audit", "tail", "--max-polls", "1"],
    ["mail", "last", "--to", "ada@example.com", "--wait", "0"],
]


@pytest.fixture
def fresh_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A folder with nothing in it, and no IDENTITY_* setting: the defaults, as a new
    operator has them."""
    for name in list(os.environ):
        if name.startswith("IDENTITY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", READING, ids=lambda words: " ".join(words))
def test_reading_a_missing_database_names_it_and_creates_nothing(
    fresh_folder: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code, out, err = _run(capsys, *command)
    assert code != 0 and out == "" and err.count("\n") == 1
    assert f"no database at {fresh_folder / 'identity.db'}" in err and "missing" in err
    assert "IDENTITY_DATABASE_URL" in err
    assert list(fresh_folder.iterdir()) == []


def test_reading_an_empty_database_file_says_it_is_empty(
    fresh_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (fresh_folder / "identity.db").touch()
    code, _, err = _run(capsys, "users", "list")
    assert code != 0 and "the file is empty" in err
    assert (fresh_folder / "identity.db").stat().st_size == 0


def test_a_command_that_writes_still_creates_the_default_database(
    fresh_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "migrate")
    assert code == 0, err
    assert (fresh_folder / "identity.db").stat().st_size > 0
    code, out, _ = _run(capsys, "users", "list")
    assert code == 0 and out == "no users\n"
