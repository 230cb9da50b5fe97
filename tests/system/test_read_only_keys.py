"""A keys folder mounted read-only (a Kubernetes secret): reading needs no lock, writing says
in one line that it needs a writable folder."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from identity.db import Database
from identity.keys import KeyStore
from identity.secret_box import new_key
from tests.conftest import free_port, run_cli, served_environment, stop_process, wait_until_up
from tests.system.read_only_helpers import read_only, read_only_command


def _complete_key_set(folder: Path) -> list[str]:
    KeyStore(folder, max_token_ttl=600).ensure()
    (folder / ".lock").unlink()  # as a secret holds it: the keys and the manifest only
    return sorted(path.name for path in folder.iterdir())


def _identity(
    env: dict[str, str], prefix: list[str], folder: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    argv = read_only_command(prefix, folder, [sys.executable, "-m", "identity", *args])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def _env(database_url: str, folder: Path) -> dict[str, str]:
    env = served_environment(database_url, None, "identity-test-ro:", folder, free_port())
    del env["IDENTITY_ISSUER"]  # serve derives it from its --port
    env["IDENTITY_MIGRATE_ON_START"] = "0"
    return env


def test_keys_list_reads_a_complete_read_only_folder(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    files = _complete_key_set(folder)
    with read_only(folder) as prefix:
        result = _identity(_env(database_url, folder), prefix, folder, "keys", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(key["state"] for key in json.loads(result.stdout)) == ["active", "next"]
    assert sorted(path.name for path in folder.iterdir()) == files  # no lock file written


def test_rotate_in_a_read_only_folder_says_it_needs_a_writable_one(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    files = _complete_key_set(folder)
    manifest = (folder / "manifest.json").read_text()
    with read_only(folder) as prefix:
        for command in (["rotate"], ["retire"]):
            result = _identity(_env(database_url, folder), prefix, folder, "keys", *command)
            assert result.returncode != 0 and result.stdout == ""
            assert result.stderr.count("\n") == 1, result.stderr
            assert str(folder) in result.stderr and "writable" in result.stderr
    assert (folder / "manifest.json").read_text() == manifest
    assert sorted(path.name for path in folder.iterdir()) == files


def test_an_empty_read_only_folder_is_one_line_naming_it(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    env = _env(database_url, folder)
    with read_only(folder) as prefix:
        for command in (["keys", "list"], ["serve", "--port", str(free_port())]):
            result = _identity(env, prefix, folder, *command)
            assert result.returncode != 0, command
            assert result.stderr.count("\n") == 1, result.stderr
            assert "Traceback" not in result.stderr
            assert str(folder) in result.stderr and "no signing keys" in result.stderr


def test_serve_signs_with_a_complete_read_only_folder(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "keys"
    files = _complete_key_set(folder)
    port = free_port()
    prefix_key = f"{redis_prefix}{secrets.token_hex(4)}:"
    env = served_environment(database_url, redis_url, prefix_key, folder, port)
    url = f"http://127.0.0.1:{port}"
    client = run_cli(env, "clients", "create", "--name", "svc")
    with read_only(folder) as prefix:
        argv = [sys.executable, "-m", "identity", "serve", "--port", str(port), "--workers", "2"]
        server = subprocess.Popen(read_only_command(prefix, folder, argv), env=env)
        try:
            wait_until_up(url, server)
            jwks = httpx.get(f"{url}/.well-known/jwks.json").json()
            token = httpx.post(
                f"{url}/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(client["client_id"], client["client_secret"]),
            )
        finally:
            stop_process(server)
    assert len(jwks["keys"]) == 2
    assert token.status_code == 200 and token.json()["token_type"] == "Bearer"
    assert sorted(path.name for path in folder.iterdir()) == files


def test_a_complete_key_set_holds_the_key_of_the_secrets_at_rest(tmp_path: Path) -> None:
    assert "secret.keys" in _complete_key_set(tmp_path / "keys")


def test_a_read_only_folder_without_the_secret_key_needs_the_setting(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    _complete_key_set(folder)
    (folder / "secret.keys").unlink()  # a key set made before secrets at rest existed
    env = _env(database_url, folder)
    with read_only(folder) as prefix:
        result = _identity(env, prefix, folder, "serve", "--port", str(free_port()))
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr and "IDENTITY_SECRET_KEY" in result.stderr
        env["IDENTITY_SECRET_KEY"] = new_key()
        port = free_port()
        argv = [sys.executable, "-m", "identity", "serve", "--port", str(port)]
        server = subprocess.Popen(read_only_command(prefix, folder, argv), env=env)
        try:
            wait_until_up(f"http://127.0.0.1:{port}", server)
        finally:
            stop_process(server)
    assert not (folder / "secret.keys").exists()
