"""Thread lanes: where blocking work (a transaction, an argon2 hash) runs off the event loop.

Two bounded lanes per process. The general lane is as wide as the database pool, so a
request never waits inside a thread for a connection and the pool never opens and closes
overflow connections under load. The password lane takes every request that hashes or
verifies a password: argon2 at production cost takes tens of milliseconds of CPU, and a
login flood in the general lane would hold every thread and connection while token
validation, refresh and userinfo queue behind it. In its own narrow lane, on threads of
lower priority, the flood queues holding no thread and no connection, and the rest keeps
its threads and the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio.to_thread

T = TypeVar("T")

# Added to the password threads' nice value. Linux keeps one per thread and the threads
# argon2 starts for its lanes inherit it, so during a login flood the scheduler gives the
# event loop (token validation, JWKS) the CPU first and the hashes what is left.
_PASSWORD_NICENESS = 10


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: same priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _PASSWORD_NICENESS)


class Lanes:
    def __init__(self, general: int, passwords: int) -> None:
        self.general = general
        self.passwords = passwords
        # Threads of its own, so their lower priority never carries over to other work;
        # requests beyond its width wait in its queue, holding no thread and no connection.
        self._password_pool = ThreadPoolExecutor(
            max_workers=passwords,
            thread_name_prefix="identity-password",
            initializer=_lower_priority,
        )

    @property
    def threads(self) -> int:
        """Threads (hence database connections) busy at most at once."""
        return self.general + self.passwords

    def configure(self) -> None:
        """Size the general lane (anyio's default limiter, which Starlette's threadpool and
        ``run_in_threadpool`` use); call from the running event loop, at start-up."""
        anyio.to_thread.current_default_thread_limiter().total_tokens = self.general

    async def run(self, call: Callable[[], T], *, password: bool = False) -> T:
        """Run ``call`` in a thread of its lane; wait in the event loop while the lane is full."""
        if not password:
            return await anyio.to_thread.run_sync(call)
        # The request's context goes along, as anyio does it (request id, log notes).
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._password_pool, context.run, call)

    def close(self) -> None:
        self._password_pool.shutdown(wait=False, cancel_futures=True)


def carries_password(fields: Iterable[str] | bytes) -> bool:
    """True for a form or a raw body naming a password field (password, new_password...)."""
    if isinstance(fields, bytes):
        return b"password" in fields
    return any("password" in field for field in fields)
