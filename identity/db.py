"""The database engine, its session factory and the unit of work."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

# A pooled connection unused for longer than this is pinged before it is handed out. Pinging
# every checkout (pool_pre_ping) costs a round trip per transaction; a connection that was
# busy a moment ago is almost always alive, and if a restart killed it anyway, the request
# answers 503 once, the pool is invalidated and the next request reconnects.
IDLE_PING_SECONDS = 5.0


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes concurrent workers
    # queue for the write lock instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_database_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine for ``url`` with the settings each backend needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    # max_overflow leaves room for the second, short transaction some calls open while
    # they hold one (an audit record of a failure that must survive the rollback).
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, pool_timeout=10
    )
    event.listen(engine, "checkout", _ping_if_idle)
    event.listen(engine, "checkin", _mark_used)
    return engine


def _ping_if_idle(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Drop a connection that sat idle and no longer answers, so the pool makes a new one
    (a database restart or an idle timeout killed it) and the server recovers by itself."""
    if time.monotonic() - record.info.get("used_at", 0.0) < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()
    except Exception as error:  # any driver error here means "this connection is gone"
        raise DisconnectionError(str(error)) from error


def _mark_used(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["used_at"] = time.monotonic()


class Database:
    """The engine plus a unit of work: one session, one transaction, one commit."""

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.url = url
        self.engine = create_database_engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._loop_reader: sqlite3.Connection | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Commit when the block ends normally, roll back when it raises."""
        with self._sessions.begin() as session:
            yield session

    def read_in_loop(self, query: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        """The rows of a small read, answered without a thread where that cannot block the
        event loop: an SQLite file in WAL mode, whose readers never wait for its writer
        (they read the last commit). None elsewhere (PostgreSQL, an in-memory database)
        and whenever SQLite would have to wait: the caller then reads in a thread.

        The connection is its own, read-only and outside any pool: the pool's connections
        belong to the threads."""
        if not self.is_sqlite or not self.engine.url.database or ":memory:" in str(self.url):
            return None
        try:
            if self._loop_reader is None:
                path = Path(self.engine.url.database).absolute()
                # timeout=0: never wait for a lock in the loop.
                self._loop_reader = sqlite3.connect(
                    f"{path.as_uri()}?mode=ro", uri=True, timeout=0, check_same_thread=False
                )
            return self._loop_reader.execute(query, parameters).fetchall()
        except sqlite3.Error:
            return None

    def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._loop_reader is not None:
            self._loop_reader.close()
            self._loop_reader = None


# migrations/ at the top of the repository is the package identity._migrations (pyproject.toml
# maps it), found the same way in a checkout, an editable install and a wheel.
MIGRATIONS_DIR = Path(str(resources.files("identity._migrations")))
# Any fixed 64-bit number: instances that start together take turns at migrating.
_MIGRATION_LOCK_ID = 7_253_190_441


def _alembic_config(url: str) -> AlembicConfig:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(
            f"migrations not found at {MIGRATIONS_DIR}: reinstall identity (pip install .)"
        )
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_schema(url: str) -> None:
    """Run ``alembic upgrade head``; safe to repeat and safe for instances starting together."""
    config = _alembic_config(url)
    engine = create_database_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
                connection.commit()
            try:
                config.attributes["connection"] = connection
                alembic_command.upgrade(config, "head")
                connection.commit()
            finally:
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
                    connection.commit()
    finally:
        engine.dispose()


def schema_revision(url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    engine = create_database_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
