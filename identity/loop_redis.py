"""An asyncio Redis client for each event loop, for the checks the hot endpoints make
without leaving the loop (rate limits, the denylist).

The synchronous client stays for work done in threads. The asyncio client's connections
belong to the loop that opened them, so each loop gets its own (uvicorn has one per worker;
tests run apps under several).
"""

from __future__ import annotations

import redis.asyncio
from anyio.lowlevel import RunVar


class LoopRedis:
    def __init__(self, url: str) -> None:
        self._url = url
        self._clients: RunVar[redis.asyncio.Redis] = RunVar("identity_loop_redis")

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

    async def close(self) -> None:
        """Close this loop's client, if it made one."""
        try:
            client = self._clients.get()
        except LookupError:
            return
        await client.aclose()
