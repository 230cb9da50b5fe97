"""``identity serve`` and ``identity migrate``."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import socket
import sys
from typing import Any

from identity.cli.common import CommandError, emit
from identity.config import Settings, SettingsError, issuer_mismatch, serving_issuer
from identity.db import upgrade_schema
from identity.services import key_store

log = logging.getLogger("identity.serve")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1 to 65535)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


def _check_port_free(host: str, port: int) -> None:
    """Fail in one line, before migrations run, when the address is taken; bound as uvicorn
    binds it (IPv6 only for a host with a colon, SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"port {port} on {host} is already in use (another identity serve?): "
                    "stop what listens there or choose another --port"
                ) from None
            raise CommandError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def _issuer_for(args: argparse.Namespace, settings: Settings) -> tuple[Settings, str | None]:
    """The settings with the issuer this server is reached at, and a warning if the
    configured one points elsewhere on this machine."""
    if "IDENTITY_ISSUER" in os.environ:
        return settings, issuer_mismatch(settings.issuer, args.host, args.port)
    issuer = serving_issuer(args.host, args.port)
    try:
        settings = dataclasses.replace(settings, issuer=issuer)
    except SettingsError:
        raise CommandError(
            f"--host {args.host} is not a loopback address: set IDENTITY_ISSUER to the https "
            "URL clients reach identity at"
        ) from None
    return settings, None


def serve(args: argparse.Namespace, settings: Settings) -> None:
    import logging.config
    import shutil
    import signal

    import uvicorn

    from identity import logs, metrics

    settings, mismatch = _issuer_for(args, settings)
    _check_port_free(args.host, args.port)
    log_config = logs.logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(log_config)  # this process's own lines too, not just the workers'
    if mismatch is not None:
        log.warning(mismatch)
    # Done once here, before workers fork, so they never race for it.
    if settings.migrate_on_start:
        upgrade_schema(settings.database_url)
    keys = key_store(settings)
    keys.ensure()
    keys.ring()  # a key folder that cannot be loaded stops here, in one line
    # Workers count into files in this folder, so /metrics adds up all of them.
    created = metrics.prepare_multiprocess_dir()
    if created is not None:
        # A single uvicorn process re-raises the SIGTERM it handled; exiting through Python
        # instead lets the folder be removed below.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # The workers build their settings from the environment: they must see the same issuer.
    os.environ["IDENTITY_ISSUER"] = settings.issuer
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
            # The asyncio loop, not uvloop: measured on one saturated core (bench/README.md,
            # "Event loop"), uvloop served some connections late, a p99 of 630 ms against 41 ms
            # for asyncio at about the same throughput. httptools still parses HTTP.
            loop="asyncio",
            # httptools' protocol, which also answers JWKS and discovery itself
            # (identity.http_protocol: no ASGI task for the documents resource servers poll).
            http="identity.http_protocol:IdentityHttpProtocol",
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def migrate(args: argparse.Namespace, settings: Settings) -> None:
    upgrade_schema(settings.database_url)
    emit(args, {"migrated": True}, "database is at the latest schema")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` and ``migrate``."""
    run = commands.add_parser(
        "serve",
        parents=[common],
        help="run the server",
        description="Migrate the database, create the signing keys if there are none, and "
        "serve with uvicorn. Without IDENTITY_ISSUER the issuer is http://localhost:PORT.",
    )
    run.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0: all)"
    )
    run.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")
    run.add_argument("--workers", type=_count, default=1, metavar="N", help="worker processes (1)")
    run.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    run.set_defaults(handler=serve)
    commands.add_parser(
        "migrate",
        parents=[common],
        help="bring the database to the latest schema (alembic upgrade head)",
    ).set_defaults(handler=migrate)
