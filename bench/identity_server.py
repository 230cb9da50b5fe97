"""Run ``identity serve`` for the bench: its environment and its start."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.procs import Processes, python_command, wait_ready

# Limits that would turn a scenario into a benchmark of the limiter (every request still goes
# through it): token.client and introspect.client (one client sends everything; 1200/60 s
# would cap token issuance at 20/s), and login.ip (every login comes from 127.0.0.1; 100/300 s
# would cap password logins at 0.3/s). login.account stays as it is: it counts failed logins
# only, and the bench's logins all succeed.
RATE_LIMITS = "token.client=100000000/60 introspect.client=100000000/60 login.ip=100000000/60"

# argon2id parameters of the provisioning server only (see bench/README.md): they make a
# password login cost no more than any other token request, to mint refresh tokens quickly.
# 8 KiB and one lane are argon2's minimum.
CHEAP_ARGON2 = {
    "IDENTITY_ARGON2_TIME_COST": "1",
    "IDENTITY_ARGON2_MEMORY_KIB": "8",
    "IDENTITY_ARGON2_PARALLELISM": "1",
}


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
        # For the login, refresh and userinfo scenarios (users log in with the password grant).
        "IDENTITY_PASSWORD_GRANT": "on",
    }
    if redis_url:
        env |= {"IDENTITY_REDIS_URL": redis_url, "IDENTITY_REDIS_PREFIX": redis_prefix}
    return env


def provisioning_env(env: dict[str, str], port: int) -> dict[str, str]:
    """``env`` for a second server on the same storage with cheap argon2id; the schema is
    already there (migrating again beside a running server would be a race)."""
    issuer = {"IDENTITY_ISSUER": f"http://127.0.0.1:{port}", "IDENTITY_MIGRATE_ON_START": "off"}
    return env | CHEAP_ARGON2 | issuer


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
