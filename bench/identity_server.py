"""Run ``identity serve`` for the bench, register a client through the CLI, get a token."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.lua import basic_auth
from bench.procs import REPO, Processes, python_command, wait_ready

# The per-client limits would cap a single-client benchmark at 20 tokens/s; lift them so the
# numbers show the server, not the limiter (every hit still goes through the limiter).
RATE_LIMITS = "token.client=100000000/60 introspect.client=100000000/60"


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str


def identity_env(
    workdir: Path, port: int, database_url: str, redis_url: str | None, redis_prefix: str
) -> dict[str, str]:
    env = {
        "IDENTITY_ISSUER": f"http://127.0.0.1:{port}",
        "IDENTITY_DATABASE_URL": database_url,
        "IDENTITY_KEYS_DIR": str(workdir / "keys"),
        "IDENTITY_OUTBOX_DIR": str(workdir / "outbox"),
        "IDENTITY_LOG_LEVEL": "warning",
        "IDENTITY_RATE_LIMITS": RATE_LIMITS,
    }
    if redis_url:
        env |= {"IDENTITY_REDIS_URL": redis_url, "IDENTITY_REDIS_PREFIX": redis_prefix}
    return env


def start_identity(
    processes: Processes, env: dict[str, str], workers: int, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``identity serve`` on the port of ``IDENTITY_ISSUER``; its process and base URL."""
    base = env["IDENTITY_ISSUER"]
    port = base.rsplit(":", 1)[1]
    command = python_command("-m", "identity", "serve", "--workers", str(workers), "--port", port)
    process = processes.start(command, env=env, log=log)
    wait_ready(f"{base}/readyz", process, timeout=120, log=log)
    return process, base


def create_client(env: dict[str, str]) -> Client:
    command = python_command(
        "-m", "identity", "clients", "create", "--name", "bench", "--scope", "read", "--json"
    )
    done = subprocess.run(  # noqa: S603
        command,
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    data = json.loads(done.stdout)
    return Client(data["client_id"], data["client_secret"])


def _post_form(base: str, path: str, body: bytes, client: Client) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310
        base + path,
        data=body,
        headers={
            "Authorization": basic_auth(client.client_id, client.client_secret),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        data: dict[str, Any] = json.load(response)
    return data


def issue_token(base: str, client: Client) -> str:
    body = b"grant_type=client_credentials&scope=read"
    token: str = _post_form(base, "/oauth2/token", body, client)["access_token"]
    return token


def check_introspection(base: str, client: Client, token: str) -> None:
    """The introspection scenario must measure an active token, not a cheap refusal."""
    body = urlencode({"token": token, "token_type_hint": "access_token"}).encode()
    answer = _post_form(base, "/oauth2/introspect", body, client)
    if answer.get("active") is not True:
        raise RuntimeError(f"introspection of the pre-issued token answered {answer}")
