"""``identity keys``: list, rotate and retire the signing keys; make a key for the secrets
encrypted at rest."""

from __future__ import annotations

import argparse
from typing import Any

from identity import audit
from identity.cli.common import emit, open_database
from identity.config import Settings
from identity.key_admin import list_keys, rotate_signing_key
from identity.secret_box import new_key
from identity.services import key_store


def keys_list(args: argparse.Namespace, settings: Settings) -> None:
    rows = [r.as_dict() for r in list_keys(key_store(settings))]
    text = "\n".join(f"{r['kid']}  {r['state']:<8} created {r['created_at']}" for r in rows)
    emit(args, rows, text)


def keys_rotate(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings).transaction() as session:
        promoted = rotate_signing_key(
            key_store(settings),
            session,
            actor="admin",
            context=audit.RequestContext.command_line(),
        )
    emit(args, promoted.as_dict(), f"{promoted.kid} signs now; the old key is retired")


def keys_retire(args: argparse.Namespace, settings: Settings) -> None:
    store = key_store(settings)
    store.ensure()  # as list and rotate do: a fresh folder gets its keys, not a traceback
    removed = store.retire(args.kid, force=args.force)
    if removed:
        with open_database(settings).transaction() as session:
            audit.record(
                session,
                "key.retired",
                context=audit.RequestContext.command_line(),
                actor="admin",
                detail={"kids": removed, "forced": args.force},
            )
    emit(args, {"removed": removed}, "\n".join(removed) or "no retired key is due for removal")


_ROTATION_HELP = """\
Print a new key for IDENTITY_SECRET_KEY, and nothing else. The key encrypts the secrets
identity must read back (authenticator-app seeds).

To rotate, put the new key first and keep the old ones after it, comma-separated:
  IDENTITY_SECRET_KEY=NEW_KEY,OLD_KEY
The first key encrypts and every key decrypts; a seed is encrypted again under the first
key each time it is used. Keep an old key while any account may still hold a seed sealed
with it: a seed no configured key opens cannot be used.

Without IDENTITY_SECRET_KEY, the keys are read from secret.keys in IDENTITY_KEYS_DIR (one a
line, the first encrypts), made on first start."""


def keys_secret(args: argparse.Namespace, settings: Settings) -> None:
    """Print a new key for ``IDENTITY_SECRET_KEY``; it is stored nowhere."""
    key = new_key()
    emit(args, {"secret_key": key}, key)


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``keys list|rotate|retire|secret``."""
    key_commands = commands.add_parser(
        "keys",
        help="list, rotate and retire the signing keys (IDENTITY_KEYS_DIR); make a secret key",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    key_commands.add_parser(
        "list",
        parents=[common],
        help="kid, state and times of each key (creates the first keys in an empty folder)",
    ).set_defaults(handler=keys_list)
    key_commands.add_parser(
        "rotate", parents=[common], help="the published next key starts signing"
    ).set_defaults(handler=keys_rotate)
    retire = key_commands.add_parser(
        "retire", parents=[common], help="delete retired keys whose tokens have all expired"
    )
    retire.add_argument("--kid", help="only this retired key")
    retire.add_argument(
        "--force", action="store_true", help="with --kid: even if its tokens may still be live"
    )
    retire.set_defaults(handler=keys_retire)
    key_commands.add_parser(
        "secret",
        parents=[common],
        help="print a new key for IDENTITY_SECRET_KEY (secrets at rest); --help: rotation",
        description=_ROTATION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).set_defaults(handler=keys_secret)
