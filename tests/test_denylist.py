"""The denylist: the database is the truth, Redis the fast path, and neither loses a revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from identity.db import Database
from identity.denylist import Denylist

from .conftest import free_port


def _soon() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=5)


def test_revoked_jti_is_revoked_and_others_are_not(
    database: Database, redis_url: str | None, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url) if redis_url else None
    denylist = Denylist(database, client, redis_prefix)
    with database.transaction() as session:
        denylist.revoke(session, "revoked-jti", _soon())
    assert denylist.is_revoked("revoked-jti") is True
    assert denylist.is_revoked("live-jti") is False


def test_revocation_survives_a_redis_flush(
    database: Database, redis_url: str | None, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url) if redis_url else None
    denylist = Denylist(database, client, redis_prefix)
    with database.transaction() as session:
        denylist.revoke(session, "flushed-jti", _soon())
    assert denylist.is_revoked("flushed-jti") is True
    if client is not None:
        for key in client.scan_iter(match=redis_prefix + "*"):
            client.delete(key)
    # A fresh process (another worker) that never saw the revocation:
    assert Denylist(database, client, redis_prefix).is_revoked("flushed-jti") is True
    assert denylist.is_revoked("flushed-jti") is True
    if client is not None:  # and Redis has been refilled from the database
        assert client.exists(redis_prefix + "denylist:flushed-jti")


def test_redis_down_falls_back_to_the_database(database: Database, redis_prefix: str) -> None:
    dead = redis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    denylist = Denylist(database, dead, redis_prefix)
    with database.transaction() as session:
        denylist.revoke(session, "while-down", _soon())
    assert denylist.is_revoked("while-down") is True
    assert denylist.is_revoked("never-revoked") is False


def test_the_embedded_database_answers_in_the_loop_at_once(database: Database) -> None:
    denylist = Denylist(database, None, "unused:")
    assert denylist.is_revoked_locally("jti-1") is (False if database.is_sqlite else None)
    with database.transaction() as session:
        denylist.revoke(session, "jti-1", _soon())
    # The loop's own read-only connection sees the commit on its next read.
    assert denylist.is_revoked_locally("jti-1") is (True if database.is_sqlite else None)
    assert denylist.is_revoked_locally("jti-2") is (False if database.is_sqlite else None)
