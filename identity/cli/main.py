"""The ``identity`` command: serve, migrate, clients, users, keys, audit. Thin: each command
group's module calls the services."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from identity.accounts.errors import AccountError
from identity.cli import audit, clients, keys, server, users
from identity.cli.common import CommandError
from identity.config import Settings, SettingsError
from identity.keys import KeyStoreError
from identity.protocol.clients import ClientRegistrationError

_GROUPS = (server, clients, users, keys, audit)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(prog="identity", description=__doc__, parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.add_commands(commands, common)
    return parser


# Options whose values may start with "-": a kid is an RFC 7638 thumbprint in base64url, and
# argparse reads "--kid -AbC" as two options (1 key in 64 starts with a dash).
_DASHED_VALUES = ("--kid",)


def _join_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--kid VALUE`` as ``--kid=VALUE``, which argparse takes whatever VALUE starts with."""
    joined: list[str] = []
    pending: str | None = None
    for word in argv:
        if pending is not None:
            joined.append(f"{pending}={word}")
            pending = None
        elif word in _DASHED_VALUES:
            pending = word
        else:
            joined.append(word)
    if pending is not None:
        joined.append(pending)  # argparse reports the missing value
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_join_dashed_values(sys.argv[1:] if argv is None else argv))
    try:
        settings = Settings.from_env()
        # Commands other than serve keep stderr for warnings, so --json output stays clean.
        level = settings.log_level.upper() if args.command == "serve" else "WARNING"
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        args.handler(args, settings)
    except (
        CommandError,
        SettingsError,
        KeyStoreError,
        ClientRegistrationError,
        AccountError,
        LookupError,
    ) as error:
        print(f"identity: error: {error}", file=sys.stderr)
        return 2
    except DBAPIError as error:
        print(
            f"identity: error: database: {type(error.orig).__name__}: {error.orig}", file=sys.stderr
        )
        return 1
    return 0
