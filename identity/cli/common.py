"""What every command shares: its one-line errors, its output, and the services it works on."""

from __future__ import annotations

import argparse
import json
from typing import Any

from identity.config import Settings
from identity.db import Database, upgrade_schema
from identity.services import Services, build_services


class CommandError(Exception):
    """A one-line error for the user; the command exits with status 2."""


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def open_database(settings: Settings) -> Database:
    """The database, migrated first when ``IDENTITY_MIGRATE_ON_START`` says so."""
    if settings.migrate_on_start:
        upgrade_schema(settings.database_url)
    return Database(settings.database_url, pool_size=1)


def command_services(settings: Settings) -> Services:
    """The same services the server builds, on a one-connection database."""
    return build_services(settings, open_database(settings))
