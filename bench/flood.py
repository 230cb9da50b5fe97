"""Loads beside a login flood: the mixed load, then userinfo and JWKS probes.

The flood is a second wrk hammering password-grant logins at production argon2id with
more connections than the CPUs can verify at once. It starts LEAD_SECONDS before the
measured wrk(s) and ends LEAD_SECONDS after them, so they run entirely inside it.
"""

from __future__ import annotations

from bench import targets
from bench.lua import bearer_get_script
from bench.lua_mix import MIX, harmonic_rate, mixed_script
from bench.lua_pool import write_pool
from bench.oauth_calls import check_introspection, check_refresh
from bench.report import Row
from bench.scenarios import (
    CONNECTIONS,
    LOGIN_TIMEOUT_SECONDS,
    THREADS,
    Stage,
    login_script,
    pool_note,
    user_access_token,
)
from bench.wrk import WrkJob, WrkResult, run_beside

LEAD_SECONDS = 1
FLOOD_CONNECTIONS = 16  # 16 verifies of 64 MiB in flight: well past what 2 cores can do
# Probes are light closed loops: their p99 shows what the flood does to a request, not what
# 32 connections of their own would do.
PROBE_CONNECTIONS = 4
# Above the 2 s default, so a request the flood delays is a latency in the p99, not a lost
# sample counted as a socket error.
TIMEOUT_SECONDS = 10


def _flood_job(stage: Stage, name: str) -> WrkJob:
    return WrkJob(
        stage.base + "/oauth2/token", stage.seconds + 2 * LEAD_SECONDS, login_script(stage, name),
        1, FLOOD_CONNECTIONS, LOGIN_TIMEOUT_SECONDS,
    )  # fmt: skip


def _flood_row(stage: Stage, scenario: str, result: WrkResult) -> Row:
    note = f"runs {LEAD_SECONDS} s before and after the loads beside it"
    return stage.row(scenario, result).against_rate(*stage.login_limit).noted(note)


def mixed_limit(stage: Stage) -> tuple[str, float]:
    """The mix of the ceilings of its parts: validation is bounded by bare JSON, issuance
    by signing."""
    bare, sign = stage.limits.bare.requests_per_second, stage.limits.sign.requests_per_second
    rates = {"userinfo": bare, "introspection": bare, "refresh": sign, "client_credentials": sign}
    return "mix of ceilings", harmonic_rate(MIX, rates)


def mixed_beside_flood(stage: Stage, pool: list[str]) -> list[Row]:
    accounts = stage.accounts
    token = user_access_token(stage)
    check_introspection(stage.base, accounts.app, token)  # the token's own client
    check_refresh(stage.base, accounts.app, pool[0])
    prefix = write_pool(stage.workdir, "mixed-pool", pool[1:], THREADS)
    script = mixed_script(
        stage.workdir, prefix, token, accounts.service.credentials, accounts.app.credentials
    )
    mixed = WrkJob(stage.base + "/", stage.seconds, script, THREADS, CONNECTIONS, TIMEOUT_SECONDS)
    flood, (result,) = run_beside(_flood_job(stage, "flood-mixed"), [mixed], LEAD_SECONDS)
    weights = ", ".join(f"{share}% {name}" for name, share in MIX.items())
    row = stage.row("mixed beside login flood", result).against_rate(*mixed_limit(stage))
    row = row.noted(f"{weights}; {pool_note(result, len(pool) - 1)}")
    return [row, _flood_row(stage, "login flood beside mixed", flood)]


def probes_beside_flood(stage: Stage) -> list[Row]:
    token = user_access_token(stage)
    userinfo = WrkJob(
        stage.base + "/oauth2/userinfo", stage.seconds,
        bearer_get_script(stage.workdir, "userinfo-probe", token),
        1, PROBE_CONNECTIONS, TIMEOUT_SECONDS,
    )  # fmt: skip
    jwks = WrkJob(
        stage.base + "/.well-known/jwks.json", stage.seconds, None,
        1, PROBE_CONNECTIONS, TIMEOUT_SECONDS,
    )  # fmt: skip
    flood, results = run_beside(_flood_job(stage, "flood-probes"), [userinfo, jwks], LEAD_SECONDS)
    probes = [
        stage.row(name, result).judged(targets.DURING_FLOOD)
        for name, result in zip(
            ["userinfo during login flood", "jwks during login flood"], results, strict=True
        )
    ]
    return [*probes, _flood_row(stage, "login flood beside probes", flood)]
