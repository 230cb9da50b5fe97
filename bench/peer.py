"""``python -m bench --peer``: identity side by side with node-oidc-provider, in one run.

Each server is one process on core 0 (``taskset -c 0``); wrk runs on core 1 with PostgreSQL
and Redis (moved there for the run, their affinity restored after). Three servers in turn:
the peer (oidc-provider@9, in-memory), identity on SQLite, identity on PostgreSQL + Redis;
each answers the same four scenarios, and identity on PostgreSQL + Redis the refresh one too.
See bench/README.md, "Side by side with node-oidc-provider".
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import platform
import subprocess
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import backends
from bench.identity_server import CHEAP_ARGON2, identity_env
from bench.lua import post_form_script
from bench.lua_pool import pool_size, refresh_script, write_pool
from bench.oauth_calls import check_refresh, post_form
from bench.peer_node import (
    JWT_RESOURCE,
    OPAQUE_RESOURCE,
    ensure_provider,
    node_version,
    peer_client,
    start_peer,
)
from bench.peer_pin import LOAD_CORE, SERVER_CORE, PinnedWrkJob, pinned, services_on_core
from bench.peer_report import (
    PEER,
    PG,
    SIDE_NAMES,
    SQLITE,
    Cell,
    Results,
    format_table,
    format_targets,
    peer_warnings,
    verdicts,
    write_results,
)
from bench.pool import mint_pool
from bench.procs import REPO, Processes, copy_logs, free_port, python_command, wait_ready
from bench.provision import USER_SCOPE, Accounts, Client, create_client, create_user
from bench.report import summarise_logs
from bench.scenarios import pool_note
from bench.wrk import WrkJob, WrkResult, ensure_wrk, run_wrk

SCOPE = "api:read api:write"
THREADS = 2
CONNECTIONS = 64
WARMUP_SECONDS = 5
DISCOVERY = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class PeerOptions:
    seconds: int
    database_url: str
    redis_url: str
    npm_prefix: Path  # where oidc-provider is installed (and kept between runs)
    embedded_only: bool = False  # leave out identity on PostgreSQL + Redis
    warmup_seconds: int = WARMUP_SECONDS


@dataclass(frozen=True)
class Server:
    """A measured server: its endpoints, its client, and the token requests it is sent."""

    side: str
    base: str
    token_endpoint: str
    introspection_endpoint: str
    jwks_uri: str
    client: Client
    token_form: dict[str, str]  # the client_credentials scenario
    introspected_form: dict[str, str]  # gets the token the introspection scenario presents

    @property
    def discovery(self) -> str:
        return self.base + DISCOVERY


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
        data: dict[str, Any] = json.load(response)
    return data


def discover(
    side: str, base: str, client: Client, token_form: dict[str, str], introspected: dict[str, str]
) -> Server:
    """The endpoints from the server's own discovery document."""
    document = get_json(base + DISCOVERY)
    if document.get("issuer") != base:
        raise RuntimeError(f"{base}{DISCOVERY} names the issuer {document.get('issuer')}")
    return Server(
        side, base, document["token_endpoint"], document["introspection_endpoint"],
        document["jwks_uri"], client, token_form, introspected,
    )  # fmt: skip


def jwt_alg(token: str) -> str | None:
    """The ``alg`` of a three-part JWT's header; None for anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError):
        return None
    alg = header.get("alg") if isinstance(header, dict) else None
    return alg if isinstance(alg, str) else None


def token_of(server: Server, form: dict[str, str]) -> str:
    answer = post_form(server.token_endpoint, "", form, server.client)
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise RuntimeError(f"{SIDE_NAMES[server.side]}: the token endpoint answered {answer}")
    return token


def check_token(server: Server) -> None:
    """The client_credentials scenario must get 200 with an RS256 JWT on either side."""
    token = token_of(server, server.token_form)
    if jwt_alg(token) != "RS256":
        raise RuntimeError(f"{SIDE_NAMES[server.side]}: not an RS256 JWT: {token[:60]}...")


def introspection_form(server: Server) -> dict[str, str]:
    """A token introspected once with the scenario's own request, which must answer
    ``"active": true``; the form of that request."""
    form = {"token": token_of(server, server.introspected_form), "token_type_hint": "access_token"}
    answer = post_form(server.introspection_endpoint, "", form, server.client)
    if answer.get("active") is not True:
        raise RuntimeError(f"{SIDE_NAMES[server.side]}: introspection answered {answer}")
    return form


def check_get(url: str, wanted: str) -> None:
    if wanted not in get_json(url):
        raise RuntimeError(f"{url} answered without {wanted!r}")


def load(url: str, seconds: int, script: Path | None = None) -> PinnedWrkJob:
    """``taskset -c 1 wrk -t2 -c64 -d<seconds>s --latency``."""
    return PinnedWrkJob(url, seconds, script, THREADS, CONNECTIONS, core=LOAD_CORE)


def measure(job: WrkJob, warmup_seconds: int) -> WrkResult:
    """A warm-up run against the same URL first (none when ``warmup_seconds`` is 0)."""
    if warmup_seconds > 0:
        run_wrk(replace(job, seconds=warmup_seconds))
    return run_wrk(job)


def _show(side: str, scenario: str, cell: Cell) -> Cell:
    print(
        f"  {SIDE_NAMES[side]} {scenario}: {cell.requests_per_second:,.0f} req/s, "
        f"p99 {cell.p99_ms:.2f} ms, {cell.errors} errors",
        flush=True,
    )
    return cell


def measure_server(server: Server, workdir: Path, seconds: int, warmup: int) -> dict[str, Cell]:
    """The four scenarios every server answers, each checked once first."""
    credentials = server.client.credentials
    cells: dict[str, Cell] = {}

    check_token(server)
    script = post_form_script(workdir, "token", server.token_form, *credentials)
    result = measure(load(server.token_endpoint, seconds, script), warmup)
    cells["client_credentials"] = _show(server.side, "client_credentials", Cell.of(result))

    form = introspection_form(server)
    script = post_form_script(workdir, "introspect", form, *credentials)
    result = measure(load(server.introspection_endpoint, seconds, script), warmup)
    cells["introspection"] = _show(server.side, "introspection", Cell.of(result))

    for scenario, url, wanted in (
        ("jwks", server.jwks_uri, "keys"),
        ("discovery", server.discovery, "issuer"),
    ):
        check_get(url, wanted)
        cells[scenario] = _show(server.side, scenario, Cell.of(measure(load(url, seconds), warmup)))
    return cells


def peer_side(
    processes: Processes, options: PeerOptions, workdir: Path, package_dir: Path
) -> dict[str, Cell]:
    workdir.mkdir()
    client = peer_client()
    process, base = start_peer(processes, package_dir, client, workdir / "server.log")
    try:
        token_form = {"grant_type": "client_credentials", "scope": SCOPE}
        # Its JWTs cannot be introspected (a resource server verifies them itself): an opaque
        # token of a second resource is.
        opaque = token_form | {"resource": OPAQUE_RESOURCE}
        server = discover(PEER, base, client, token_form, opaque)
        print(f"{SIDE_NAMES[PEER]} at {base} (JWTs for {JWT_RESOURCE})", flush=True)
        return measure_server(server, workdir, options.seconds, options.warmup_seconds)
    finally:
        processes.stop(process)


def start_pinned_identity(
    processes: Processes, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``identity serve --workers 1`` (uvicorn in the same process) on the server core."""
    base = env["IDENTITY_ISSUER"]
    port = base.rsplit(":", 1)[1]
    command = python_command("-m", "identity", "serve", "--workers", "1", "--port", port)
    process = processes.start(pinned(command, SERVER_CORE), env=env, log=log)
    wait_ready(f"{base}/readyz", process, timeout=120, log=log)
    return process, base


def provision_refresh(env: dict[str, str], service: Client) -> Accounts:
    """What the refresh scenario needs, as bench/provision.py makes it: the first-party app
    client and the pool user (hashed with CHEAP_ARGON2: it only logs in to mint the pool)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        app = pool.submit(
            create_client,
            env,
            "--name", "bench-app", "--first-party", "--scope", USER_SCOPE,
            "--grant-type", "password", "--grant-type", "refresh_token",
        )  # fmt: skip
        user = pool.submit(create_user, env | CHEAP_ARGON2, "bench-pool@example.com")
        return Accounts(service, app.result(), [], user.result())


def refresh_cell(
    processes: Processes, env: dict[str, str], server: Server, workdir: Path,
    accounts: Accounts, seconds: int, token_rate: float,
) -> tuple[Cell, str]:  # fmt: skip
    """bench's refresh scenario, pinned and at -c64, no warm-up (it spends its tokens). The
    pool is minted first on an unpinned provisioning server; this server is idle then."""
    count = pool_size(token_rate, seconds) + CONNECTIONS
    pool, took = mint_pool(processes, env, os.cpu_count() or 1, workdir, accounts, count)
    print(f"  refresh-token pool: {len(pool):,} tokens minted in {took:.0f} s", flush=True)
    check_refresh(server.base, accounts.app, pool[0])  # spent here, left out of wrk's files
    prefix = write_pool(workdir, "refresh-pool", pool[1:], THREADS)
    script = refresh_script(workdir, prefix, *accounts.app.credentials)
    result = run_wrk(load(server.token_endpoint, seconds, script))
    return _show(server.side, "refresh", Cell.of(result)), pool_note(result, len(pool) - 1)


def identity_side(
    processes: Processes, options: PeerOptions, workdir: Path, side: str
) -> tuple[dict[str, Cell], dict[str, str]]:
    """Fresh storage, the client through identity's CLI, the pinned server, its scenarios."""
    workdir.mkdir()
    port, prefix = free_port(), backends.random_redis_prefix()
    database: backends.PostgresDatabase | None = None
    if side == SQLITE:
        database_url, redis_url = f"sqlite:///{workdir / 'identity.db'}", None
    else:
        database = backends.PostgresDatabase.create(options.database_url)
        database_url, redis_url = database.url, options.redis_url
    try:
        env = identity_env(workdir, port, database_url, redis_url, prefix)
        # The first command migrates the schema.
        client = create_client(env, "--name", "peer-bench", "--scope", SCOPE)
        quiet = env | {"IDENTITY_MIGRATE_ON_START": "off"}
        accounts = provision_refresh(quiet, client) if side == PG else None
        process, base = start_pinned_identity(processes, env, workdir / "server.log")
        try:
            token_form = {"grant_type": "client_credentials", "scope": SCOPE}
            server = discover(side, base, client, token_form, token_form)
            print(f"{SIDE_NAMES[side]} at {base}", flush=True)
            cells = measure_server(server, workdir, options.seconds, options.warmup_seconds)
            notes: dict[str, str] = {}
            if accounts is not None:
                rate = cells["client_credentials"].requests_per_second
                cells["refresh"], notes["refresh"] = refresh_cell(
                    processes, env, server, workdir, accounts, options.seconds, rate
                )
            return cells, notes
        finally:
            processes.stop(process)
    finally:
        backends.release(database, redis_url, prefix)


def _record(results: Results, side: str, cells: dict[str, Cell]) -> None:
    for scenario, cell in cells.items():
        results.setdefault(scenario, {})[side] = cell


def keep_logs(root: Path, destination: Path | None) -> None:
    """Every server's log, as ``<side>-<name>.log``, before the temporary folder goes."""
    copy_logs(
        sorted(root.glob("*/*.log")), destination, lambda log: f"{log.parent.name}-{log.name}"
    )


def run_peer(
    options: PeerOptions, package_dir: Path, logs_dir: Path | None
) -> tuple[Results, dict[str, str]]:
    results: Results = {}
    notes: dict[str, str] = {}
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="identity-bench-peer-") as folder:
            root = Path(folder)
            try:
                with services_on_core(LOAD_CORE) as pinning:
                    for line in pinning.moved:
                        print(line, flush=True)
                    _record(results, PEER, peer_side(processes, options, root / PEER, package_dir))
                    sides = [SQLITE] if options.embedded_only else [SQLITE, PG]
                    for side in sides:
                        cells, side_notes = identity_side(processes, options, root / side, side)
                        _record(results, side, cells)
                        notes |= side_notes
            finally:
                processes.stop_all()  # before the logs are copied: they are complete then
                keep_logs(root, logs_dir)
    finally:
        processes.stop_all()
    return results, notes


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    done = subprocess.run(  # noqa: S603
        ["git", *args],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def machine(provider_version: str) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "node": node_version(),
        "oidc_provider": provider_version,
        "commit": _git("log", "-1", "--oneline"),
        "identity_changes": _git("status", "--short", "identity/").splitlines(),
        # Anything else busy on the machine skews every figure: worth a look when odd.
        "load_average_at_start": os.getloadavg(),
    }


def _check_cores() -> None:
    usable = os.sched_getaffinity(0)
    if not {SERVER_CORE, LOAD_CORE} <= usable:
        raise RuntimeError(f"--peer pins to cores {SERVER_CORE} and {LOAD_CORE}: have {usable}")


def main(options: PeerOptions, results_dir: Path) -> int:
    _check_cores()
    ensure_wrk()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    package_dir, version = ensure_provider(options.npm_prefix)
    meta: dict[str, Any] = {
        "timestamp": started.isoformat(timespec="seconds"),
        "mode": "peer",
        "seconds": options.seconds,
        "warmup_seconds": options.warmup_seconds,
        "wrk": f"taskset -c {LOAD_CORE} wrk -t{THREADS} -c{CONNECTIONS} --latency",
        "servers": f"one process each, taskset -c {SERVER_CORE}",
        "machine": machine(version),
    }
    box = meta["machine"]
    print(
        f"machine: {box['cpu_model']}, {box['cpu_count']} cores; python {box['python']}, "
        f"node {box['node']}, oidc-provider {version}; identity at {box['commit']}"
        + (
            f" with changes to {len(box['identity_changes'])} files"
            if box["identity_changes"]
            else ""
        ),
        flush=True,
    )
    logs_dir = results_dir / f"{stamp}-peer-logs"
    results, notes = run_peer(options, package_dir, logs_dir)
    found = verdicts(results)
    print()
    print(format_table(results))
    for scenario, note in notes.items():
        print(f"* {scenario}: {note}")
    print()
    print(format_targets(found))
    for warning in peer_warnings(results):
        print(f"WARNING: {warning}")
    meta["run_seconds"] = round((datetime.now(UTC) - started).total_seconds())
    path = write_results(results_dir, stamp, meta, results, notes)
    print(f"\nwritten to {path} in {meta['run_seconds']} s")
    print(summarise_logs(logs_dir))
    return 0
