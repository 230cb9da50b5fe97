"""``identity clients``: register, list, show, update and delete OAuth clients, and rotate
their secrets."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.orm import Session

from identity import audit, repositories
from identity.cli.common import CommandError, emit, open_database
from identity.config import Settings
from identity.models import Client
from identity.protocol import clients


def clients_create(args: argparse.Namespace, settings: Settings) -> None:
    database = open_database(settings)
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
            require_mfa=args.require_mfa,
            role_prefixes=args.role_prefix or [],
            context=audit.RequestContext.command_line(),
        )
        data = {**clients.describe(registered.client), "client_secret": registered.secret}
    secret_line = (
        f"client_secret: {registered.secret}\n(shown once: store it now)"
        if registered.secret
        else "public client: no secret"
    )
    emit(args, data, f"client_id: {data['client_id']}\n{secret_line}")


def clients_list(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        rows = [clients.describe(c) for c in repositories.list_clients(session)]
    text = "\n".join(f"{r['client_id']}  {r['name']}  {' '.join(r['grant_types'])}" for r in rows)  # type: ignore[arg-type]
    emit(args, rows, text or "no clients")


def clients_show(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        data = clients.describe(_client(session, args.client_id))
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def _update_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line changes (a repeated option's list replaces the
    registered one); empty when it changes none."""
    lists = {
        "redirect_uris": args.redirect_uri,
        "audience": [] if args.no_audience else args.audience,
        "grant_types": args.grant_type,
        "role_prefixes": [] if args.no_role_prefixes else args.role_prefix,
        "post_logout_redirect_uris": args.post_logout_redirect_uri,
    }
    single = {
        "name": args.name,
        "scope": args.scope,
        "first_party": args.first_party,
        "require_mfa": args.require_mfa,
    }
    return {k: v for k, v in {**lists, **single}.items() if v is not None}


def clients_update(args: argparse.Namespace, settings: Settings) -> None:
    """Change the settings given on the command line; print the client as it is now."""
    changes = _update_changes(args)
    if not changes:
        raise CommandError(
            "nothing to change: give a setting, e.g. --name, --redirect-uri, --scope, "
            "--role-prefix or --require-mfa (see `identity clients update --help`)"
        )
    with open_database(settings).transaction() as session:
        client = clients.update_client(
            session, args.client_id, **changes, context=audit.RequestContext.command_line()
        )
        data = clients.describe(client)
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def clients_rotate_secret(args: argparse.Namespace, settings: Settings) -> None:
    """A new secret, printed once; the old one works on for the grace period."""
    grace = clients.parse_grace(args.grace)
    with open_database(settings).transaction() as session:
        secret = clients.rotate_client_secret(
            session, args.client_id, grace=grace, context=audit.RequestContext.command_line()
        )
        expires_at = clients.describe(_client(session, args.client_id)).get(
            "previous_secret_expires_at"
        )
    data = {
        "client_id": args.client_id,
        "client_secret": secret,
        "previous_secret_expires_at": expires_at,
    }
    old = f"the old secret works until {expires_at}" if expires_at else "the old secret is dead"
    emit(args, data, f"client_secret: {secret}\n(shown once: store it now)\n{old}")


def _client(session: Session, client_id: str) -> Client:
    client = repositories.get_client(session, client_id)
    if client is None:
        raise CommandError(f"no client {client_id!r}")
    return client


def clients_delete(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings).transaction() as session:
        clients.delete_client(session, args.client_id, audit.RequestContext.command_line())
    emit(args, {"deleted": args.client_id}, f"deleted {args.client_id}")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``clients create|list|show|update|delete|rotate-secret``."""
    client_commands = commands.add_parser(
        "clients", help="register, list, show, update and delete OAuth clients; rotate secrets"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    create = client_commands.add_parser(
        "create", parents=[common], help="register a client; prints its secret once"
    )
    create.add_argument("--name", required=True, help="shown on the consent page")
    create.add_argument(
        "--redirect-uri",
        action="append",
        metavar="URI",
        help="where authorization answers may go, exactly; repeat the option for several",
    )
    create.add_argument(
        "--grant-type",
        action="append",
        choices=clients.GRANT_TYPES,
        metavar="GRANT",
        help=f"a grant it may use; repeat for several ({', '.join(clients.GRANT_TYPES)}; "
        "default: authorization_code and refresh_token with a redirect URI, else "
        "client_credentials)",
    )
    create.add_argument("--scope", help="space-separated scopes the client may ask for")
    create.add_argument(
        "--audience",
        action="append",
        metavar="URI",
        help="an aud of its access tokens (the resource it calls); repeat for several",
    )
    create.add_argument("--public", action="store_true", help="no secret (native/SPA + PKCE)")
    create.add_argument(
        "--first-party", action="store_true", help="our own app: skips consent, may use password"
    )
    create.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        metavar="URI",
        help="where logout may send people back to; repeat the option for several",
    )
    create.add_argument(
        "--refresh-without-offline-access",
        action="store_true",
        help="confidential client: refresh tokens even without the offline_access scope",
    )
    create.add_argument(
        "--require-mfa",
        action="store_true",
        help="its users must sign in with a second factor (acr urn:identity:loa:2)",
    )
    create.add_argument(
        "--role-prefix",
        action="append",
        metavar="PREFIX",
        help="its tokens carry only the user's roles starting with PREFIX (e.g. app1:); "
        "repeat for several (default: every role)",
    )
    create.set_defaults(handler=clients_create)
    client_commands.add_parser(
        "list", parents=[common], help="every client: id, name, grant types"
    ).set_defaults(handler=clients_list)
    for name, handler, what in (
        ("show", clients_show, "one client's registration (never its secret)"),
        ("delete", clients_delete, "delete a client"),
    ):
        one = client_commands.add_parser(name, parents=[common], help=what)
        one.add_argument("client_id", help="the client's id")
        one.set_defaults(handler=handler)
    _add_update_command(client_commands, common)
    rotate = client_commands.add_parser(
        "rotate-secret",
        parents=[common],
        help="give a client a new secret (printed once); the old one works for --grace",
    )
    rotate.add_argument("client_id", help="the client's id")
    rotate.add_argument(
        "--grace",
        default="24h",
        metavar="DURATION",
        help="how long the old secret keeps working: 0 (stops at once), 30m, 24h, 7d; "
        f"at most {clients.MAX_SECRET_GRACE.days}d (default: 24h)",
    )
    rotate.set_defaults(handler=clients_rotate_secret)


def _add_update_command(client_commands: Any, common: argparse.ArgumentParser) -> None:
    update = client_commands.add_parser(
        "update",
        parents=[common],
        help="change a client's settings (the same rules as create); prints the client",
    )
    update.add_argument("client_id", help="the client's id")
    update.add_argument("--name", help="shown on the consent page")
    for option, what in (
        ("--redirect-uri", "where authorization answers may go"),
        ("--post-logout-redirect-uri", "where logout may send people back to"),
    ):
        update.add_argument(
            option,
            action="append",
            metavar="URI",
            help=f"{what}; repeat for several; replaces the registered list",
        )
    update.add_argument(
        "--grant-type",
        action="append",
        choices=clients.GRANT_TYPES,
        metavar="GRANT",
        help="a grant it may use; repeat for several; replaces the registered list",
    )
    update.add_argument("--scope", help="space-separated scopes; replaces the registered ones")
    audience = update.add_mutually_exclusive_group()
    audience.add_argument(
        "--audience",
        action="append",
        metavar="URI",
        help="an aud of its access tokens; repeat for several; replaces the registered list",
    )
    audience.add_argument(
        "--no-audience", action="store_true", help="no audience: its tokens name the client"
    )
    prefixes = update.add_mutually_exclusive_group()
    prefixes.add_argument(
        "--role-prefix",
        action="append",
        metavar="PREFIX",
        help="its tokens carry only the roles starting with PREFIX; repeat for several; "
        "replaces the registered prefixes",
    )
    prefixes.add_argument(
        "--no-role-prefixes",
        action="store_true",
        help="no prefixes: its tokens carry every role of the user",
    )
    _add_switch(update, "first_party", "our own app: skips consent, may use password", "not ours")
    _add_switch(
        update,
        "require_mfa",
        "its users must sign in with a second factor (acr urn:identity:loa:2)",
        "a password alone is enough again for users without a second factor",
    )
    update.set_defaults(handler=clients_update)


def _add_switch(parser: argparse.ArgumentParser, dest: str, on: str, off: str) -> None:
    """``--NAME`` / ``--no-NAME``, None when neither is given (unchanged)."""
    option = dest.replace("_", "-")
    switch = parser.add_mutually_exclusive_group()
    switch.add_argument(f"--{option}", dest=dest, action="store_const", const=True, help=on)
    switch.add_argument(f"--no-{option}", dest=dest, action="store_const", const=False, help=off)
    parser.set_defaults(**{dest: None})
