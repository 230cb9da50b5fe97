"""``identity serve`` and ``identity migrate``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from identity.cli.common import emit
from identity.config import Settings
from identity.db import upgrade_schema
from identity.services import key_store


def serve(args: argparse.Namespace, settings: Settings) -> None:
    import logging.config
    import shutil
    import signal

    import uvicorn

    from identity import logs, metrics

    log_config = logs.logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(log_config)  # this process's own lines too, not just the workers'
    # Done once here, before workers fork, so they never race for it.
    if settings.migrate_on_start:
        upgrade_schema(settings.database_url)
    key_store(settings).ensure()
    # Workers count into files in this folder, so /metrics adds up all of them.
    created = metrics.prepare_multiprocess_dir()
    if created is not None:
        # A single uvicorn process re-raises the SIGTERM it handled; exiting through Python
        # instead lets the folder be removed below.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        uvicorn.run(
            "identity.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=None if args.reload else args.workers,
            reload=args.reload,
            log_level=settings.log_level,
            log_config=log_config,
            access_log=False,  # identity.access writes one line per request instead
            proxy_headers=False,  # identity applies IDENTITY_TRUSTED_PROXIES itself
            server_header=False,
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def migrate(args: argparse.Namespace, settings: Settings) -> None:
    upgrade_schema(settings.database_url)
    emit(args, {"migrated": True}, "database is at the latest schema")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` and ``migrate``."""
    run = commands.add_parser("serve", parents=[common], help="run the server (uvicorn)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    run.set_defaults(handler=serve)
    commands.add_parser("migrate", parents=[common], help="alembic upgrade head").set_defaults(
        handler=migrate
    )
