"""The access-token denylist: revoked ``jti`` values until the tokens would expire anyway.

The database row is the truth and is written in the revocation's transaction. Redis, when
configured, answers the hot-path check. A marker key says Redis holds the whole list; if
it is missing (Redis flushed or restarted) or a write to Redis failed, checks go to the
database until this process has copied the live list back into Redis.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy.orm import Session

from identity import repositories
from identity.db import Database
from identity.loop_redis import LoopRedis

log = logging.getLogger("identity.denylist")


# Bounds how long a Redis that silently lost an entry can go unnoticed.
_MARKER_TTL_SECONDS = 600


class Denylist:
    """Revoke a jti, ask whether a jti is revoked."""

    def __init__(
        self,
        database: Database,
        client: redis.Redis | None,
        prefix: str,
        loop_redis: LoopRedis | None = None,
    ) -> None:
        self._database = database
        self._redis = client
        self._loop_redis = loop_redis
        self._key_prefix = prefix + "denylist:"
        self._marker = prefix + "denylist-synced"
        self._needs_resync = client is not None
        self._resync_lock = threading.Lock()

    def revoke(self, session: Session, jti: str, expires_at: datetime) -> None:
        """Deny ``jti`` until ``expires_at``: a row in ``session``'s transaction, then Redis."""
        repositories.add_revoked_token(session, jti, expires_at)
        if self._redis is None:
            return
        try:
            self._redis.set(self._key_prefix + jti, 1, exat=int(expires_at.timestamp()) + 1)
        except redis.RedisError as error:
            # The row is still written; until Redis has it again, checks use the database.
            log.warning("denylist write to Redis failed, checking the database: %s", error)
            self._needs_resync = True
            # Make every other process distrust Redis too, until someone resyncs it.
            with contextlib.suppress(redis.RedisError):
                self._redis.delete(self._marker)

    def is_revoked(self, jti: str, session: Session | None = None) -> bool:
        """True when ``jti`` was revoked. Never answers False just because Redis lost data."""
        if self._redis is not None and (not self._needs_resync or self._resync()):
            try:
                pipeline = self._redis.pipeline(transaction=False)
                pipeline.exists(self._marker)
                pipeline.exists(self._key_prefix + jti)
                synced, listed = pipeline.execute()
                if listed:
                    return True
                if synced:
                    return False
                self._needs_resync = True
            except redis.RedisError as error:
                log.warning("denylist check in Redis failed, checking the database: %s", error)
                self._needs_resync = True
        if session is not None:
            return repositories.is_token_revoked(session, jti)
        with self._database.transaction() as own_session:
            return repositories.is_token_revoked(own_session, jti)

    def reads_for(self, jti: str) -> list[tuple[str, ...]] | None:
        """The Redis reads that answer "is ``jti`` revoked?" from the event loop, for a
        caller's round trip; None when only the database can answer (no Redis, or Redis not
        known to be whole): the caller then asks ``is_revoked`` in a thread."""
        if self._loop_redis is None or self._needs_resync:
            return None
        return [("EXISTS", self._marker), ("EXISTS", self._key_prefix + jti)]

    def answer(self, answers: list[Any] | None) -> bool | None:
        """The verdict from the answers to ``reads_for``'s reads (None: Redis did not
        answer, or is not whole any more: ask ``is_revoked``)."""
        if answers is None:
            self._needs_resync = True
            return None
        synced, listed = answers
        if listed:
            return True
        if synced:
            return False
        self._needs_resync = True
        return None

    def is_revoked_locally(self, jti: str) -> bool | None:
        """``is_revoked`` without Redis, from the event loop, when the database can answer
        there (SQLite: ``Database.read_in_loop``); else None."""
        if self._redis is not None:
            return None  # Redis is the hot path's truth when there is one
        rows = self._database.read_in_loop(repositories.IS_TOKEN_REVOKED_SQLITE, (jti,))
        return None if rows is None else bool(rows[0][0])

    async def is_revoked_in_loop(self, jti: str) -> bool | None:
        """``is_revoked`` from the event loop, when Redis or the local database can answer
        it; else None."""
        reads = self.reads_for(jti)
        if reads is None or self._loop_redis is None:
            return self.is_revoked_locally(jti)
        try:
            # In the round trip of every request of this turn of the loop (loop_redis).
            answers: list[Any] | None = await self._loop_redis.send(reads)
        except redis.RedisError as error:
            log.warning("denylist check in Redis failed, checking the database: %s", error)
            answers = None
        return self.answer(answers)

    def _resync(self) -> bool:
        """Copy the live denylist from the database into Redis; True when Redis is whole again."""
        assert self._redis is not None
        if not self._resync_lock.acquire(blocking=False):
            return False  # another thread is at it; this check uses the database
        try:
            now = datetime.now(UTC)
            with self._database.transaction() as session:
                rows = repositories.live_revoked_tokens(session, now)
            pipeline = self._redis.pipeline(transaction=False)
            for jti, expires_at in rows:
                pipeline.set(self._key_prefix + jti, 1, exat=int(expires_at.timestamp()) + 1)
            pipeline.set(self._marker, 1, ex=_MARKER_TTL_SECONDS)
            pipeline.execute()
            self._needs_resync = False
            log.info("denylist copied to Redis (%d live entries)", len(rows))
            return True
        except redis.RedisError as error:
            log.warning("denylist resync to Redis failed: %s", error)
            return False
        finally:
            self._resync_lock.release()
