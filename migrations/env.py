"""Alembic environment: the URL comes from the config (set by `identity migrate`) or the env."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import engine_from_config, pool

from identity.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or os.environ.get(
    "IDENTITY_DATABASE_URL", "sqlite:///./identity.db"
)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
