"""Group commit of audit rows for the event loop.

The token endpoint's fast path (``protocol.lean``) must not answer before its
``token.issued`` row is durable, but one transaction per token costs a thread hop, a
connection checkout and a COMMIT (on PostgreSQL a WAL flush) per request. Here one writer
thread owns the writes: rows handed in while a batch is being committed wait for the next
batch, which takes all of them (up to ``max_batch``) in one INSERT and one COMMIT. Each
caller resumes only when its own batch's COMMIT has returned, so nothing is acknowledged
before it is durable, and a failed COMMIT raises in every request of its batch.

A batch is what arrives within ``WINDOW`` of its first row (or during the previous COMMIT),
up to ``max_batch`` rows. The window is what makes batches at all on one core: there the
writer thread runs whenever the event loop lets go of the GIL (a signature does), and without
a window it committed about one row at a time, about 0.2 ms of CPU per token (measured,
bench/README.md). On SQLite, where writers take turns at one lock, the batch also takes that
lock once instead of once per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from identity import repositories
from identity.db import Database

log = logging.getLogger("identity.group_commit")

# Bounds one INSERT's size (and how long the rows of a batch wait behind each other).
MAX_BATCH = 256
# How long the first row of a batch waits for others: the latency a lone token pays.
WINDOW = 0.002

_Waiter = tuple[dict[str, Any], asyncio.Future[None]]


class GroupCommit:
    """``await record(row)``: the row is committed, together with the rows of other callers
    that arrived meanwhile. Rows are ``audit.event_row`` values."""

    def __init__(
        self, database: Database, max_batch: int = MAX_BATCH, window: float = WINDOW
    ) -> None:
        self._database = database
        self._max_batch = max_batch
        self._window = window
        self._pending: list[_Waiter] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False

    async def record(self, row: dict[str, Any]) -> None:
        """Return once ``row`` is committed; raise what the COMMIT raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._wake:
            if self._closing:
                raise RuntimeError("the audit writer is closed")
            self._pending.append((row, future))
            # Only the first row of a batch, or the one that fills it, wakes the writer: a
            # wake-up per row would cost a thread switch per token.
            wake = len(self._pending) in (1, self._max_batch)
            if self._thread is None:
                # Started on first use, so a process that never issues a token (the CLI,
                # most tests) has no writer thread.
                self._thread = threading.Thread(
                    target=self._run, name="identity-group-commit", daemon=True
                )
                self._thread.start()
            if wake:
                self._wake.notify()
        await future

    def close(self) -> None:
        """Commit what is pending, then stop the writer (the next ``record`` starts another:
        an app may be started again after its shutdown, as tests do)."""
        with self._wake:
            self._closing = True
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            thread.join()
        with self._wake:
            self._thread, self._closing = None, False

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return  # closing and drained
                deadline = time.monotonic() + self._window
                while len(self._pending) < self._max_batch and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            self._commit(batch)

    def _commit(self, batch: Sequence[_Waiter]) -> None:
        error: BaseException | None = None
        try:
            # A Core connection, not a Session: the batch needs no unit of work.
            with self._database.engine.begin() as connection:
                repositories.add_audit_events(connection, [row for row, _ in batch])
        except Exception as failure:  # every waiter of the batch gets it, none is left hanging
            log.error("committing %d audit rows failed: %s", len(batch), type(failure).__name__)
            error = failure
        # One hop back into each event loop per batch, not one per row.
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, future in batch:
            by_loop.setdefault(future.get_loop(), []).append(future)
        for loop, futures in by_loop.items():
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue  # its request was cancelled (the client went away)
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
