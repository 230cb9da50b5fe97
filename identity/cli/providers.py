"""``identity providers``: the upstream identity providers people may sign in with (add,
list, show, update, remove, disable, enable)."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from typing import Any

from identity import audit, repositories
from identity.cli.common import CommandError, command_services, emit, open_database
from identity.config import Settings
from identity.upstream_presets import PRESETS
from identity.upstream_providers import UpstreamProviders, describe

Handler = Callable[[argparse.Namespace, Settings], Any]


def _lines(data: dict[str, object]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in data.items())


def _client_secret(args: argparse.Namespace) -> str:
    # Asked for when not given, so it need not sit in the shell's history.
    if args.client_secret is not None:
        return str(args.client_secret)
    return getpass.getpass("Client secret: ")


def providers_add(args: argparse.Namespace, settings: Settings) -> None:
    services = command_services(settings)
    secret = _client_secret(args)
    with services.database.transaction() as session:
        provider = services.providers.add(
            session,
            name=args.name,
            client_id=args.client_id,
            client_secret=secret,
            preset=args.preset,
            issuer=args.issuer,
            scope=args.scope,
            label=args.label,
            trust_mfa=args.trust_mfa,
            context=audit.RequestContext.command_line(),
        )
        data = describe(provider, settings.issuer)
    emit(
        args,
        data,
        f"added {data['name']} ({data['label']})\n"
        f"redirect_uri: {data['redirect_uri']}\n(register this callback at the provider)",
    )


def providers_list(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        rows = [describe(p, settings.issuer) for p in repositories.list_upstream_providers(session)]
    text = "\n".join(
        f"{r['name']}  {r['kind']}  {'enabled' if r['enabled'] else 'disabled'}  {r['issuer']}"
        for r in rows
    )
    emit(args, rows, text or "no providers")


def providers_show(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        provider = repositories.get_upstream_provider(session, args.name)
        if provider is None:
            raise CommandError(f"no provider {args.name!r}")
        data = describe(provider, settings.issuer)
    emit(args, data, _lines(data))


def providers_update(args: argparse.Namespace, settings: Settings) -> None:
    """Change what the command line gives; print the provider as it is now."""
    given = (args.issuer, args.client_id, args.client_secret, args.scope, args.label)
    if all(value is None for value in given) and args.trust_mfa is None:
        raise CommandError(
            "nothing to change: give --issuer, --client-id, --client-secret, --scope, "
            "--label, --trust-mfa or --no-trust-mfa"
        )
    services = command_services(settings)
    with services.database.transaction() as session:
        provider = services.providers.update(
            session,
            args.name,
            issuer=args.issuer,
            client_id=args.client_id,
            client_secret=args.client_secret,
            scope=args.scope,
            label=args.label,
            trust_mfa=args.trust_mfa,
            context=audit.RequestContext.command_line(),
        )
        data = describe(provider, settings.issuer)
    emit(args, data, _lines(data))


def providers_remove(args: argparse.Namespace, settings: Settings) -> None:
    services = command_services(settings)
    with services.database.transaction() as session:
        links = services.providers.remove(session, args.name, audit.RequestContext.command_line())
    emit(
        args,
        {"removed": args.name, "links_removed": links},
        f"removed {args.name} ({links} linked account{'' if links == 1 else 's'} unlinked)",
    )


def _providers_set_enabled(enabled: bool) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> None:
        services = command_services(settings)
        providers: UpstreamProviders = services.providers
        change = providers.enable if enabled else providers.disable
        with services.database.transaction() as session:
            provider = change(session, args.name, audit.RequestContext.command_line())
            data = describe(provider, settings.issuer)
        emit(args, data, f"{args.name} is {'enabled' if enabled else 'disabled'}")

    return handler


def _add_settings_options(parser: argparse.ArgumentParser, *, adding: bool) -> None:
    """The options ``add`` and ``update`` share (``add`` needs a client id)."""
    parser.add_argument(
        "--issuer",
        help="the provider's issuer URL, https (http only with IDENTITY_INSECURE_HTTP=1), "
        "no trailing slash",
    )
    parser.add_argument(
        "--client-id", required=adding, help="the client id identity has at the provider"
    )
    parser.add_argument(
        "--client-secret",
        help="the client secret identity has at the provider (stored encrypted; asked for "
        "when left out of add)",
    )
    parser.add_argument(
        "--scope", help='space-separated scopes to ask for ("openid email profile")'
    )
    parser.add_argument("--label", help='the sign-in button\'s text ("Continue with NAME")')


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``providers add|list|show|update|remove|disable|enable``."""
    provider_commands = commands.add_parser(
        "providers", help="the upstream identity providers people may sign in with"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    add = provider_commands.add_parser(
        "add",
        parents=[common],
        help="add an OpenID Connect provider, or a preset; prints the redirect URI to "
        "register there",
    )
    add.add_argument(
        "--name",
        required=True,
        help="1 to 40 lower-case letters, digits and dashes; part of the callback URL",
    )
    add.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help=f"fill in kind, issuer, scope and label ({', '.join(PRESETS)})",
    )
    _add_settings_options(add, adding=True)
    add.add_argument(
        "--trust-mfa",
        action="store_true",
        help="the provider's own second factor counts as one here",
    )
    add.set_defaults(handler=providers_add)
    provider_commands.add_parser(
        "list", parents=[common], help="every provider: name, kind, state, issuer"
    ).set_defaults(handler=providers_list)
    for name, handler, what in (
        ("show", providers_show, "one provider (never its client secret)"),
        ("remove", providers_remove, "delete a provider and every account's link to it"),
        ("disable", _providers_set_enabled(False), "stop offering a provider; links stay"),
        ("enable", _providers_set_enabled(True), "offer a disabled provider again"),
    ):
        one = provider_commands.add_parser(name, parents=[common], help=what)
        one.add_argument("name", help="the provider's name")
        one.set_defaults(handler=handler)
    update = provider_commands.add_parser(
        "update", parents=[common], help="change a provider's settings; prints the provider"
    )
    update.add_argument("name", help="the provider's name")
    _add_settings_options(update, adding=False)
    trust_mfa = update.add_mutually_exclusive_group()
    trust_mfa.add_argument(
        "--trust-mfa",
        dest="trust_mfa",
        action="store_const",
        const=True,
        help="the provider's own second factor counts as one here",
    )
    trust_mfa.add_argument(
        "--no-trust-mfa",
        dest="trust_mfa",
        action="store_const",
        const=False,
        help="a sign-in there counts as one factor, whatever the provider says",
    )
    update.set_defaults(handler=providers_update, trust_mfa=None)
