"""The run: ceilings (bare JSON, RS256 sign) with uvicorn, then identity's endpoints."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from bench import backends, flood, scenarios
from bench.identity_server import identity_env, start_identity
from bench.lua_mix import MIX, harmonic_rate, share
from bench.lua_pool import pool_size
from bench.pool import mint_pool
from bench.procs import Processes, copy_logs, free_port, python_command, wait_ready
from bench.provision import Accounts, provision
from bench.report import Row
from bench.scenarios import CONNECTIONS, Limits, Stage, measure
from bench.wrk import WrkJob

BARE_JSON = "ceiling: bare JSON"
SIGN = "ceiling: sign RS256"


@dataclass(frozen=True)
class Options:
    workers: int
    seconds: int
    embedded: bool
    database_url: str
    redis_url: str
    logs_dir: Path | None = None  # where the servers' logs are copied before cleanup


def ceiling(processes: Processes, module: str, name: str, options: Options, log: Path) -> Row:
    """Serve ``bench.<module>:app`` with ``uvicorn --workers N`` and load its one route."""
    port = free_port()
    command = python_command(
        "-m", "uvicorn", f"bench.{module}:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(options.workers), "--log-level", "warning", "--no-access-log",
    )  # fmt: skip
    process = processes.start(command, log=log)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(url, process, log=log)
        return Row.of(name, options.workers, measure(WrkJob(url, options.seconds)))
    finally:
        processes.stop(process)


def _one_worker(stage: Stage) -> Row:
    """client_credentials on a 1-worker server (same storage and settings), for scaling."""
    log = stage.workdir / "identity-1-worker.log"
    process, base = start_identity(stage.processes, stage.env, 1, log)
    try:
        alone = replace(stage, base=base, workers=1)
        row = scenarios.client_credentials(alone, "client_credentials, 1 worker")
        # The ceilings ran with N workers: no ratio to them means anything at 1 worker.
        return replace(row, limit=None, ratio=None)
    finally:
        stage.processes.stop(process)


def _pool_sizes(stage: Stage, token: Row, introspection: Row, userinfo: Row) -> tuple[int, int]:
    """Refresh tokens for the refresh run and for the mixed run. A refresh does all that a
    client_credentials request does and more, so client_credentials' req/s bounds it; the
    mix is estimated from its parts' rates. Twice that, plus what is in flight at the end."""
    rates = {
        "userinfo": userinfo.requests_per_second,
        "introspection": introspection.requests_per_second,
        "refresh": token.requests_per_second,
        "client_credentials": token.requests_per_second,
    }
    refresh = pool_size(token.requests_per_second, stage.seconds) + CONNECTIONS
    mixed = pool_size(harmonic_rate(MIX, rates), stage.seconds, share("refresh")) + CONNECTIONS
    return refresh, mixed


def _scenarios(stage: Stage, one_worker: Row | None) -> list[Row]:
    token = scenarios.client_credentials(stage)
    rows = [token]
    if one_worker is not None:
        rows += [one_worker, scenarios.scaling(token, one_worker)]
    rows.append(scenarios.paced_client_credentials(stage, token))
    rows.append(scenarios.plain_get(stage, "jwks", "/.well-known/jwks.json"))
    rows.append(scenarios.plain_get(stage, "discovery", "/.well-known/openid-configuration"))
    rows.append(introspection := scenarios.introspection(stage))
    rows.append(userinfo := scenarios.userinfo(stage))
    for_refresh, for_mixed = _pool_sizes(stage, token, introspection, userinfo)
    pool, took = mint_pool(
        stage.processes, stage.env, stage.workers, stage.workdir, stage.accounts,
        for_refresh + for_mixed,
    )  # fmt: skip
    print(f"refresh-token pool: {len(pool):,} tokens minted in {took:.0f} s", flush=True)
    rows.append(scenarios.refresh(stage, pool[:for_refresh]))
    rows.append(scenarios.password_login(stage))
    rows += flood.mixed_beside_flood(stage, pool[for_refresh:])
    rows += flood.probes_beside_flood(stage)
    return rows


def identity_rows(
    processes: Processes, options: Options, workdir: Path, limits: Limits
) -> list[Row]:
    """Fresh storage, accounts through the CLI, then every scenario of identity."""
    port = free_port()
    database: backends.PostgresDatabase | None = None
    prefix = backends.random_redis_prefix()
    if options.embedded:
        database_url, redis_url = f"sqlite:///{workdir / 'identity.db'}", None
    else:
        database = backends.PostgresDatabase.create(options.database_url)
        database_url, redis_url = database.url, options.redis_url
    try:
        env = identity_env(workdir, port, database_url, redis_url, prefix)
        accounts: Accounts = provision(env)
        # The base URL is filled in once a server runs.
        stage = Stage(
            "", options.workers, options.seconds, workdir, accounts, limits, processes, env
        )
        one_worker = _one_worker(stage) if options.workers > 1 else None
        process, base = start_identity(processes, env, options.workers, workdir / "identity.log")
        try:
            return _scenarios(replace(stage, base=base), one_worker)
        finally:
            processes.stop(process)
    finally:
        backends.release(database, redis_url, prefix)


def _keep_logs(workdir: Path, destination: Path | None) -> None:
    copy_logs(sorted(workdir.glob("*.log")), destination, lambda log: log.name)


def run(options: Options, argon2_per_second: float) -> list[Row]:
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="identity-bench-") as folder:
            workdir = Path(folder)
            try:
                bare = ceiling(processes, "app_json", BARE_JSON, options, workdir / "json.log")
                sign = ceiling(processes, "app_sign", SIGN, options, workdir / "sign.log")
                limits = Limits(bare, sign, argon2_per_second)
                return [bare, sign, *identity_rows(processes, options, workdir, limits)]
            finally:
                processes.stop_all()  # before the logs are copied: they are complete then
                _keep_logs(workdir, options.logs_dir)
    finally:
        processes.stop_all()
