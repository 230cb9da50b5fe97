"""Throwaway storage for one run: a fresh PostgreSQL database and a random Redis prefix."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url


def _libpq_url(sqlalchemy_url: str) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class PostgresDatabase:
    """``identity_bench_<random>`` on the server of ``admin_url``; ``url`` points at it."""

    admin_url: str
    name: str

    @classmethod
    def create(cls, admin_url: str) -> PostgresDatabase:
        database = cls(admin_url, f"identity_bench_{secrets.token_hex(4)}")
        database._execute("CREATE DATABASE {}")
        return database

    @property
    def url(self) -> str:
        return make_url(self.admin_url).set(database=self.name).render_as_string(False)

    def drop(self) -> None:
        self._execute("DROP DATABASE IF EXISTS {} WITH (FORCE)")

    def _execute(self, statement: str) -> None:
        query = sql.SQL(statement).format(sql.Identifier(self.name))
        with psycopg.connect(_libpq_url(self.admin_url), autocommit=True) as connection:
            connection.execute(query)


def random_redis_prefix() -> str:
    return f"identity_bench_{secrets.token_hex(4)}:"


def delete_redis_prefix(redis_url: str, prefix: str) -> int:
    """Remove every key the run wrote under ``prefix``; how many there were."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def release(database: PostgresDatabase | None, redis_url: str | None, prefix: str) -> None:
    """Drop a run's PostgreSQL database and its Redis keys, whichever it had."""
    if database is not None:
        database.drop()
    if redis_url:
        delete_redis_prefix(redis_url, prefix)
