"""The run: ceilings (bare JSON, RS256 sign) with uvicorn, then identity's endpoints."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import backends
from bench.identity_server import (
    check_introspection,
    create_client,
    identity_env,
    issue_token,
    start_identity,
)
from bench.lua import post_form_script
from bench.procs import Processes, free_port, python_command, wait_ready
from bench.report import Row
from bench.wrk import WrkResult, run_wrk

BARE_JSON = "ceiling: bare JSON"
SIGN = "ceiling: sign RS256"
WARMUP_SECONDS = 1


@dataclass(frozen=True)
class Options:
    workers: int
    seconds: int
    embedded: bool
    database_url: str
    redis_url: str


def _measure(url: str, seconds: int, script: Path | None = None) -> WrkResult:
    run_wrk(url, WARMUP_SECONDS, script=script)
    return run_wrk(url, seconds, script=script)


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
        return Row.of(name, options.workers, _measure(url, options.seconds))
    finally:
        processes.stop(process)


def identity_rows(processes: Processes, options: Options, workdir: Path) -> list[Row]:
    """Start identity on fresh storage, provision a client, drive each scenario."""
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
        process, base = start_identity(processes, env, options.workers, workdir / "identity.log")
        try:
            return _identity_scenarios(base, env, options, workdir)
        finally:
            processes.stop(process)
    finally:
        if database is not None:
            database.drop()
        if redis_url:
            backends.delete_redis_prefix(redis_url, prefix)


def _identity_scenarios(
    base: str, env: dict[str, str], options: Options, workdir: Path
) -> list[Row]:
    client = create_client(env)
    token = issue_token(base, client)
    check_introspection(base, client, token)
    credentials = (client.client_id, client.client_secret)
    issue = post_form_script(
        workdir, "token", {"grant_type": "client_credentials", "scope": "read"}, *credentials
    )
    introspect = post_form_script(
        workdir, "introspect", {"token": token, "token_type_hint": "access_token"}, *credentials
    )
    plan: list[tuple[str, str, Path | None]] = [
        ("client_credentials", "/oauth2/token", issue),
        ("jwks", "/.well-known/jwks.json", None),
        ("discovery", "/.well-known/openid-configuration", None),
        ("introspection", "/oauth2/introspect", introspect),
    ]
    return [
        Row.of(name, options.workers, _measure(base + path, options.seconds, script))
        for name, path, script in plan
    ]


def run(options: Options) -> list[Row]:
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="identity-bench-") as folder:
            workdir = Path(folder)
            bare = ceiling(processes, "app_json", BARE_JSON, options, workdir / "json.log")
            sign = ceiling(processes, "app_sign", SIGN, options, workdir / "sign.log")
            rows = identity_rows(processes, options, workdir)
    finally:
        processes.stop_all()
    limits = {"client_credentials": sign}
    return [bare, sign, *(row.against(limits.get(row.scenario, bare)) for row in rows)]
