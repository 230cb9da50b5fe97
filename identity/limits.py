"""Named rate limiters: fixed windows with progressive blocks, shared through Redis if set.

Without Redis, or while Redis does not answer, each process counts on its own.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from identity import metrics
from identity.loop_redis import LoopRedis

log = logging.getLogger("identity.limits")


@dataclass(frozen=True)
class Limit:
    """At most ``attempts`` hits per window of ``seconds``."""

    attempts: int
    seconds: int


DEFAULT_LIMITS: dict[str, Limit] = {
    "login.ip": Limit(100, 300),  # login attempts per client IP
    "login.account": Limit(10, 300),  # failed logins per account (email)
    "signup.ip": Limit(20, 3600),
    "reset.ip": Limit(20, 3600),
    "reset.account": Limit(5, 3600),
    # Verification codes: 6 digits living 10 minutes. Tries count per address and client
    # IP, so others' guesses never lock the owner out; all IPs together have a ceiling
    # against a spread-out guess. Neither touches the emailed link (256 bits, not a guess).
    "verify.account_ip": Limit(5, 600),  # code tries per (address, client IP)
    "verify.account": Limit(30, 600),  # code tries per address, from every IP together
    "verify.resend": Limit(5, 3600),  # resend-verification requests per account
    # Wrong second-factor codes (TOTP and recovery) per account, then blocks that double.
    "mfa.account": Limit(5, 300),
    # Mail to one address, whatever sends it (the Mailer counts every mail in one place).
    "mail.address": Limit(5, 3600),
    "token.client": Limit(1200, 60),  # token endpoint per client_id
    "introspect.client": Limit(6000, 60),
}

_OVERRIDE = re.compile(r"([a-z._]+)=([0-9]+)/([0-9]+)")
_STRIKE_MEMORY_SECONDS = 86400
_MAX_BLOCK_SECONDS = 3600
_MAX_ENTRIES = 100_000
_WARN_EVERY_SECONDS = 60.0

# KEYS: counter, block, strikes. ARGV: attempts, window ms, longest block ms.
# Returns {allowed (1/0), retry after in ms}. TTLs run on Redis's clock.
_HIT_SCRIPT = """
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return {0, blocked} end
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if count <= tonumber(ARGV[1]) then return {1, 0} end
local strikes = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 86400000)
local cap = tonumber(ARGV[3])
local block = tonumber(ARGV[2])
for _ = 2, strikes do
  block = block * 2
  if block >= cap then break end
end
block = math.min(block, cap)
redis.call('SET', KEYS[2], 1, 'PX', block)
redis.call('DEL', KEYS[1])
return {0, block}
"""


def parse_overrides(entries: Sequence[str]) -> dict[str, Limit]:
    """Entries like ``login.account=10/300`` (attempts/seconds); ValueError on a bad one."""
    limits: dict[str, Limit] = {}
    for entry in entries:
        match = _OVERRIDE.fullmatch(entry)
        if match is None:
            raise ValueError(f"rate limit {entry!r}: expected NAME=ATTEMPTS/SECONDS")
        name, attempts, seconds = match[1], int(match[2]), int(match[3])
        if name not in DEFAULT_LIMITS:
            known = ", ".join(sorted(DEFAULT_LIMITS))
            raise ValueError(f"rate limit {entry!r}: unknown name {name!r} (known: {known})")
        if attempts <= 0 or seconds <= 0:
            raise ValueError(f"rate limit {entry!r}: attempts and seconds must be above 0")
        limits[name] = Limit(attempts, seconds)
    return limits


@dataclass(frozen=True)
class Decision:
    """Whether a hit may go ahead; ``retry_after`` whole seconds when it may not."""

    allowed: bool
    retry_after: int  # whole seconds until a retry may succeed; 0 when allowed


_ALLOWED = Decision(True, 0)


def _denied(seconds: float) -> Decision:
    return Decision(False, max(1, math.ceil(seconds)))


def _block_seconds(limit: Limit, strikes: int) -> int:
    # Doubles per strike but is capped, so no account is ever locked out for good.
    cap = max(limit.seconds, _MAX_BLOCK_SECONDS)
    return min(limit.seconds << min(strikes - 1, 32), cap)


def _cap_ms(limit: Limit) -> int:
    return max(limit.seconds, _MAX_BLOCK_SECONDS) * 1000


def _script_input(limit: Limit, base: str) -> tuple[list[str], list[int]]:
    """KEYS and ARGV of the hit script for one (limit, key)."""
    keys = [base, base + ":block", base + ":strikes"]
    return keys, [limit.attempts, limit.seconds * 1000, _cap_ms(limit)]


def _counted(name: str, allowed: int, retry_ms: int) -> Decision:
    """The script's answer as a decision, a refusal counted in the metrics."""
    return _counted_decision(name, _ALLOWED if allowed else _denied(int(retry_ms) / 1000))


def _counted_decision(name: str, decision: Decision) -> Decision:
    if not decision.allowed:
        metrics.count_rate_limited(name)
    return decision


@dataclass
class _Entry:
    count: int = 0
    window_end: float = 0.0
    block_end: float = 0.0
    strikes: int = 0
    strikes_end: float = 0.0

    def expired(self, now: float) -> bool:
        return max(self.window_end, self.block_end, self.strikes_end) <= now


class RateLimiter:
    """Count hits per (limit name, key); Redis when given and answering, else this process."""

    def __init__(
        self,
        limits: Mapping[str, Limit],
        client: redis.Redis | None,
        prefix: str,
        clock: Callable[[], float] = time.time,
        loop_redis: LoopRedis | None = None,
    ) -> None:
        self._limits = dict(limits)
        self._redis = client
        self._loop_redis = loop_redis
        self._prefix = prefix
        self._clock = clock
        self._script = client.register_script(_HIT_SCRIPT) if client is not None else None
        # Also the fallback while Redis is down; keyed like Redis, so no raw key is held.
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._last_warning: float | None = None

    def limit_of(self, name: str) -> Limit:
        """The limit ``name`` counts against (KeyError for an unknown name)."""
        return self._limits[name]

    def hit(self, name: str, key: str) -> Decision:
        """Count one attempt for (name, key); denied once the limit is exceeded."""
        limit, base = self._limits[name], self._key(name, key)
        if self._script is not None:
            keys, args = _script_input(limit, base)
            try:
                return _counted(name, *self._script(keys=keys, args=args))
            except redis.RedisError as error:
                self._warn(error)
        return _counted_decision(name, self._local_hit(limit, base))

    async def hit_in_loop(self, name: str, key: str) -> Decision:
        """``hit`` from the event loop: the same script through the loop's Redis client, and
        the same fallback to this process's count."""
        decision, _ = await self.hit_with_reads(name, key, ())
        return decision

    async def hit_with_reads(
        self, name: str, key: str, reads: Sequence[tuple[str, ...]]
    ) -> tuple[Decision, list[Any] | None]:
        """``hit_in_loop`` and some read commands in one Redis round trip (each round trip
        costs more CPU than the commands in it). The reads' answers, or None when Redis did
        not answer (the hit was then counted in this process)."""
        limit, base = self._limits[name], self._key(name, key)
        if self._loop_redis is not None and self._script is not None:
            keys, args = _script_input(limit, base)
            sha = self._script.sha
            try:
                # In the round trip of every request of this turn of the loop (loop_redis).
                answers = await self._loop_redis.send(
                    [("EVALSHA", sha, 3, *keys, *args), *reads], {sha: _HIT_SCRIPT}
                )
                return _counted(name, *answers[0]), answers[1:]
            except redis.RedisError as error:
                self._warn(error)
        return _counted_decision(name, self._local_hit(limit, base)), None

    def peek(self, name: str, key: str) -> Decision:
        """Is (name, key) blocked, or would its next hit be denied? Counts nothing."""
        limit, base = self._limits[name], self._key(name, key)
        if self._redis is not None:
            try:
                pipeline = self._redis.pipeline(transaction=False)
                pipeline.pttl(base + ":block")
                pipeline.get(base)
                pipeline.pttl(base)
                block_ms, count, window_ms = pipeline.execute()
                if block_ms > 0:
                    return _denied(block_ms / 1000)
                if count is not None and int(count) >= limit.attempts and window_ms > 0:
                    return _denied(window_ms / 1000)
                return _ALLOWED
            except redis.RedisError as error:
                self._warn(error)
        return self._local_peek(limit, base)

    def reset(self, name: str, key: str) -> None:
        """Forget the attempts of (name, key) (e.g. after the owner logs in successfully)."""
        if name not in self._limits:
            raise KeyError(name)
        base = self._key(name, key)
        with self._lock:
            entry = self._entries.get(base)
            if entry is not None:
                entry.count, entry.window_end, entry.block_end = 0, 0.0, 0.0
        if self._redis is not None:
            try:
                self._redis.delete(base, base + ":block")  # strikes are kept on purpose
            except redis.RedisError as error:
                self._warn(error)

    def _key(self, name: str, key: str) -> str:
        # Keys may be email addresses: only a digest goes into Redis or memory.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self._prefix}rl:{name}:{digest}"

    def _local_hit(self, limit: Limit, base: str) -> Decision:
        now = self._clock()
        with self._lock:
            entry = self._entries.pop(base, None) or _Entry()
            if len(self._entries) >= _MAX_ENTRIES:
                self._prune(now)
            self._entries[base] = entry  # re-inserted: dict order is least recently hit first
            if entry.block_end > now:
                return _denied(entry.block_end - now)
            if entry.window_end <= now:
                entry.count, entry.window_end = 0, now + limit.seconds
            entry.count += 1
            if entry.count <= limit.attempts:
                return _ALLOWED
            if entry.strikes_end <= now:
                entry.strikes = 0
            entry.strikes += 1
            entry.strikes_end = now + _STRIKE_MEMORY_SECONDS
            duration = _block_seconds(limit, entry.strikes)
            entry.block_end = now + duration
            entry.count, entry.window_end = 0, 0.0  # the window after the block starts fresh
            return _denied(duration)

    def _local_peek(self, limit: Limit, base: str) -> Decision:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(base)
            if entry is None:
                return _ALLOWED
            if entry.block_end > now:
                return _denied(entry.block_end - now)
            if entry.window_end > now and entry.count >= limit.attempts:
                return _denied(entry.window_end - now)
            return _ALLOWED

    def _prune(self, now: float) -> None:
        """Drop expired entries, then the least recently hit, to stay under the bound."""
        for base in [base for base, entry in self._entries.items() if entry.expired(now)]:
            del self._entries[base]
        # Free a tenth of the bound at least, so a full store is not swept on every hit.
        excess = len(self._entries) - (_MAX_ENTRIES - _MAX_ENTRIES // 10)
        for base in list(self._entries)[: max(excess, 0)]:
            del self._entries[base]

    def _warn(self, error: redis.RedisError) -> None:
        now = time.monotonic()
        with self._lock:
            if self._last_warning is not None and now - self._last_warning < _WARN_EVERY_SECONDS:
                return
            self._last_warning = now
        log.warning("rate limiter: Redis failed, counting in this process: %s", error)
