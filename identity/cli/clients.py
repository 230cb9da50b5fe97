"""``identity clients``: register, list, show, update and delete OAuth clients."""

from __future__ import annotations

import argparse
from typing import Any

from identity import audit, repositories
from identity.cli.common import CommandError, emit, open_database
from identity.config import Settings
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
        client = repositories.get_client(session, args.client_id)
        if client is None:
            raise CommandError(f"no client {args.client_id!r}")
        data = clients.describe(client)
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def clients_update(args: argparse.Namespace, settings: Settings) -> None:
    """Change the settings given on the command line; print the client as it is now."""
    if args.require_mfa is None:
        raise CommandError("nothing to change: give --require-mfa or --no-require-mfa")
    with open_database(settings).transaction() as session:
        client = clients.update_client(
            session,
            args.client_id,
            require_mfa=args.require_mfa,
            context=audit.RequestContext.command_line(),
        )
        data = clients.describe(client)
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def clients_delete(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings).transaction() as session:
        clients.delete_client(session, args.client_id, audit.RequestContext.command_line())
    emit(args, {"deleted": args.client_id}, f"deleted {args.client_id}")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``clients create|list|show|update|delete``."""
    client_commands = commands.add_parser(
        "clients", help="register, list, show, update and delete OAuth clients"
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
    update = client_commands.add_parser(
        "update", parents=[common], help="change a client's settings; prints the client"
    )
    update.add_argument("client_id", help="the client's id")
    require_mfa = update.add_mutually_exclusive_group()
    require_mfa.add_argument(
        "--require-mfa",
        dest="require_mfa",
        action="store_const",
        const=True,
        help="its users must sign in with a second factor (acr urn:identity:loa:2)",
    )
    require_mfa.add_argument(
        "--no-require-mfa",
        dest="require_mfa",
        action="store_const",
        const=False,
        help="a password alone is enough again for users without a second factor",
    )
    update.set_defaults(handler=clients_update, require_mfa=None)
