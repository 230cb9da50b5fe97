"""Rate limiters: fixed windows, progressive blocks, Redis when configured, never an error."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import pytest
import redis
from prometheus_client import REGISTRY

from identity import limits
from identity.limits import DEFAULT_LIMITS, Decision, Limit, RateLimiter, parse_overrides
from identity.loop_redis import LoopRedis

from .conftest import free_port

DAY = 86400
T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def local(clock: FakeClock, **named: Limit) -> RateLimiter:
    return RateLimiter(named, None, "test:", clock=clock)


@pytest.fixture
def limiter_client(redis_url: str | None) -> Iterator[redis.Redis | None]:
    """Redis when IDENTITY_TEST_REDIS_URL is set, else None: the in-process limiter."""
    if not redis_url:
        yield None
        return
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def unique(label: str) -> str:
    # The Redis prefix lives for the whole session, so each test counts its own keys.
    return f"{label}-{secrets.token_hex(4)}@example.com"


def hits(limiter: RateLimiter, name: str, key: str, times: int) -> list[bool]:
    return [limiter.hit(name, key).allowed for _ in range(times)]


# In-process, fake clock.


def test_limit_allows_exactly_attempts_then_denies(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(3, 60))
    assert hits(limiter, "login", "a", 3) == [True, True, True]
    denied = limiter.hit("login", "a")
    assert denied.allowed is False
    assert denied.retry_after == 60
    assert limiter.hit("login", "a") == Decision(False, 60)


def test_allowed_decision_has_zero_retry_after(clock: FakeClock) -> None:
    assert local(clock, login=Limit(3, 60)).hit("login", "a") == Decision(True, 0)


def test_retry_after_counts_down_while_blocked(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(1, 60))
    hits(limiter, "login", "a", 2)
    clock.now += 59.5
    assert limiter.hit("login", "a") == Decision(False, 1)


def test_block_ends_after_the_window_and_the_count_starts_fresh(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(2, 60))
    assert hits(limiter, "login", "a", 3) == [True, True, False]
    clock.now += 60
    assert hits(limiter, "login", "a", 3) == [True, True, False]


def test_window_ends_without_a_block_when_under_the_limit(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(2, 60))
    assert hits(limiter, "login", "a", 2) == [True, True]
    clock.now += 60
    assert hits(limiter, "login", "a", 2) == [True, True]


def test_each_block_is_twice_as_long_as_the_one_before_up_to_an_hour(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(1, 600))
    blocks = []
    for _ in range(5):
        assert limiter.hit("login", "a").allowed is True
        denied = limiter.hit("login", "a")
        blocks.append(denied.retry_after)
        clock.now += denied.retry_after
    assert blocks == [600, 1200, 2400, 3600, 3600]


def test_a_window_longer_than_an_hour_blocks_for_one_window_at_most(clock: FakeClock) -> None:
    limiter = local(clock, signup=Limit(1, 7200))
    hits(limiter, "signup", "a", 2)
    clock.now += 7200
    assert hits(limiter, "signup", "a", 2) == [True, False]
    assert limiter.peek("signup", "a").retry_after == 7200


def test_strikes_are_forgotten_a_day_after_the_last_one(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(1, 60))
    hits(limiter, "login", "a", 2)
    clock.now += 60
    assert limiter.hit("login", "a").allowed is True
    assert limiter.hit("login", "a").retry_after == 120  # second strike
    clock.now += DAY - 1
    assert limiter.hit("login", "a").allowed is True
    assert limiter.hit("login", "a").retry_after == 240  # still remembered: third strike
    clock.now += DAY
    assert limiter.hit("login", "a").allowed is True
    assert limiter.hit("login", "a").retry_after == 60  # a day after the last: forgotten


def test_reset_clears_count_and_block_but_a_later_block_still_doubles(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(2, 60))
    assert hits(limiter, "login", "a", 3) == [True, True, False]
    limiter.reset("login", "a")
    assert limiter.peek("login", "a").allowed is True
    assert hits(limiter, "login", "a", 3) == [True, True, False]
    assert limiter.peek("login", "a").retry_after == 120


def test_reset_of_a_key_never_hit_is_harmless(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(2, 60))
    limiter.reset("login", "nobody")
    assert limiter.peek("login", "nobody").allowed is True


def test_keys_and_names_are_counted_independently(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(1, 60), signup=Limit(1, 60))
    assert hits(limiter, "login", "a", 2) == [True, False]
    assert limiter.hit("login", "b").allowed is True
    assert limiter.hit("signup", "a").allowed is True


def test_peek_counts_nothing(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(2, 60))
    for _ in range(10):
        assert limiter.peek("login", "a") == Decision(True, 0)
    assert hits(limiter, "login", "a", 3) == [True, True, False]


def test_peek_is_denied_while_blocked_or_when_the_next_hit_would_be(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(2, 60))
    hits(limiter, "login", "a", 2)
    clock.now += 10
    assert limiter.peek("login", "a") == Decision(False, 50)  # next hit would be denied
    limiter.hit("login", "a")
    assert limiter.peek("login", "a") == Decision(False, 60)  # blocked


def test_unknown_limit_name_is_a_key_error(clock: FakeClock) -> None:
    limiter = local(clock, login=Limit(2, 60))
    for call in (limiter.hit, limiter.peek, limiter.reset):
        with pytest.raises(KeyError):
            call("nosuch", "a")


def test_memory_drops_expired_entries_then_the_least_recently_hit(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "_MAX_ENTRIES", 20)
    limiter = local(clock, login=Limit(5, 60))
    for n in range(10):
        limiter.hit("login", f"old-{n}")
    clock.now += 120  # the old windows are over; no strikes keep them
    for n in range(15):
        limiter.hit("login", f"live-{n}")
    assert len(limiter._entries) == 15  # the expired ones went first
    hits(limiter, "login", "live-0", 5)  # live-0 is now the most recently hit, and full
    for n in range(15, 30):
        limiter.hit("login", f"live-{n}")
    assert len(limiter._entries) <= 20
    assert limiter.peek("login", "live-0").allowed is False  # kept: recently hit
    assert limiter.hit("login", "live-1").allowed is True  # dropped: counting afresh


def test_default_limits_are_all_positive() -> None:
    assert all(limit.attempts > 0 and limit.seconds > 0 for limit in DEFAULT_LIMITS.values())


# Overrides from IDENTITY_RATE_LIMITS.


def test_parse_overrides_accepts_good_entries() -> None:
    assert parse_overrides(["login.account=10/300", "signup.ip=5/60"]) == {
        "login.account": Limit(10, 300),
        "signup.ip": Limit(5, 60),
    }
    assert parse_overrides([]) == {}


@pytest.mark.parametrize(
    "entry",
    [
        "login.account",
        "login.account=10",
        "login.account=10/",
        "=10/300",
        "login.account=a/300",
        "login.account=-1/300",
        "login.account=10/300/5",
        "login.account = 10/300",
    ],
)
def test_parse_overrides_rejects_bad_syntax(entry: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=ATTEMPTS/SECONDS"):
        parse_overrides([entry])


@pytest.mark.parametrize("entry", ["login.account=0/300", "login.account=10/0"])
def test_parse_overrides_rejects_zero(entry: str) -> None:
    with pytest.raises(ValueError, match="must be above 0"):
        parse_overrides([entry])


def test_parse_overrides_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown name 'login.acount'")) as caught:
        parse_overrides(["login.acount=10/300"])
    assert "\n" not in str(caught.value)


# Concurrency.


def hit_from_threads(limiter: RateLimiter, name: str, key: str, threads: int) -> int:
    allowed: list[bool] = []
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        allowed.append(limiter.hit(name, key).allowed)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(allowed)


def test_fifty_threads_on_a_limit_of_ten_get_exactly_ten_in_process() -> None:
    limiter = RateLimiter({"login": Limit(10, 60)}, None, "test:")
    assert hit_from_threads(limiter, "login", "a", 50) == 10


def test_fifty_threads_on_a_limit_of_ten_get_exactly_ten_on_the_backend(
    limiter_client: redis.Redis | None, redis_prefix: str
) -> None:
    limiter = RateLimiter({"login": Limit(10, 60)}, limiter_client, redis_prefix)
    assert hit_from_threads(limiter, "login", unique("threads"), 50) == 10


# On the configured backend (Redis when set, else in-process), real time, short windows.


def test_block_ends_with_real_time_and_the_next_block_doubles_on_the_backend(
    limiter_client: redis.Redis | None, redis_prefix: str
) -> None:
    limiter = RateLimiter({"login": Limit(2, 1)}, limiter_client, redis_prefix)
    key = unique("backoff")
    assert hits(limiter, "login", key, 3) == [True, True, False]
    assert limiter.peek("login", key) == Decision(False, 1)
    time.sleep(1.1)
    assert hits(limiter, "login", key, 3) == [True, True, False]
    assert limiter.peek("login", key) == Decision(False, 2)


def test_reset_keeps_strikes_on_the_backend(
    limiter_client: redis.Redis | None, redis_prefix: str
) -> None:
    limiter = RateLimiter({"login": Limit(1, 1)}, limiter_client, redis_prefix)
    key = unique("reset")
    assert hits(limiter, "login", key, 2) == [True, False]
    limiter.reset("login", key)
    assert limiter.peek("login", key) == Decision(True, 0)
    assert hits(limiter, "login", key, 2) == [True, False]
    assert limiter.peek("login", key).retry_after == 2


def test_peek_counts_nothing_on_the_backend(
    limiter_client: redis.Redis | None, redis_prefix: str
) -> None:
    limiter = RateLimiter({"login": Limit(2, 2)}, limiter_client, redis_prefix)
    key = unique("peek")
    for _ in range(5):
        assert limiter.peek("login", key) == Decision(True, 0)
    assert hits(limiter, "login", key, 2) == [True, True]
    assert limiter.peek("login", key) == Decision(False, 2)  # the next hit would be denied
    assert limiter.hit("login", key) == Decision(False, 2)


def test_counts_are_shared_through_redis_when_configured(
    limiter_client: redis.Redis | None, redis_prefix: str
) -> None:
    # Two limiters stand for two worker processes.
    first = RateLimiter({"login": Limit(2, 2)}, limiter_client, redis_prefix)
    second = RateLimiter({"login": Limit(2, 2)}, limiter_client, redis_prefix)
    key = unique("shared")
    assert first.hit("login", key).allowed is True
    assert second.hit("login", key).allowed is True
    if limiter_client is not None:
        assert first.hit("login", key).allowed is False
        assert second.peek("login", key).allowed is False
    else:  # without Redis each process counts on its own
        assert first.hit("login", key).allowed is True
        assert second.hit("login", key).allowed is True


def test_raw_email_is_never_stored(limiter_client: redis.Redis | None, redis_prefix: str) -> None:
    limiter = RateLimiter({"login": Limit(1, 2)}, limiter_client, redis_prefix)
    email = unique("secret.person")
    hits(limiter, "login", email, 2)  # a counter, a block and a strike
    if limiter_client is not None:
        names = [name.decode() for name in limiter_client.scan_iter(match=redis_prefix + "*")]
        ours = [name for name in names if name.startswith(f"{redis_prefix}rl:login:")]
        assert len(ours) >= 2
        assert not any(email in name or "secret.person" in name for name in names)
    else:
        assert limiter._entries
        assert email not in repr(limiter._entries)


# Redis down or flaky.


def dead_redis() -> redis.Redis:
    return redis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )


def test_redis_down_still_limits_in_process_and_never_raises(redis_prefix: str) -> None:
    limiter = RateLimiter({"login": Limit(3, 60)}, dead_redis(), redis_prefix)
    assert limiter.peek("login", "a") == Decision(True, 0)
    assert hits(limiter, "login", "a", 4) == [True, True, True, False]
    assert limiter.peek("login", "a") == Decision(False, 60)
    limiter.reset("login", "a")
    assert limiter.hit("login", "a").allowed is True


def test_redis_down_warns_at_most_once_a_minute(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter({"login": Limit(3, 60)}, dead_redis(), redis_prefix)
    with caplog.at_level(logging.WARNING, logger="identity.limits"):
        hits(limiter, "login", "a", 3)
        limiter.peek("login", "a")
        limiter.reset("login", "a")
    assert len([r for r in caplog.records if r.name == "identity.limits"]) == 1


class FlakyScript:
    """Stands in for the registered Lua script: fails while ``down``, else allows."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def __call__(self, keys: Any, args: Any) -> list[int]:
        if self.down:
            raise redis.ConnectionError("Redis is down")
        self.calls += 1
        return [1, 0]


class FlakyRedis:
    def __init__(self) -> None:
        self.script = FlakyScript()

    def register_script(self, text: str) -> FlakyScript:
        return self.script


def test_redis_is_used_again_once_it_answers(redis_prefix: str) -> None:
    flaky = FlakyRedis()
    limiter = RateLimiter({"login": Limit(1, 60)}, flaky, redis_prefix)  # type: ignore[arg-type]
    assert hits(limiter, "login", "a", 2) == [True, False]  # counted in-process
    flaky.script.down = False
    assert hits(limiter, "login", "a", 2) == [True, True]  # Redis answers again
    assert flaky.script.calls == 2


def test_hits_from_the_event_loop_and_from_threads_count_together(
    limiter_client: redis.Redis | None, redis_prefix: str, redis_url: str | None
) -> None:
    loop_redis = LoopRedis(redis_url) if redis_url else None
    limiter = RateLimiter(
        {"login": Limit(3, 60)}, limiter_client, redis_prefix, loop_redis=loop_redis
    )

    async def three_hits_in_the_loop() -> list[Decision]:
        try:
            decisions = [await limiter.hit_in_loop("login", "k")]
            if limiter_client is not None:
                limiter_client.script_flush()  # a restarted Redis has forgotten the script
            decisions.append(await limiter.hit_in_loop("login", "k"))
            decision, answers = await limiter.hit_with_reads("login", "k", [("PING",)])
            assert answers == ([True] if redis_url else None)
            return [*decisions, decision]
        finally:
            if loop_redis is not None:
                await loop_redis.close()

    # A loop of its own in a thread: the browser tests' Playwright keeps one in this thread.
    with anyio.from_thread.start_blocking_portal() as portal:
        assert all(d.allowed for d in portal.call(three_hits_in_the_loop))
    assert not limiter.hit("login", "k").allowed  # the fourth, from a thread


def _redis_sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class InLoop:
    """A limiter with the loop's Redis client when Redis is configured (else in-process),
    and a way to run a scenario in a loop of its own, closing that client after it."""

    def __init__(self, client: redis.Redis | None, prefix: str, url: str | None, limit: Limit):
        self.loop_redis = LoopRedis(url) if url else None
        self.limiter = RateLimiter({"login": limit}, client, prefix, loop_redis=self.loop_redis)

    def run(self, scenario: Callable[[], Awaitable[T]]) -> T:
        async def closing() -> T:
            try:
                return await scenario()
            finally:
                if self.loop_redis is not None:
                    await self.loop_redis.close()

        # A loop in a portal thread: the browser tests' Playwright keeps one in this thread.
        with anyio.from_thread.start_blocking_portal() as portal:
            return portal.call(closing)


def test_hits_of_one_loop_turn_share_one_round_trip_and_count_exactly(
    limiter_client: redis.Redis | None, redis_prefix: str, redis_url: str | None
) -> None:
    in_loop = InLoop(limiter_client, redis_prefix, redis_url, Limit(10, 60))
    key = unique("turn")

    async def thirty_at_once() -> list[Decision]:
        hits = (in_loop.limiter.hit_in_loop("login", key) for _ in range(30))
        return list(await asyncio.gather(*hits))

    trips = _redis_sample("identity_redis_round_trips_total")
    commands = _redis_sample("identity_redis_commands_total")
    decisions = in_loop.run(thirty_at_once)
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 20
    if redis_url:  # all thirty in one pipeline, each counted in Redis
        assert _redis_sample("identity_redis_round_trips_total") == trips + 1
        assert _redis_sample("identity_redis_commands_total") == commands + 30
        assert not in_loop.limiter.peek("login", key).allowed


def test_a_forgotten_script_is_loaded_once_for_the_whole_turn_and_nothing_counts_twice(
    limiter_client: redis.Redis | None, redis_prefix: str, redis_url: str | None
) -> None:
    in_loop = InLoop(limiter_client, redis_prefix, redis_url, Limit(5, 60))
    limiter, key = in_loop.limiter, unique("flushed")

    async def five_then_one() -> tuple[list[Any], Decision]:
        if limiter_client is not None:
            limiter_client.script_flush()  # a restarted Redis has forgotten the script
        answered = await asyncio.gather(
            *(limiter.hit_with_reads("login", key, [("PING",)]) for _ in range(5))
        )
        return list(answered), await limiter.hit_in_loop("login", key)

    answered, sixth = in_loop.run(five_then_one)
    assert all(decision.allowed for decision, _ in answered) and not sixth.allowed
    assert [reads for _, reads in answered] == [[True] if redis_url else None] * 5


def test_a_failing_command_fails_only_its_own_request(
    limiter_client: redis.Redis | None, redis_prefix: str, redis_url: str | None
) -> None:
    in_loop = InLoop(limiter_client, redis_prefix, redis_url, Limit(5, 60))
    limiter = in_loop.limiter

    async def good_and_bad() -> list[tuple[Decision, list[Any] | None]]:
        return list(
            await asyncio.gather(
                limiter.hit_with_reads("login", unique("good"), [("PING",)]),
                limiter.hit_with_reads("login", unique("bad"), [("NO-SUCH-COMMAND",)]),
                limiter.hit_with_reads("login", unique("good"), [("ECHO", "x")]),
            )
        )

    answered = in_loop.run(good_and_bad)
    assert all(decision.allowed for decision, _ in answered)  # the bad one counts in-process
    expected = [[True], None, [b"x"]] if redis_url else [None, None, None]
    assert [reads for _, reads in answered] == expected


def test_redis_down_every_request_of_the_turn_falls_back(redis_prefix: str) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    in_loop = InLoop(dead_redis(), redis_prefix, dead_url, Limit(2, 60))

    async def three_at_once() -> list[Decision]:
        return list(
            await asyncio.gather(*(in_loop.limiter.hit_in_loop("login", "k") for _ in range(3)))
        )

    assert [d.allowed for d in in_loop.run(three_at_once)] == [True, True, False]
