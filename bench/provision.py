"""Clients and users, created through identity's own CLI (as an operator would)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.identity_server import CHEAP_ARGON2
from bench.procs import REPO, python_command

LOGIN_USERS = 4  # the password-login scenarios take them in turn
# The scope of the user client, and of every user token the bench asks for.
USER_SCOPE = "openid profile offline_access"


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str

    @property
    def credentials(self) -> tuple[str, str]:
        return self.client_id, self.client_secret


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password: str


@dataclass(frozen=True)
class Accounts:
    service: Client  # client_credentials, scope read; introspects as a resource server would
    app: Client  # first-party, confidential: password and refresh_token grants
    login_users: list[User]  # hashed at the server's (production) argon2id parameters
    pool_user: User  # hashed with CHEAP_ARGON2: only ever logs in on the provisioning server


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603
        python_command("-m", "identity", *args, "--json"),
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"identity {' '.join(args[:2])} failed: {done.stderr.strip()}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def create_client(env: dict[str, str], *options: str) -> Client:
    data = _cli(env, "clients", "create", *options)
    return Client(data["client_id"], data["client_secret"])


def create_user(env: dict[str, str], email: str) -> User:
    # A random password: it passes the strength policy and no two users share one.
    password = secrets.token_urlsafe(18)
    # "--password=..." in one word: a random password may start with "-".
    data = _cli(env, "users", "create", "--email", email, f"--password={password}", "--verified")
    return User(data["id"], email, password)


def provision(env: dict[str, str]) -> Accounts:
    """The first command migrates the schema; the rest run side by side (each costs a
    Python start, and a user one argon2id hash)."""
    service = create_client(env, "--name", "bench", "--scope", "read")
    quiet = env | {"IDENTITY_MIGRATE_ON_START": "off"}
    with ThreadPoolExecutor(max_workers=3) as pool:
        app = pool.submit(
            create_client,
            quiet,
            "--name", "bench-app", "--first-party", "--scope", USER_SCOPE,
            "--grant-type", "password", "--grant-type", "refresh_token",
        )  # fmt: skip
        logins = [
            pool.submit(create_user, quiet, f"bench-login-{n}@example.com")
            for n in range(1, LOGIN_USERS + 1)
        ]
        pool_user = pool.submit(create_user, quiet | CHEAP_ARGON2, "bench-pool@example.com")
        return Accounts(service, app.result(), [f.result() for f in logins], pool_user.result())
