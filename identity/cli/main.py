"""The ``identity`` command: serve, migrate, clients, users, keys, audit, mail, providers,
webhooks. Thin: each command group's module calls the services."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from sqlalchemy.exc import DBAPIError

from identity.accounts.errors import AccountError
from identity.cli import audit, clients, keys, mail, providers, server, users, webhooks
from identity.cli.common import CommandError, OutputClosed, database_error, fail
from identity.config import Settings, SettingsError
from identity.keys import KeyStoreError
from identity.protocol.clients import ClientRegistrationError
from identity.upstream_presets import ProviderError
from identity.webhooks import WebhookError

_GROUPS = (server, clients, users, keys, audit, mail, providers, webhooks)

_DESCRIPTION = """\
identity: an OAuth 2.1 and OpenID Connect server, and the commands that run it."""

_EPILOG = """\
settings:
  Every setting is an IDENTITY_* environment variable, read once at start; the README's
  "Settings" table lists them all with their defaults. The ones met first:
    IDENTITY_DATABASE_URL  sqlite:///./identity.db: a file in the folder you run in
    IDENTITY_KEYS_DIR      keys: the signing keys, also in the folder you run in
    IDENTITY_ISSUER        unset: identity serve uses http://localhost:PORT

Run `identity COMMAND --help` for the commands of a group."""


class UsageError(Exception):
    """The command line itself is wrong (an unknown option, a port out of range)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (argparse prints the usage, then exits)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser = _Parser(
        prog="identity",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
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


def _flush_output() -> None:
    try:
        sys.stdout.flush()  # a pipe buffers the output: this is when a reader's exit shows
    except BrokenPipeError:
        raise OutputClosed from None


def _output_closed() -> int:
    # Python would flush stdout once more at exit and print a BrokenPipeError: point it
    # at /dev/null. Stopping early is the reader's choice (head -1), so the exit is clean.
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return 0  # a stand-in stdout (tests): nothing will flush to a pipe at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``identity`` command; the exit status (errors are one line on stderr)."""
    settings: Settings | None = None
    try:
        args = _parser().parse_args(_join_dashed_values(sys.argv[1:] if argv is None else argv))
        settings = Settings.from_env()
        # Commands other than serve keep stderr for warnings, so --json output stays clean.
        level = settings.log_level.upper() if args.command == "serve" else "WARNING"
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        args.handler(args, settings)
        _flush_output()
    except OutputClosed:
        return _output_closed()
    except (
        UsageError,
        CommandError,
        SettingsError,
        KeyStoreError,
        ClientRegistrationError,
        ProviderError,
        WebhookError,
        AccountError,
        LookupError,
    ) as error:
        return fail(error, 2)
    except DBAPIError as error:
        assert settings is not None  # only a command, after the settings, opens the database
        return fail(database_error(error, settings.database_url), 1)
    except OSError as error:
        # A folder or file the settings point at that cannot be used: strerror and its path.
        return fail(error, 1)
    except KeyboardInterrupt:
        print(file=sys.stderr)  # after the ^C, so the shell prompt starts on its own line
        return 130
    return 0
