"""The ``identity`` command: serve, migrate, clients, keys. Thin: it calls the services."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from identity import admin, audit, clients, repositories
from identity.accounts import AccountError, Accounts
from identity.config import Settings, SettingsError
from identity.db import Database, upgrade_schema
from identity.keys import KeyStore, KeyStoreError

Handler = Callable[[argparse.Namespace, Settings], Any]


class CommandError(Exception):
    """A one-line error for the user; the command exits with status 2."""


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _database(settings: Settings) -> Database:
    if settings.migrate_on_start:
        upgrade_schema(settings.database_url)
    return Database(settings.database_url, pool_size=1)


def _keys(settings: Settings) -> KeyStore:
    return KeyStore(
        settings.keys_dir,
        max_token_ttl=settings.max_token_ttl,
        reload_seconds=settings.keys_reload_seconds,
    )


# -- serve and migrate ----------------------------------------------------------------------


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
    _keys(settings).ensure()
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
    _emit(args, {"migrated": True}, "database is at the latest schema")


# -- clients --------------------------------------------------------------------------------


def clients_create(args: argparse.Namespace, settings: Settings) -> None:
    database = _database(settings)
    with database.transaction() as session:
        registered = clients.register_client(
            session,
            name=args.name,
            redirect_uris=args.redirect_uri or [],
            grant_types=args.grant_type or [],
            scope=args.scope or "",
            audience=args.audience or [],
            public=args.public,
            first_party=args.first_party,
            post_logout_redirect_uris=args.post_logout_redirect_uri or [],
            refresh_without_offline_access=args.refresh_without_offline_access,
            context=audit.RequestContext.command_line(),
        )
        data = {**clients.describe(registered.client), "client_secret": registered.secret}
    secret_line = (
        f"client_secret: {registered.secret}\n(shown once: store it now)"
        if registered.secret
        else "public client: no secret"
    )
    _emit(args, data, f"client_id: {data['client_id']}\n{secret_line}")


def clients_list(args: argparse.Namespace, settings: Settings) -> None:
    with _database(settings).transaction() as session:
        rows = [clients.describe(c) for c in repositories.list_clients(session)]
    text = "\n".join(f"{r['client_id']}  {r['name']}  {' '.join(r['grant_types'])}" for r in rows)  # type: ignore[arg-type]
    _emit(args, rows, text or "no clients")


def clients_show(args: argparse.Namespace, settings: Settings) -> None:
    with _database(settings).transaction() as session:
        client = repositories.get_client(session, args.client_id)
        if client is None:
            raise CommandError(f"no client {args.client_id!r}")
        data = clients.describe(client)
    _emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def clients_delete(args: argparse.Namespace, settings: Settings) -> None:
    with _database(settings).transaction() as session:
        clients.delete_client(session, args.client_id, audit.RequestContext.command_line())
    _emit(args, {"deleted": args.client_id}, f"deleted {args.client_id}")


# -- users ----------------------------------------------------------------------------------


def _accounts(settings: Settings) -> Accounts:
    return Accounts.from_settings(settings, _database(settings), None)


def users_create(args: argparse.Namespace, settings: Settings) -> None:
    accounts = _accounts(settings)
    password = args.password if args.password is not None else getpass.getpass("Password: ")
    with accounts.database.transaction() as session:
        user = admin.create_user(
            accounts,
            session,
            email=args.email,
            name=args.name or args.email.split("@")[0],
            password=password,
            verified=args.verified,
        )
        data = admin.describe(user)
    _emit(args, data, f"created {data['id']} <{data['email']}>")


def users_list(args: argparse.Namespace, settings: Settings) -> None:
    with _database(settings).transaction() as session:
        rows = admin.list_users(session)
    text = "\n".join(
        f"{r['id']}  {r['email']}  {'verified' if r['email_verified'] else 'unverified'}"
        f"{'' if r['is_active'] else '  disabled'}"
        for r in rows
    )
    _emit(args, rows, text or "no users")


def users_show(args: argparse.Namespace, settings: Settings) -> None:
    with _database(settings).transaction() as session:
        data = admin.describe(admin.find_user(session, args.user))
    _emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def _users_set_active(active: bool) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> None:
        accounts = _accounts(settings)
        with accounts.database.transaction() as session:
            user = admin.find_user(session, args.user)
            admin.set_active(accounts, session, user, active)
            data = admin.describe(user)
        _emit(args, data, f"{data['email']} is {'enabled' if active else 'disabled'}")

    return handler


def users_delete(args: argparse.Namespace, settings: Settings) -> None:
    with _database(settings).transaction() as session:
        user = admin.find_user(session, args.user)
        data = admin.describe(user)
        admin.delete_user(session, user)
    _emit(args, {"deleted": data["id"]}, f"deleted {data['email']}")


# -- keys -----------------------------------------------------------------------------------


def keys_list(args: argparse.Namespace, settings: Settings) -> None:
    store = _keys(settings)
    store.ensure()
    rows = [r.as_dict() for r in store.records()]
    text = "\n".join(f"{r['kid']}  {r['state']:<8} created {r['created_at']}" for r in rows)
    _emit(args, rows, text)


def keys_rotate(args: argparse.Namespace, settings: Settings) -> None:
    store = _keys(settings)
    store.ensure()
    promoted = store.rotate()
    with _database(settings).transaction() as session:
        audit.record(
            session,
            "key.rotated",
            context=audit.RequestContext.command_line(),
            actor="admin",
            detail={"kid": promoted.kid},
        )
    _emit(args, promoted.as_dict(), f"{promoted.kid} signs now; the old key is retired")


def keys_retire(args: argparse.Namespace, settings: Settings) -> None:
    store = _keys(settings)
    store.ensure()  # as list and rotate do: a fresh folder gets its keys, not a traceback
    removed = store.retire(args.kid, force=args.force)
    if removed:
        with _database(settings).transaction() as session:
            audit.record(
                session,
                "key.retired",
                context=audit.RequestContext.command_line(),
                actor="admin",
                detail={"kids": removed, "forced": args.force},
            )
    _emit(args, {"removed": removed}, "\n".join(removed) or "no retired key is due for removal")


# -- the parser -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(prog="identity", description=__doc__, parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", parents=[common], help="run the server (uvicorn)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    run.set_defaults(handler=serve)
    commands.add_parser("migrate", parents=[common], help="alembic upgrade head").set_defaults(
        handler=migrate
    )

    client_commands = commands.add_parser("clients", help="OAuth clients").add_subparsers(
        dest="action", required=True
    )
    create = client_commands.add_parser("create", parents=[common], help="register a client")
    create.add_argument("--name", required=True)
    create.add_argument("--redirect-uri", action="append", metavar="URI")
    create.add_argument("--grant-type", action="append", choices=clients.GRANT_TYPES)
    create.add_argument("--scope", help="space-separated scopes the client may ask for")
    create.add_argument("--audience", action="append", metavar="URI", help="aud of its tokens")
    create.add_argument("--public", action="store_true", help="no secret (native/SPA + PKCE)")
    create.add_argument("--first-party", action="store_true", help="our own app (skips consent)")
    create.add_argument("--post-logout-redirect-uri", action="append", metavar="URI")
    create.add_argument(
        "--refresh-without-offline-access",
        action="store_true",
        help="confidential client: refresh tokens even without the offline_access scope",
    )
    create.set_defaults(handler=clients_create)
    client_commands.add_parser("list", parents=[common]).set_defaults(handler=clients_list)
    for name, handler in (("show", clients_show), ("delete", clients_delete)):
        one = client_commands.add_parser(name, parents=[common])
        one.add_argument("client_id")
        one.set_defaults(handler=handler)

    user_commands = commands.add_parser("users", help="user accounts").add_subparsers(
        dest="action", required=True
    )
    new_user = user_commands.add_parser("create", parents=[common], help="create an account")
    new_user.add_argument("--email", required=True)
    new_user.add_argument("--name")
    new_user.add_argument("--password", help="read from a prompt when left out")
    new_user.add_argument("--verified", action="store_true", help="mark the email verified")
    new_user.set_defaults(handler=users_create)
    user_commands.add_parser("list", parents=[common]).set_defaults(handler=users_list)
    for name, user_handler in (
        ("show", users_show),
        ("disable", _users_set_active(False)),
        ("enable", _users_set_active(True)),
        ("delete", users_delete),
    ):
        one_user = user_commands.add_parser(name, parents=[common])
        one_user.add_argument("user", help="id or email")
        one_user.set_defaults(handler=user_handler)

    key_commands = commands.add_parser("keys", help="signing keys").add_subparsers(
        dest="action", required=True
    )
    key_commands.add_parser("list", parents=[common]).set_defaults(handler=keys_list)
    key_commands.add_parser(
        "rotate", parents=[common], help="the published next key starts signing"
    ).set_defaults(handler=keys_rotate)
    retire = key_commands.add_parser(
        "retire", parents=[common], help="delete retired keys whose tokens have all expired"
    )
    retire.add_argument("--kid", help="one retired key")
    retire.add_argument("--force", action="store_true", help="even if tokens may still be live")
    retire.set_defaults(handler=keys_retire)

    from identity.cli_audit import add_audit_commands  # it imports this module's helpers

    add_audit_commands(commands, common)
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
        clients.ClientRegistrationError,
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
