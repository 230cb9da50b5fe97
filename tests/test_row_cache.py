"""The row cache checks ahead of time for the event-loop paths, and still lets go of a
changed row within its interval."""

from __future__ import annotations

import threading
from collections.abc import Callable

from identity import repositories
from identity.db import Database
from identity.models import Client
from identity.row_cache import RowCache

MakeClient = Callable[..., tuple[str, str]]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _checks() -> set[threading.Thread]:
    """The early checks running now (in this process: other tests' apps may have some)."""
    return {t for t in threading.enumerate() if t.name == "identity-cache-check"}


def _wait_for_early_checks() -> None:
    for thread in _checks():
        thread.join(10)


def _cache(database: Database, clock: _Clock) -> RowCache[str, Client]:
    return RowCache("clients", repositories.get_client, 1.0, database.transaction, clock)


def test_peek_checks_before_the_interval_ends_so_the_loop_keeps_its_rows(
    database: Database, make_client: MakeClient
) -> None:
    client_id, _ = make_client(scope="read")
    clock = _Clock()
    cache = _cache(database, clock)
    with database.transaction() as session:
        assert cache.get(session, client_id) is not None
    clock.now += 0.5
    running = _checks()
    assert cache.peek(client_id) is not None  # early in the interval: nothing to check
    assert not _checks() - running
    clock.now += 0.35
    assert cache.peek(client_id) is not None  # late: served, and a check starts
    _wait_for_early_checks()
    clock.now += 0.65  # past the first interval, within the one of the early check
    assert cache.peek(client_id) is not None


def test_an_early_check_lets_go_of_a_changed_row_at_once(
    database: Database, make_client: MakeClient
) -> None:
    client_id, _ = make_client(scope="read")
    clock = _Clock()
    cache = _cache(database, clock)
    with database.transaction() as session:
        cache.get(session, client_id)
    with database.transaction() as session:  # as `identity clients delete` does it
        assert repositories.delete_client(session, client_id)
    clock.now += 0.9
    cache.peek(client_id)
    _wait_for_early_checks()
    assert cache.peek(client_id) is None


def test_without_a_check_in_time_peek_sends_callers_the_long_way(
    database: Database, make_client: MakeClient
) -> None:
    client_id, _ = make_client(scope="read")
    clock = _Clock()
    cache = RowCache("clients", repositories.get_client, 1.0, None, clock)  # cannot check early
    with database.transaction() as session:
        cache.get(session, client_id)
    clock.now += 0.9
    assert cache.peek(client_id) is not None
    clock.now += 0.2
    assert cache.peek(client_id) is None
