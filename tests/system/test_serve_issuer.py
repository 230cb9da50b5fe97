"""identity serve is reached where it listens: with no IDENTITY_ISSUER the issuer follows
--host/--port, and a configured loopback issuer that points elsewhere is one clear warning.
Its log lines are text on a terminal and JSON otherwise."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import httpx

from identity.db import Database
from tests.conftest import free_port, served_environment, stop_process, wait_until_up


def _serve(
    database_url: str, tmp_path: Path, port: int, stderr: int | IO[Any], **settings: str
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = served_environment(database_url, None, "identity-test-issuer:", tmp_path / "keys", port)
    del env["IDENTITY_ISSUER"]
    env.update(settings)
    server = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=stderr,
    )
    wait_until_up(f"http://127.0.0.1:{port}", server)
    return server, env


def test_without_an_issuer_discovery_and_mail_links_use_the_port_served(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    server, env = _serve(database_url, tmp_path, port, subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        discovery = httpx.get(f"{base}/.well-known/openid-configuration").json()
        registered = httpx.post(
            f"{base}/api/v1/register",
            json={"email": "ada@example.com", "password": "tidal-orbit-cactus-42", "name": "Ada"},
        )
        mailed = subprocess.run(
            [sys.executable, "-m", "identity", "mail", "last", "--to", "ada@example.com", "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop_process(server)
    issuer = f"http://localhost:{port}"
    assert discovery["issuer"] == issuer
    assert discovery["token_endpoint"] == f"{issuer}/oauth2/token"
    assert registered.status_code == 202 and mailed.returncode == 0, mailed.stderr
    assert json.loads(mailed.stdout)["link"].startswith(f"{issuer}/verify-email")


def _warnings_about_the_issuer(text: str) -> list[str]:
    return [line for line in text.splitlines() if "listens on" in line]


def test_a_loopback_issuer_elsewhere_is_one_json_warning_when_logs_are_collected(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{free_port()}"
    server, _ = _serve(database_url, tmp_path, port, subprocess.PIPE, IDENTITY_ISSUER=issuer)
    try:
        discovery = httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration")
    finally:
        stop_process(server)
    assert server.stderr is not None
    (warning,) = _warnings_about_the_issuer(server.stderr.read().decode())
    entry = json.loads(warning)  # stderr is a pipe: a log collector's JSON
    assert entry["level"] == "WARNING"
    assert issuer in entry["message"] and f"127.0.0.1:{port}" in entry["message"]
    assert discovery.json()["issuer"] == issuer  # what was set still holds


def test_logs_on_a_terminal_are_plain_text(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    leader, follower = os.openpty()
    issuer = f"http://127.0.0.1:{free_port()}"
    try:
        server, _ = _serve(database_url, tmp_path, port, follower, IDENTITY_ISSUER=issuer)
        stop_process(server)
        output = b""
        while select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other side closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(leader)
        os.close(follower)
    (warning,) = _warnings_about_the_issuer(output.decode())
    assert not warning.lstrip().startswith("{")
    assert " WARNING identity.serve: IDENTITY_ISSUER is " in warning
