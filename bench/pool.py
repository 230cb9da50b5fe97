"""Mint the refresh-token pool on a second, provisioning-only server.

Each token of the pool must be a family of its own (presenting one twice is reuse), so each
costs one login. At the production argon2id parameters a login costs about a tenth of a
second of CPU: the thousands of tokens a 5-second run spends would take minutes. So a second
``identity serve`` runs on the same database and Redis with CHEAP_ARGON2, and only the pool
user (whose hash was made with those parameters, so no rehash happens) logs in there, under
wrk. The measured server is idle meanwhile, and that server alone is measured: a refresh
never touches a password hash, so how the family's login was hashed changes nothing.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

from bench.identity_server import provisioning_env, start_identity
from bench.lua_pool import harvest_script, read_harvest
from bench.oauth_calls import login, login_form
from bench.procs import Processes, free_port
from bench.provision import USER_SCOPE, Accounts
from bench.wrk import WrkJob, WrkResult, finish_wrk, start_wrk

HARVEST_THREADS = 2
HARVEST_LIMIT_SECONDS = 600  # a harvest that takes longer is a failure, not a slow run
_POLL_SECONDS = 0.25


def _wait_for(prefix: str, count: int, wrk: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + HARVEST_LIMIT_SECONDS
    while len(read_harvest(prefix, HARVEST_THREADS)) < count:
        if wrk.poll() is not None or time.monotonic() > deadline:
            return  # finish_wrk reports why; the count is checked after
        time.sleep(_POLL_SECONDS)


def _harvest(base: str, workdir: Path, accounts: Accounts, count: int) -> list[str]:
    login(base, accounts.app, accounts.pool_user)  # fails loudly before any wrk
    form = urlencode(login_form(accounts.pool_user, USER_SCOPE))
    quota = math.ceil(count / HARVEST_THREADS)
    script, prefix = harvest_script(workdir, form, *accounts.app.credentials, quota)
    job = WrkJob(base + "/oauth2/token", HARVEST_LIMIT_SECONDS, script, HARVEST_THREADS, 32)
    wrk = start_wrk(job)
    try:
        _wait_for(prefix, count, wrk)
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)  # wrk's own way to end early: it still reports
        result: WrkResult = finish_wrk(wrk, 60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    tokens = read_harvest(prefix, HARVEST_THREADS)
    if result.errors or result.counters.get("refused", 0) or len(tokens) < count:
        raise RuntimeError(
            f"refresh-token harvest: {len(tokens)} of {count} tokens, "
            f"{result.errors} errors, {result.counters.get('refused', 0)} refused"
        )
    return tokens


def mint_pool(
    processes: Processes, env: dict[str, str], workers: int, workdir: Path, accounts: Accounts,
    count: int,
) -> tuple[list[str], float]:  # fmt: skip
    """``count`` refresh tokens (or more), each of its own family; and the seconds it took,
    provisioning server start included."""
    started = time.monotonic()
    server_env = provisioning_env(env, free_port())
    log = workdir / "identity-provisioning.log"
    process, base = start_identity(processes, server_env, workers, log)
    try:
        tokens = _harvest(base, workdir, accounts, count)
    finally:
        processes.stop(process)
    return tokens, time.monotonic() - started
