"""The scenarios run against one ``identity serve``: each checks its precondition, runs wrk
and returns its row(s), judged against its limit and its target."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bench import targets
from bench.lua import (
    bearer_get_script,
    paced_script,
    post_form_script,
    rotating_form_script,
)
from bench.lua_pool import refresh_script, write_pool
from bench.oauth_calls import (
    check_introspection,
    check_refresh,
    check_userinfo,
    login,
    login_form,
    service_token,
)
from bench.procs import Processes
from bench.provision import Accounts
from bench.report import Row
from bench.wrk import WrkJob, WrkResult, run_wrk

WARMUP_SECONDS = 1
THREADS = 2
CONNECTIONS = 32
# Logins queue behind argon2id: enough connections to keep every worker's CPU busy, and a
# wrk timeout far above their latency, so a slow login is a latency, not a socket error.
LOGIN_CONNECTIONS_PER_WORKER = 4
LOGIN_TIMEOUT_SECONDS = 30
PACED_SHARE = 0.8  # of the client_credentials peak


@dataclass(frozen=True)
class Limits:
    bare: Row  # ceiling: bare JSON
    sign: Row  # ceiling: sign RS256
    argon2_per_second: float  # argon2id verifies/s of the building block


@dataclass(frozen=True)
class Stage:
    """The measured server and what its scenarios need."""

    base: str
    workers: int
    seconds: int
    workdir: Path
    accounts: Accounts
    limits: Limits
    processes: Processes
    env: dict[str, str]

    @property
    def login_limit(self) -> tuple[str, float]:
        """Logins cannot beat argon2id: one verify per worker at a time, at the rate of the
        building block (which, note, already uses several threads: p lanes)."""
        name = f"argon2id x {self.workers} workers"
        return name, self.limits.argon2_per_second * self.workers

    def row(self, scenario: str, result: WrkResult) -> Row:
        return Row.of(scenario, self.workers, result)


def measure(job: WrkJob, warmup: bool = True) -> WrkResult:
    """A warm-up run against the same URL first, unless the script spends something (the
    server is warm from the scenarios before by then)."""
    if warmup:
        run_wrk(replace(job, seconds=WARMUP_SECONDS))
    return run_wrk(job)


def client_credentials_script(stage: Stage) -> Path:
    form = {"grant_type": "client_credentials", "scope": "read"}
    return post_form_script(stage.workdir, "token", form, *stage.accounts.service.credentials)


def client_credentials(stage: Stage, scenario: str = "client_credentials") -> Row:
    service_token(stage.base, stage.accounts.service)  # answers 200 with a token, or raises
    job = WrkJob(stage.base + "/oauth2/token", stage.seconds, client_credentials_script(stage))
    return stage.row(scenario, measure(job)).against(stage.limits.sign)


def scaling(many: Row, one: Row) -> Row:
    """client_credentials at N workers over the same at 1 worker."""
    row = replace(many, scenario="client_credentials scaling", limit=None, ratio=None)
    note = f"req/s of client_credentials at {many.workers} workers over 1 worker"
    return row.against(one).judged(targets.SCALING).noted(note)


def paced_client_credentials(stage: Stage, peak: Row) -> Row:
    """client_credentials sent at 80 % of its measured peak; its p99 is the target."""
    rate = PACED_SHARE * peak.requests_per_second
    script = paced_script(
        stage.workdir, "token-paced", client_credentials_script(stage), rate, THREADS
    )
    job = WrkJob(stage.base + "/oauth2/token", stage.seconds, script, THREADS, CONNECTIONS)
    row = stage.row("client_credentials at 80% of peak", measure(job, warmup=False))
    achieved = row.requests_per_second / rate
    return (
        row.against_rate(f"{rate:,.0f} req/s (80% of peak)", rate)
        .judged(targets.TOKEN_AT_80_PERCENT)
        .noted(f"paced to {rate:,.0f} req/s, got {row.requests_per_second:,.0f} ({achieved:.0%})")
    )


def plain_get(stage: Stage, scenario: str, path: str) -> Row:
    result = measure(WrkJob(stage.base + path, stage.seconds))
    return stage.row(scenario, result).against(stage.limits.bare)


def introspection(stage: Stage) -> Row:
    service = stage.accounts.service
    token = service_token(stage.base, service)
    check_introspection(stage.base, service, token)
    form = {"token": token, "token_type_hint": "access_token"}
    script = post_form_script(stage.workdir, "introspect", form, *service.credentials)
    job = WrkJob(stage.base + "/oauth2/introspect", stage.seconds, script)
    return stage.row("introspection", measure(job)).against(stage.limits.bare)


def user_access_token(stage: Stage) -> str:
    """A fresh access token (scope openid) of a login user, checked on userinfo; fresh for
    each scenario, so a long run never outlives its 10 minutes."""
    user = stage.accounts.login_users[0]
    token: str = login(stage.base, stage.accounts.app, user)["access_token"]
    check_userinfo(stage.base, token, user)
    return token


def userinfo(stage: Stage) -> Row:
    script = bearer_get_script(stage.workdir, "userinfo", user_access_token(stage))
    job = WrkJob(stage.base + "/oauth2/userinfo", stage.seconds, script)
    row = stage.row("userinfo", measure(job)).against(stage.limits.bare)
    return row.judged(targets.USERINFO)


def refresh(stage: Stage, pool: list[str]) -> Row:
    """Each request presents the next token of the pool, once; the first is spent on the
    check."""
    check_refresh(stage.base, stage.accounts.app, pool[0])
    prefix = write_pool(stage.workdir, "refresh-pool", pool[1:], THREADS)
    script = refresh_script(stage.workdir, prefix, *stage.accounts.app.credentials)
    job = WrkJob(stage.base + "/oauth2/token", stage.seconds, script, THREADS, CONNECTIONS)
    result = measure(job, warmup=False)
    row = stage.row("refresh", result).against(stage.limits.sign).judged(targets.REFRESH)
    return row.noted(pool_note(result, len(pool) - 1))


def pool_note(result: WrkResult, size: int) -> str:
    used, exhausted = result.counters["pool_used"], result.counters["pool_exhausted"]
    note = f"pool of {size:,} refresh tokens, {used:,} presented"
    return note + (f", RAN OUT {exhausted:,} times (each an error)" if exhausted else "")


def login_script(stage: Stage, name: str) -> Path:
    """Password-grant logins (scope openid) of the login users, in turn."""
    forms = [login_form(user, "openid") for user in stage.accounts.login_users]
    app = stage.accounts.app
    return rotating_form_script(stage.workdir, name, forms, *app.credentials)


def password_login(stage: Stage) -> Row:
    for user in stage.accounts.login_users:  # every user's password works
        login(stage.base, stage.accounts.app, user, scope="openid")
    connections = LOGIN_CONNECTIONS_PER_WORKER * stage.workers
    job = WrkJob(
        stage.base + "/oauth2/token", stage.seconds, login_script(stage, "login"),
        min(THREADS, connections), connections, LOGIN_TIMEOUT_SECONDS,
    )  # fmt: skip
    # No warm-up run: the server would still be verifying its queued logins when the measured
    # run starts (wrk leaves, the argon2 work stays). The logins above warmed the path, and,
    # being one at a time, waited for anything queued before them.
    result = measure(job, warmup=False)
    row = stage.row("password login", result).against_rate(*stage.login_limit)
    return row.judged(targets.LOGIN)
