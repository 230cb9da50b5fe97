"""Rows kept in memory for the hot endpoints: clients (read by the token and introspection
endpoints on every request) and users (read by userinfo).

Invalidation works across processes and instances: a change that matters bumps the table's
row of ``cache_generations`` in the same transaction (deleting a client; changing a user's
email, name, verification or active state, or deleting the user), and each process reads
that counter at most every ``IDENTITY_CACHE_CHECK_SECONDS``, dropping everything it holds
when it moved. A change therefore reaches every instance within that interval. A missing
row is never cached, so a new client or user is seen at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from identity import repositories

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

_MAX_ENTRIES = 10_000  # a bound on memory whatever keys callers bring


# ``peek`` starts the next check in the background once this share of the interval has
# passed, so the event-loop paths find their rows at every moment.
_EARLY_CHECK = 0.8


class RowCache(Generic[K, R]):
    def __init__(
        self,
        generation: str,
        load: Callable[[Session, K], R | None],
        check_seconds: float,
        transaction: Callable[[], AbstractContextManager[Session]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``transaction`` (``Database.transaction``) lets ``peek`` check ahead of time."""
        self._clock = clock
        self._generation_name = generation
        self._load = load
        self._check_seconds = check_seconds
        self._transaction = transaction
        self._rows: dict[K, R] = {}
        self._generation: int | None = None
        self._checked_at = -float("inf")
        self._lock = threading.Lock()
        self._checking_early = False

    def get(self, session: Session, key: K) -> R | None:
        """The row for ``key`` (detached, read-only) or None."""
        self._check(session)
        observed = self._generation
        row = self._rows.get(key)
        if row is not None:
            return row
        row = self._load(session, key)
        if row is None:
            return None
        # Loaded rows are never expired (expire_on_commit=False): detached, the instance
        # keeps its values, safe for any thread to read.
        session.expunge(row)
        with self._lock:
            # Another thread saw the counter move while this one read the row: the row may
            # be older than the change, so it serves this request but is not kept.
            if self._generation == observed:
                if len(self._rows) >= _MAX_ENTRIES:
                    self._rows.clear()
                self._rows[key] = row
        return row

    def peek(self, key: K) -> R | None:
        """The cached row, for callers without a database session (the event loop); None
        when it is not cached or the cache is due for its check: the caller then takes the
        way with a session, which checks."""
        age = self._clock() - self._checked_at
        if age >= self._check_seconds:
            return None
        if age >= self._check_seconds * _EARLY_CHECK:
            self._check_early()
        return self._rows.get(key)

    def _check_early(self) -> None:
        """Check in a thread of its own before the check falls due. Without it, every
        request in flight when it fell due took the way with a session at once, and that
        burst into the threadpool made the token endpoint's p99 (bench/README.md)."""
        if self._transaction is None:
            return
        with self._lock:
            if self._checking_early:
                return
            self._checking_early = True
        threading.Thread(target=self._run_early_check, name="identity-cache-check").start()

    def _run_early_check(self) -> None:
        assert self._transaction is not None
        try:
            with self._transaction() as session:
                self._check(session, force=True)
        except Exception:  # noqa: S110 - the check falls due as usual and is retried there
            pass
        finally:
            self._checking_early = False

    def _check(self, session: Session, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._checked_at < self._check_seconds:
            return
        generation = repositories.cache_generation(session, self._generation_name)
        with self._lock:
            if generation != self._generation:
                self._rows.clear()
                self._generation = generation
            self._checked_at = now
