"""``identity webhooks``: the endpoints that receive signed events (add, list, show, remove,
rotate-secret, enable, disable), their deliveries, and redelivery."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from identity import audit, webhooks
from identity.audit import RequestContext
from identity.cli.common import CommandError, command_services, emit, open_database
from identity.config import Settings

_ACTOR = "admin"
_DEFAULT_OVERLAP = "24h"


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError("give a number from 1 to 1000")
    return int(text)


def _lines(data: dict[str, Any]) -> str:
    return "\n".join(
        f"{key}: {' '.join(value) if isinstance(value, list) else value}"
        for key, value in data.items()
    )


def webhooks_add(args: argparse.Namespace, settings: Settings) -> None:
    services = command_services(settings)
    with services.database.transaction() as session:
        added = webhooks.add_endpoint(
            session,
            services.accounts.secret_box,
            url=args.url,
            events=args.events,
            allow_private=settings.webhooks_allow_private,
            actor=_ACTOR,
            context=RequestContext.command_line(),
        )
        described = webhooks.describe_endpoint(added.endpoint)
    data = {key: described[key] for key in ("id", "url", "events")} | {"secret": added.secret}
    emit(
        args,
        data,
        f"{_lines(data)}\n(the secret is shown once: give it to the receiver now)",
    )


def webhooks_list(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        rows = [webhooks.describe_endpoint(e) for e in webhooks.list_endpoints(session)]
    text = "\n".join(
        f"{r['id']}  {'enabled' if r['enabled'] else 'disabled'}  {r['url']}  "
        f"{' '.join(r['events'])}"
        for r in rows
    )
    emit(args, rows, text or "no webhook endpoints")


def webhooks_show(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        data = webhooks.describe_endpoint(webhooks.get_endpoint(session, args.endpoint_id))
    emit(args, data, _lines(data))


def webhooks_remove(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings).transaction() as session:
        webhooks.remove_endpoint(
            session, args.endpoint_id, actor=_ACTOR, context=RequestContext.command_line()
        )
    emit(args, {"removed": args.endpoint_id}, f"removed {args.endpoint_id}")


def _overlap(text: str) -> timedelta:
    if text.strip() == "0":
        return timedelta(0)
    try:
        return audit.parse_duration(text)
    except audit.AuditQueryError as error:
        raise CommandError(f"--overlap: {error}, or 0 for none") from None


def webhooks_rotate_secret(args: argparse.Namespace, settings: Settings) -> None:
    overlap = _overlap(args.overlap)
    services = command_services(settings)
    with services.database.transaction() as session:
        secret = webhooks.rotate_secret(
            session,
            services.accounts.secret_box,
            args.endpoint_id,
            overlap=overlap,
            actor=_ACTOR,
            context=RequestContext.command_line(),
        )
        data = webhooks.describe_endpoint(webhooks.get_endpoint(session, args.endpoint_id))
    until = data["previous_secret_until"]
    old = f"the old secret signs too until {until}" if until else "the old secret no longer signs"
    emit(
        args,
        {"id": data["id"], "secret": secret, "previous_secret_until": until},
        f"secret: {secret}\n(shown once: give it to the receiver now; {old})",
    )


def _set_enabled(enabled: bool) -> Any:
    def handler(args: argparse.Namespace, settings: Settings) -> None:
        with open_database(settings).transaction() as session:
            endpoint = webhooks.set_enabled(
                session,
                args.endpoint_id,
                enabled,
                actor=_ACTOR,
                context=RequestContext.command_line(),
            )
            data = webhooks.describe_endpoint(endpoint)
        emit(args, data, f"{data['id']} {'enabled' if enabled else 'disabled'}")

    return handler


def webhooks_deliveries(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        rows = webhooks.recent_deliveries(session, args.endpoint_id, limit=args.limit)
    text = "\n".join(
        f"{r['id']}  {r['status']:<9} {r['event_type']}  {r['message_id']}  "
        f"attempts {r['attempts']}  {r['last_status_code'] or r['last_error'] or ''}"
        for r in rows
    )
    emit(args, rows, text or "no deliveries")


def webhooks_redeliver(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings).transaction() as session:
        webhooks.redeliver(
            session, args.delivery_id, actor=_ACTOR, context=RequestContext.command_line()
        )
    emit(
        args,
        {"redelivered": args.delivery_id},
        f"delivery {args.delivery_id} will be sent again by the running server",
    )


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``webhooks add|list|show|remove|rotate-secret|enable|disable|deliveries|redeliver``."""
    hook_commands = commands.add_parser(
        "webhooks", help="endpoints that receive signed events; their deliveries"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    add = hook_commands.add_parser(
        "add", parents=[common], help="register an endpoint; prints its signing secret once"
    )
    add.add_argument(
        "--url", required=True, help="where events are POSTed (https, on a public address)"
    )
    add.add_argument(
        "--events",
        required=True,
        action="append",
        metavar="PATTERNS",
        help="space-separated event types or families, e.g. 'user.created login.*' or '*'",
    )
    add.set_defaults(handler=webhooks_add)
    hook_commands.add_parser(
        "list", parents=[common], help="every endpoint: id, state, URL, events"
    ).set_defaults(handler=webhooks_list)
    for name, handler, what in (
        ("show", webhooks_show, "one endpoint (never its secret)"),
        ("remove", webhooks_remove, "delete an endpoint and its delivery log"),
        ("enable", _set_enabled(True), "send to the endpoint again, waiting deliveries first"),
        ("disable", _set_enabled(False), "stop sending to the endpoint"),
    ):
        one = hook_commands.add_parser(name, parents=[common], help=what)
        one.add_argument("endpoint_id", metavar="ID", help="the endpoint's id (wh_...)")
        one.set_defaults(handler=handler)
    rotate = hook_commands.add_parser(
        "rotate-secret", parents=[common], help="give an endpoint a new secret; prints it once"
    )
    rotate.add_argument("endpoint_id", metavar="ID", help="the endpoint's id (wh_...)")
    rotate.add_argument(
        "--overlap",
        default=_DEFAULT_OVERLAP,
        help="how long the old secret signs too (15m, 24h, 7d; 0 for none; default 24h)",
    )
    rotate.set_defaults(handler=webhooks_rotate_secret)
    deliveries = hook_commands.add_parser(
        "deliveries", parents=[common], help="an endpoint's recent deliveries, newest first"
    )
    deliveries.add_argument("endpoint_id", metavar="ID", help="the endpoint's id (wh_...)")
    deliveries.add_argument("--limit", type=_count, default=20, help="how many (default 20)")
    deliveries.set_defaults(handler=webhooks_deliveries)
    redeliver = hook_commands.add_parser(
        "redeliver", parents=[common], help="send a delivery's event again, now"
    )
    redeliver.add_argument("delivery_id", metavar="DELIVERY", type=int, help="a delivery's id")
    redeliver.set_defaults(handler=webhooks_redeliver)
