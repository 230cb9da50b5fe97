"""The schema comes from migrations, and the models match it."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from identity.db import schema_revision, upgrade_schema
from identity.models import Base


def test_models_match_the_migrated_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"render_as_batch": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_migrate_is_safe_to_run_again(database_url: str) -> None:
    head = schema_revision(database_url)
    upgrade_schema(database_url)
    assert schema_revision(database_url) == head is not None


def test_migrations_go_down_to_nothing_and_up_again(tmp_path: Path) -> None:
    from alembic import command

    from identity.db import _alembic_config

    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade_schema(url)
    config = _alembic_config(url)
    command.downgrade(config, "base")
    assert schema_revision(url) is None
    upgrade_schema(url)
    assert schema_revision(url) is not None
