"""The hot paths' shortcuts keep the answers of the long way: the client cache (and its
invalidation across instances), introspection in the event loop, and the password lane."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity import repositories
from identity.accounts import operators
from identity.config import Settings
from identity.db import Database

from ..web_helpers import PASSWORD

MakeClient = Callable[..., tuple[str, str]]
AppFor = Callable[[Settings], TestClient]
SettingsFor = Callable[..., Settings]


def _token(http: TestClient, client: tuple[str, str]) -> str:
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=client)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _count_thread_hops(http: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record each hop the app's requests make into a thread lane (True: password lane)."""
    lanes = http.app.state.lanes  # type: ignore[attr-defined]
    hops: list[bool] = []
    real_run = lanes.run

    async def run(call: Callable[[], Any], *, password: bool = False) -> Any:
        hops.append(password)
        return await real_run(call, password=password)

    monkeypatch.setattr(lanes, "run", run)
    return hops


def test_a_deleted_client_stops_working_on_every_instance_within_the_check_interval(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient, database: Database
) -> None:
    interval = 0.5
    first, second = (app_for(settings_for(cache_check_seconds=interval)) for _ in range(2))
    client = make_client(scope="read")
    for http in (first, second):
        _token(http, client)  # now cached by both
    with database.transaction() as session:  # as `identity clients delete` does it
        assert repositories.delete_client(session, client[0])
    deleted = time.monotonic()
    for http in (first, second):
        while True:
            response = http.post(
                "/oauth2/token", data={"grant_type": "client_credentials"}, auth=client
            )
            if response.status_code == 401:
                break
            assert response.status_code == 200
            assert time.monotonic() - deleted < interval + 2.0, "the cache never let go"
            time.sleep(0.05)
        assert response.json()["error"] == "invalid_client"


def test_a_new_client_works_at_once_even_where_the_cache_is_warm(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient
) -> None:
    http = app_for(settings_for(cache_check_seconds=3600))
    _token(http, make_client(scope="read"))
    _token(http, make_client(scope="read"))  # registered after the cache was filled


def test_introspection_answers_alike_in_the_loop_and_in_a_thread(
    app_for: AppFor,
    settings_for: SettingsFor,
    make_client: MakeClient,
    redis_url: str | None,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Checking the cache on every request leaves nothing to answer from memory.
    in_loop = app_for(settings_for(cache_check_seconds=3600))
    in_thread = app_for(settings_for(cache_check_seconds=0))
    api, resource_server = make_client(scope="read"), make_client(name="rs")
    live, revoked = _token(in_loop, api), _token(in_loop, api)
    assert in_loop.post("/oauth2/revoke", data={"token": revoked}, auth=api).status_code == 200
    cases: list[tuple[tuple[str, str], dict[str, str]]] = [
        (resource_server, {"token": live}),
        (resource_server, {"token": live, "token_type_hint": "access_token"}),
        (api, {"token": revoked}),
        (api, {"token": live[:-4] + "AAAA"}),  # a broken signature
        (api, {"token": "not-a-token"}),
        ((api[0], "wrong secret"), {"token": live}),
        (api, {"token": live, "token_type_hint": "nonsense"}),
    ]
    _token(in_loop, resource_server)  # both clients are cached now
    hops = _count_thread_hops(in_loop, monkeypatch)
    for auth, form in cases:
        answers = [
            http.post("/oauth2/introspect", data=form, auth=auth) for http in (in_loop, in_thread)
        ]
        assert answers[0].status_code == answers[1].status_code, form
        assert answers[0].json() == answers[1].json(), form
        assert answers[0].headers["cache-control"] == answers[1].headers["cache-control"]
    assert in_loop.post("/oauth2/introspect", data={"token": live}, auth=api).json()["active"]
    # The live and revoked access tokens (the first three cases and the last call) never
    # left the event loop: the denylist answered from Redis, or embedded from the SQLite
    # file (whose readers never wait). PostgreSQL without Redis is asked in a thread.
    loop_answers = 4 if redis_url or database.is_sqlite else 0
    assert len(hops) == len(cases) + 1 - loop_answers


def test_a_login_flood_waits_in_its_own_lane_while_introspection_goes_on(
    app_for: AppFor,
    settings_for: SettingsFor,
    make_client: MakeClient,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # argon2 at a cost that takes real time, and a password lane one thread wide.
    settings = settings_for(
        password_grant=True, password_threads=1, argon2_memory_kib=16384, argon2_time_cost=3
    )
    http = app_for(settings)
    accounts = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        operators.create_user(
            accounts, session, email="ada@example.com", name="Ada", password=PASSWORD, verified=True
        )
    app = make_client(name="app", grant_types=["password"], first_party=True, scope="openid")
    api = make_client(scope="read")
    token = _token(http, api)

    running, most = 0, 0
    lock = threading.Lock()
    real_verify = accounts.hasher.verify

    niceness: list[int] = []

    def verify(password_hash: str, password: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        try:
            return bool(real_verify(password_hash, password))
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(accounts.hasher, "verify", verify)
    logins_done: list[float] = []
    statuses: list[int] = []

    def login() -> None:
        form = {"grant_type": "password", "username": "ada@example.com", "password": PASSWORD}
        response = http.post("/oauth2/token", data={**form, "scope": "openid"}, auth=app)
        with lock:
            statuses.append(response.status_code)
            logins_done.append(time.monotonic())

    flood = [threading.Thread(target=login) for _ in range(6)]
    for thread in flood:
        thread.start()
    introspected: list[float] = []
    while len(introspected) < 10:
        response = http.post("/oauth2/introspect", data={"token": token}, auth=api)
        assert response.json()["active"] is True
        introspected.append(time.monotonic())
    for thread in flood:
        thread.join()
    assert statuses == [200] * 6
    assert most == 1  # the flood never ran wider than its lane
    # ...on threads the scheduler serves after the event loop's (argon2's lanes inherit it).
    assert min(niceness) > os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert max(introspected) < max(logins_done)  # validation did not queue behind it


def _poll(check: Callable[[], bool], limit: float) -> None:
    """Wait until ``check()`` holds; fail once ``limit`` seconds have gone by."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < limit, "the change never arrived"
        time.sleep(0.05)


def test_userinfo_follows_user_changes_on_every_instance_and_skips_the_thread_when_cached(
    app_for: AppFor,
    settings_for: SettingsFor,
    make_client: MakeClient,
    database: Database,
    redis_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.5
    apps = [app_for(settings_for(password_grant=True, cache_check_seconds=interval))]
    apps.append(app_for(settings_for(password_grant=True, cache_check_seconds=interval)))
    accounts = apps[0].app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        user = operators.create_user(
            accounts, session, email="ada@example.com", name="Ada", password=PASSWORD, verified=True
        )
    app = make_client(
        name="app", grant_types=["password"], first_party=True, scope="openid profile"
    )
    form = {"grant_type": "password", "username": "ada@example.com", "password": PASSWORD}
    token = apps[0].post("/oauth2/token", data={**form, "scope": "openid profile"}, auth=app)
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def name_on(http: TestClient) -> str | None:
        response = http.get("/oauth2/userinfo", headers=bearer)
        return response.json()["name"] if response.status_code == 200 else None

    assert [name_on(http) for http in apps] == ["Ada", "Ada"]  # cached by both now
    hops = _count_thread_hops(apps[0], monkeypatch)
    assert name_on(apps[0]) == "Ada"
    # The denylist answers in the loop from Redis, or embedded from the SQLite file.
    assert len(hops) == (0 if redis_url or database.is_sqlite else 1)
    with database.transaction() as session:
        row = session.get_one(type(user), user.id)
        row.name = "Ada Lovelace"
    for http in apps:
        _poll(lambda http=http: name_on(http) == "Ada Lovelace", interval + 2.0)
    with database.transaction() as session:
        operators.set_active(accounts, session, session.get_one(type(user), user.id), False)
    for http in apps:
        _poll(lambda http=http: name_on(http) is None, interval + 2.0)
        response = http.get("/oauth2/userinfo", headers=bearer)
        assert (
            response.status_code == 401 and "invalid_token" in response.headers["www-authenticate"]
        )


@pytest.mark.parametrize("cache_check_seconds", [3600, 0], ids=["in-loop", "in-thread"])
def test_introspection_counts_its_own_limit_on_either_path(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient, cache_check_seconds: int
) -> None:
    http = app_for(
        settings_for(
            cache_check_seconds=cache_check_seconds,
            rate_limits=("introspect.client=3/60", "token.client=100/60"),
        )
    )
    client = make_client(scope="read")
    token = _token(http, client)  # caches the client for the in-loop path
    answers = [
        http.post("/oauth2/introspect", data={"token": token}, auth=client) for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert all(a.json()["active"] for a in answers[:3])
    refused = answers[3]
    assert refused.json()["error"] == "slow_down" and int(refused.headers["retry-after"]) > 0
    assert refused.headers["cache-control"] == "no-store"
    # The introspection limit is its own: the client still gets tokens.
    _token(http, client)
