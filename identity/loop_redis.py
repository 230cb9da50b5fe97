"""An asyncio Redis client for each event loop, for the checks the hot endpoints make
without leaving the loop (rate limits, the denylist), and one round trip for all of them in
a turn of the loop.

The synchronous client stays for work done in threads. The asyncio client's connections
belong to the loop that opened them, so each loop gets its own (uvicorn has one per worker;
tests run apps under several).

Round trips: every token and introspection request counts its client's limit in Redis, and
with redis-py each round trip costs the worker far more CPU than the commands in it (about
70 µs a request on the token endpoint's core, bench/README.md): a pipeline object, a
connection taken from the pool and given back, a timeout, a write and a read. So the
commands of every request that reaches Redis in the same turn of the event loop go in one
pipeline (``send``), as node's ioredis does with auto-pipelining: each request still gets
its own answers, in its own order, and waits no longer than the round trip it would have
made alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from anyio.lowlevel import RunVar
from redis.exceptions import NoScriptError

from identity import metrics

Command = tuple[Any, ...]


class LoopRedis:
    def __init__(self, url: str) -> None:
        self._url = url
        self._clients: RunVar[redis.asyncio.Redis] = RunVar("identity_loop_redis")
        self._round_trips: RunVar[_RoundTrips] = RunVar("identity_loop_redis_round_trips")

    def client(self) -> redis.asyncio.Redis:
        try:
            return self._clients.get()
        except LookupError:
            # The same short timeouts as the threads' client: a hanging Redis must turn
            # into the fallback quickly.
            client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            self._clients.set(client)
            return client

    async def send(
        self, commands: Sequence[Command], scripts: Mapping[str, str] | None = None
    ) -> list[Any]:
        """The answers to ``commands``, sent in the round trip of this turn of the loop.
        ``scripts`` maps the SHA1 of each script an EVALSHA names to its source, loaded and
        the commands sent again when Redis has forgotten it (a restart or SCRIPT FLUSH).
        Raises the Redis error of the round trip, or of one of its own commands."""
        try:
            round_trips = self._round_trips.get()
        except LookupError:
            round_trips = _RoundTrips(self.client())
            self._round_trips.set(round_trips)
        return await round_trips.submit(tuple(commands), dict(scripts or {}))

    async def close(self) -> None:
        """Close this loop's client, if it made one."""
        try:
            client = self._clients.get()
        except LookupError:
            return
        await client.aclose()


@dataclass
class _Waiting:
    commands: tuple[Command, ...]
    scripts: dict[str, str]
    answer: asyncio.Future[list[Any]]


@dataclass
class _RoundTrips:
    """The commands waiting for this turn's round trip, sent by a task started with the
    first of them: a new task runs after the callbacks already due in this turn, so every
    request the turn serves has added its commands by then."""

    client: redis.asyncio.Redis
    waiting: list[_Waiting] = field(default_factory=list)
    sending: set[asyncio.Task[None]] = field(default_factory=set)

    def submit(
        self, commands: tuple[Command, ...], scripts: dict[str, str]
    ) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        if not self.waiting:
            task = loop.create_task(self._flush())
            self.sending.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self.sending.discard)
        waiting = _Waiting(commands, scripts, loop.create_future())
        self.waiting.append(waiting)
        return waiting.answer

    async def _flush(self) -> None:
        batch, self.waiting = self.waiting, []
        try:
            await self._send(batch, reload_scripts=True)
        except BaseException as error:
            # Redis did not answer: each request falls back as it would have alone.
            failure = error if isinstance(error, Exception) else redis.RedisError("cancelled")
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(failure)
            if not isinstance(error, Exception):
                raise

    async def _send(self, batch: list[_Waiting], *, reload_scripts: bool) -> None:
        pipeline = self.client.pipeline(transaction=False)
        for waiting in batch:
            for command in waiting.commands:
                pipeline.execute_command(*command)
        answers = await pipeline.execute(raise_on_error=False)
        metrics.count_redis_round_trip(len(answers))
        again: list[_Waiting] = []
        start = 0
        for waiting in batch:
            own = answers[start : start + len(waiting.commands)]
            start += len(waiting.commands)
            if reload_scripts and waiting.scripts and _forgot_a_script(own):
                again.append(waiting)  # its EVALSHA ran nothing: sending it again is safe
                continue
            error = next((answer for answer in own if isinstance(answer, Exception)), None)
            if waiting.answer.done():
                continue  # its request is gone
            if error is not None:
                waiting.answer.set_exception(error)
            else:
                waiting.answer.set_result(own)
        if again:
            for source in {s for waiting in again for s in waiting.scripts.values()}:
                await self.client.script_load(source)
            await self._send(again, reload_scripts=False)


def _forgot_a_script(answers: Sequence[Any]) -> bool:
    return any(isinstance(answer, NoScriptError) for answer in answers)
