"""What every command shares: its one-line errors, its output, and the services it works on."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from identity.config import Settings
from identity.db import Database, upgrade_schema
from identity.services import Services, build_services


class CommandError(Exception):
    """A one-line error for the user; the command exits with status 2."""


class OutputClosed(Exception):
    """Whoever read the output stopped (``identity users list | head -1``): not an error."""


def write(text: str) -> None:
    """Print one line of output, flushed, so a reader that stops is noticed here."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise OutputClosed from None


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    write(json.dumps(data, indent=2, default=str) if args.json else text)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another database, or SQLite in memory)."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    return Path(name).resolve()


def database_name(url: str) -> str:
    """The database as an operator may see it: a file, or the URL without its password."""
    path = sqlite_file(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


def database_error(error: DBAPIError, url: str) -> str:
    """One line for a database that refused or could not be reached; it names the file."""
    reason = " ".join(str(error.orig).split())  # drivers' messages span lines
    path = sqlite_file(url)
    if path is None:
        return f"database {database_name(url)}: {type(error.orig).__name__}: {reason}"
    if "unable to open" in reason:
        return (
            f"cannot open the SQLite database {path}: {reason} "
            "(does its folder exist, and may this user write there?)"
        )
    return f"the SQLite database {path}: {reason}"


def open_database(settings: Settings, *, reading: bool = False) -> Database:
    """The database, migrated first when ``IDENTITY_MIGRATE_ON_START`` says so.

    ``reading``: the command only shows what is there, so a missing SQLite file is an error
    that names it, never an empty database created in whatever folder the command ran in."""
    path = sqlite_file(settings.database_url)
    if reading and path is not None and (not path.exists() or path.stat().st_size == 0):
        state = "missing" if not path.exists() else "empty"
        raise CommandError(
            f"no database at {path} (the file is {state}; IDENTITY_DATABASE_URL is "
            f"{settings.database_url}): run this in the folder identity serve runs in, "
            "or set IDENTITY_DATABASE_URL"
        )
    if settings.migrate_on_start:
        upgrade_schema(settings.database_url)
    return Database(settings.database_url, pool_size=1)


def command_services(settings: Settings) -> Services:
    """The same services the server builds, on a one-connection database."""
    return build_services(settings, open_database(settings))


def fail(message: object, status: int) -> int:
    """Print ``message`` as the command's one error line; returns ``status``."""
    print(f"identity: error: {message}", file=sys.stderr)
    return status
