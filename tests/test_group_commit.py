"""Group commit of audit rows: batches share a COMMIT, and nobody resumes before theirs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from identity import audit
from identity.db import Database
from identity.group_commit import GroupCommit
from identity.models import AuditEvent

from .loops import run_in_own_loop


@pytest.fixture
def commits(database: Database) -> Iterator[list[int]]:
    """One entry per COMMIT the engine runs."""
    seen: list[int] = []

    def count(_connection: Any) -> None:
        seen.append(1)

    event.listen(database.engine, "commit", count)
    yield seen
    event.remove(database.engine, "commit", count)


def _count(database_url: str, type_: str) -> int:
    # A separate engine: what it sees is on disk (or committed on the server), not in a
    # connection of the writer.
    other = Database(database_url)
    try:
        with other.transaction() as session:
            query = select(func.count()).select_from(AuditEvent).where(AuditEvent.type == type_)
            return int(session.execute(query).scalar_one())
    finally:
        other.dispose()


def test_rows_arriving_together_share_one_commit_and_are_durable_when_awaited(
    database: Database, database_url: str, commits: list[int]
) -> None:
    writer = GroupCommit(database, window=0.2)

    async def main() -> None:
        rows = [audit.event_row("test.batch", subject=f"s{n}") for n in range(20)]
        await asyncio.gather(*(writer.record(row) for row in rows))
        # Every caller resumed: every row is committed, seen from another engine.
        assert _count(database_url, "test.batch") == 20

    try:
        run_in_own_loop(main)
    finally:
        writer.close()
    assert len(commits) == 1


def test_a_batch_is_capped_and_the_rest_goes_in_the_next(
    database: Database, database_url: str, commits: list[int]
) -> None:
    writer = GroupCommit(database, max_batch=4, window=0.2)

    async def main() -> None:
        await asyncio.gather(*(writer.record(audit.event_row("test.cap")) for _ in range(10)))

    try:
        run_in_own_loop(main)
    finally:
        writer.close()
    assert _count(database_url, "test.cap") == 10
    assert len(commits) == 3  # 4 + 4 + 2


def test_a_failed_commit_raises_in_every_caller_of_its_batch_and_writes_none(
    database: Database, database_url: str
) -> None:
    writer = GroupCommit(database, window=0.2)
    broken = audit.event_row("test.broken") | {"type": None}  # NOT NULL

    async def main() -> list[BaseException | None]:
        good = audit.event_row("test.broken")
        outcomes = await asyncio.gather(
            writer.record(good), writer.record(broken), return_exceptions=True
        )
        return list(outcomes)

    try:
        outcomes = run_in_own_loop(main)
    finally:
        writer.close()
    assert all(isinstance(outcome, IntegrityError) for outcome in outcomes), outcomes
    assert _count(database_url, "test.broken") == 0
    # The writer goes on: the next batch commits.
    try:
        run_in_own_loop(lambda: writer.record(audit.event_row("test.after")))
    finally:
        writer.close()
    assert _count(database_url, "test.after") == 1


def test_close_commits_what_is_pending_and_the_writer_starts_again(
    database: Database, database_url: str
) -> None:
    writer = GroupCommit(database, window=5.0)  # only close ends this window early

    async def main() -> None:
        pending = asyncio.ensure_future(writer.record(audit.event_row("test.close")))
        await asyncio.sleep(0.05)  # the writer holds the row in its window
        await asyncio.to_thread(writer.close)
        await asyncio.wait_for(pending, 2)

    run_in_own_loop(main)
    assert _count(database_url, "test.close") == 1
    run_in_own_loop(lambda: writer.record(audit.event_row("test.close")))  # a new writer
    writer.close()
    assert _count(database_url, "test.close") == 2


def test_a_lone_row_waits_no_longer_than_the_window(database: Database) -> None:
    writer = GroupCommit(database, window=0.05)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        await writer.record(audit.event_row("test.warm"))  # starts the thread
        started = loop.time()
        await writer.record(audit.event_row("test.lone"))
        return loop.time() - started

    try:
        elapsed = run_in_own_loop(main)
    finally:
        writer.close()
    assert 0.05 <= elapsed < 2.0
