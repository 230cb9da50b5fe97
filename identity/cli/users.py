"""``identity users``: create, list, show, disable, enable and delete accounts."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from typing import Any

from identity.accounts import operators
from identity.accounts.service import Accounts
from identity.cli.common import command_services, emit, open_database
from identity.config import Settings

Handler = Callable[[argparse.Namespace, Settings], Any]


def _accounts(settings: Settings) -> Accounts:
    return command_services(settings).accounts


def users_create(args: argparse.Namespace, settings: Settings) -> None:
    accounts = _accounts(settings)
    password = args.password if args.password is not None else getpass.getpass("Password: ")
    with accounts.database.transaction() as session:
        user = operators.create_user(
            accounts,
            session,
            email=args.email,
            name=args.name or args.email.split("@")[0],
            password=password,
            verified=args.verified,
        )
        data = operators.describe(user)
    emit(args, data, f"created {data['id']} <{data['email']}>")


def users_list(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings).transaction() as session:
        rows = operators.list_users(session)
    text = "\n".join(
        f"{r['id']}  {r['email']}  {'verified' if r['email_verified'] else 'unverified'}"
        f"{'' if r['is_active'] else '  disabled'}"
        for r in rows
    )
    emit(args, rows, text or "no users")


def users_show(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings).transaction() as session:
        data = operators.describe(operators.find_user(session, args.user))
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


def _users_set_active(active: bool) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> None:
        accounts = _accounts(settings)
        with accounts.database.transaction() as session:
            user = operators.find_user(session, args.user)
            operators.set_active(accounts, session, user, active)
            data = operators.describe(user)
        emit(args, data, f"{data['email']} is {'enabled' if active else 'disabled'}")

    return handler


def users_delete(args: argparse.Namespace, settings: Settings) -> None:
    accounts = _accounts(settings)
    with accounts.database.transaction() as session:
        user = operators.find_user(session, args.user)
        data = operators.describe(user)
        operators.delete_user(accounts, session, user)
    emit(args, {"deleted": data["id"]}, f"deleted {data['email']}")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``users create|list|show|disable|enable|delete``."""
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
