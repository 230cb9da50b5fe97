"""Every service built once, with its collaborators: the one wiring the app and the CLI share.

A surface never builds a service itself, so none can be given a service without the
collaborators that make it keep its promises (the CLI's ``users disable`` ends refresh-token
families because it gets the same ``Accounts`` as the pages)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from identity import protocol
from identity.accounts.service import Accounts
from identity.config import Settings
from identity.db import Database
from identity.denylist import Denylist
from identity.group_commit import GroupCommit
from identity.keys import KeyStore
from identity.loop_redis import LoopRedis
from identity.protocol.server import IdentityServer
from identity.protocol.tokens import AccessTokenIssuer
from identity.token_families import TokenFamilies
from identity.upstream_providers import UpstreamProviders


@dataclass(frozen=True)
class Services:
    """The services of one process, built by ``build_services``."""

    settings: Settings
    database: Database
    redis: redis.Redis | None
    loop_redis: LoopRedis | None
    keys: KeyStore
    denylist: Denylist
    families: TokenFamilies
    accounts: Accounts
    oauth: IdentityServer
    audit_writer: GroupCommit
    providers: UpstreamProviders


def redis_client(settings: Settings) -> redis.Redis | None:
    """The synchronous Redis client, or None when no Redis is configured."""
    if settings.redis_url is None:
        return None
    # Short timeouts: a Redis that hangs must turn into the database fallback quickly.
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
    )


def key_store(settings: Settings) -> KeyStore:
    """The signing keys in ``IDENTITY_KEYS_DIR``."""
    return KeyStore(
        settings.keys_dir,
        max_token_ttl=settings.max_token_ttl,
        reload_seconds=settings.keys_reload_seconds,
    )


def build_services(settings: Settings, database: Database | None = None) -> Services:
    """Build every service from ``settings`` (on ``database`` when given)."""
    if database is None:
        # One connection for each thread of both lanes (identity.lanes).
        pool_size = settings.db_pool_size + settings.password_threads
        database = Database(settings.database_url, pool_size)
    sync_redis = redis_client(settings)
    loop_redis = LoopRedis(settings.redis_url) if settings.redis_url else None
    keys = key_store(settings)
    denylist = Denylist(database, sync_redis, settings.redis_prefix, loop_redis)
    families = TokenFamilies(denylist)
    accounts = Accounts.from_settings(settings, database, sync_redis, loop_redis, families)
    issuer = AccessTokenIssuer(settings.issuer, keys, settings.access_token_ttl)
    audit_writer = GroupCommit(database)
    oauth = protocol.build_server(
        settings, database, issuer, denylist, families, accounts, audit_writer
    )
    # The same box as the accounts' secrets: one key set to configure and rotate.
    providers = UpstreamProviders(settings, accounts.secret_box)
    return Services(
        settings=settings,
        database=database,
        redis=sync_redis,
        loop_redis=loop_redis,
        keys=keys,
        denylist=denylist,
        families=families,
        accounts=accounts,
        oauth=oauth,
        audit_writer=audit_writer,
        providers=providers,
    )
