"""Every operator mistake is one line on stderr and a non-zero exit, never a traceback.

The commands run as processes, as an operator runs them, so what is checked is the whole of
what reaches the terminal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from identity.db import Database
from identity.models import User


def _identity(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """``identity ARGS`` in ``cwd`` with no IDENTITY_* setting but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "identity", *args],
        cwd=cwd,
        env=clean,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode not in (0, None), result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("identity: error: ")
    return result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("IDENTITY_DATABASE_URL", "notaurl", "IDENTITY_DATABASE_URL: not a database URL"),
        ("IDENTITY_DATABASE_URL", "postgres://id:pw@db/identity", "postgresql+psycopg://"),
        ("IDENTITY_DATABASE_URL", "mysql://id:pw@db/identity", "mysql is not supported"),
        ("IDENTITY_LOG_LEVEL", "verbose", "IDENTITY_LOG_LEVEL: expected one of debug"),
        ("IDENTITY_ACCESS_TOKEN_TTL", "abc", "IDENTITY_ACCESS_TOKEN_TTL: expected a whole"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    for command in (["serve", "--port", "1"], ["users", "list"]):
        assert expected in _one_line(_identity(tmp_path, *command, env={variable: value}))
    assert list(tmp_path.iterdir()) == []  # nothing was created on the way


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--port", "99999"], "argument --port: '99999' is not a port"),
        (["--port", "http"], "argument --port: 'http' is not a port"),
        (["--workers", "0"], "argument --workers: '0' is not a whole number above 0"),
    ],
)
def test_a_bad_serve_option_is_one_line(tmp_path: Path, option: list[str], expected: str) -> None:
    assert expected in _one_line(_identity(tmp_path, "serve", *option))
    assert list(tmp_path.iterdir()) == []


def test_a_keys_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("")
    for command in (["keys", "list"], ["keys", "rotate"], ["serve", "--port", "1"]):
        message = _one_line(_identity(tmp_path, *command, env={"IDENTITY_MIGRATE_ON_START": "0"}))
        assert f"{tmp_path / 'keys'} (IDENTITY_KEYS_DIR) is a file, not a folder" in message


def test_a_port_in_use_is_one_line_before_any_migration(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = _one_line(_identity(tmp_path, "serve", "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert not (tmp_path / "identity.db").exists() and not (tmp_path / "keys").exists()


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "1"], ["users", "list"]])
def test_a_database_file_that_cannot_be_opened_is_named(tmp_path: Path, command: list[str]) -> None:
    missing_folder = tmp_path / "no-such-folder" / "identity.db"
    not_a_database = tmp_path / "garbage.db"
    not_a_database.write_bytes(b"this is not SQLite, " * 100)
    for path in (missing_folder, not_a_database):
        env = {"IDENTITY_DATABASE_URL": f"sqlite:///{path}"}
        assert str(path) in _one_line(_identity(tmp_path, *command, env=env))


def test_a_listing_cut_short_by_its_reader_ends_quietly(
    env: None, database: Database, tmp_path: Path
) -> None:
    with database.transaction() as session:
        session.add_all(
            User(email=f"user{n}@example.com", name=f"User {n}", password_hash="x")
            for n in range(3)
        )
    # `identity users list --json | head -1`, without the race: the reader has already left.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = _identity(
            tmp_path, "users", "list", "--json", env=dict(_environment()), stdout=writer
        )
    finally:
        os.close(writer)
    assert result.returncode == 0 and result.stderr == ""


def test_users_list_piped_to_head_prints_its_first_line_only(
    env: None, database: Database, tmp_path: Path
) -> None:
    with database.transaction() as session:
        session.add_all(
            User(email=f"user{n}-{uuid.uuid4().hex}@example.com", name="U", password_hash="x")
            for n in range(2000)  # more than a pipe holds, so the writer meets the closed end
        )
    command = f"{sys.executable} -m identity users list --json | head -1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        env={**os.environ, **_environment()},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "[\n" and result.stderr == ""
    assert result.returncode == 0


def _environment() -> dict[str, str]:
    """The IDENTITY_* variables the ``env`` fixture set for in-process commands."""
    return {k: v for k, v in os.environ.items() if k.startswith("IDENTITY_")}
