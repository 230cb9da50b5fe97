"""``identity users``: create, list, show, disable, enable and delete accounts, reset
their second factors, and give or take their roles."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from identity.accounts import operators, roles
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.cli.common import command_services, emit, open_database
from identity.config import Settings
from identity.models import User

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
    with open_database(settings, reading=True).transaction() as session:
        rows = operators.list_users(session)
    text = "\n".join(
        f"{r['id']}  {r['email']}  {'verified' if r['email_verified'] else 'unverified'}"
        f"{'' if r['is_active'] else '  disabled'}"
        for r in rows
    )
    emit(args, rows, text or "no users")


def users_show(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
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


def users_mfa_reset(args: argparse.Namespace, settings: Settings) -> None:
    """Remove every second factor and recovery code of an account that lost them; the
    owner is mailed and the reset audited (the rule the admin API and console use too)."""
    accounts = _accounts(settings)
    with accounts.database.transaction() as session:
        user = operators.find_user(session, args.user)
        reset = operators.reset_mfa(accounts, session, user)
        email = user.email
    text = (
        f"{email}: second factors and recovery codes removed; the password alone signs in now"
        if reset
        else f"{email} has no second factor: nothing to reset"
    )
    emit(args, {"email": email, "reset": reset}, text)


def users_roles_add(args: argparse.Namespace, settings: Settings) -> None:
    """Give the account a role; its next token carries it (the ``roles`` scope)."""
    with open_database(settings).transaction() as session:
        user = operators.find_user(session, args.user)
        added = roles.add_role(
            session, user, args.role, actor="admin", context=RequestContext.command_line()
        )
        role, data = roles.validate_role(args.role), _roles_data(session, user)
        email = user.email
    text = f"{email} has the role {role}" + ("" if added else " already")
    emit(args, {**data, "changed": added}, text)


def users_roles_remove(args: argparse.Namespace, settings: Settings) -> None:
    """Take a role from the account; its next token is without it."""
    with open_database(settings).transaction() as session:
        user = operators.find_user(session, args.user)
        removed = roles.remove_role(
            session, user, args.role, actor="admin", context=RequestContext.command_line()
        )
        role, data = roles.validate_role(args.role), _roles_data(session, user)
        email = user.email
    text = f"{email} no longer has the role {role}" if removed else f"{email} has no role {role}"
    emit(args, {**data, "changed": removed}, text)


def users_roles_list(args: argparse.Namespace, settings: Settings) -> None:
    with open_database(settings, reading=True).transaction() as session:
        user = operators.find_user(session, args.user)
        data, email = _roles_data(session, user), user.email
    emit(args, data, "\n".join(data["roles"]) or f"{email} has no roles")


def _roles_data(session: Session, user: User) -> dict[str, list[str]]:
    return {"roles": roles.roles_of(session, user)}


def _add_role_commands(user_commands: Any, common: argparse.ArgumentParser) -> None:
    role_commands = user_commands.add_parser(
        "roles", help="an account's roles (the roles claim of its tokens)"
    ).add_subparsers(dest="roles_action", required=True, metavar="ACTION")
    for name, handler, what in (
        ("add", users_roles_add, "give the account a role; its next token carries it"),
        ("remove", users_roles_remove, "take a role from the account"),
    ):
        change = role_commands.add_parser(name, parents=[common], help=what)
        change.add_argument("user", metavar="ID|EMAIL", help="the account's id or email")
        change.add_argument(
            "role", help="letters, digits and : . _ - (e.g. admin or app1:editor), 1-100 long"
        )
        change.set_defaults(handler=handler)
    listed = role_commands.add_parser("list", parents=[common], help="the account's roles")
    listed.add_argument("user", metavar="ID|EMAIL", help="the account's id or email")
    listed.set_defaults(handler=users_roles_list)


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``users create|list|show|disable|enable|delete``, ``users mfa reset`` and
    ``users roles add|remove|list``."""
    user_commands = commands.add_parser(
        "users",
        help="create, list, show, disable, enable and delete user accounts; reset MFA; roles",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    new_user = user_commands.add_parser("create", parents=[common], help="create an account")
    new_user.add_argument("--email", required=True, help="the account's email address")
    new_user.add_argument("--name", help="the name shown to the user (default: from the email)")
    new_user.add_argument("--password", help="read from a prompt when left out")
    new_user.add_argument("--verified", action="store_true", help="mark the email verified")
    new_user.set_defaults(handler=users_create)
    user_commands.add_parser(
        "list", parents=[common], help="every account: id, email, verified, disabled"
    ).set_defaults(handler=users_list)
    for name, user_handler, what in (
        ("show", users_show, "one account"),
        ("disable", _users_set_active(False), "refuse the account; ends its sessions and tokens"),
        ("enable", _users_set_active(True), "let a disabled account sign in again"),
        ("delete", users_delete, "delete the account and everything attached to it"),
    ):
        one_user = user_commands.add_parser(name, parents=[common], help=what)
        one_user.add_argument("user", metavar="ID|EMAIL", help="the account's id or email")
        one_user.set_defaults(handler=user_handler)
    mfa_commands = user_commands.add_parser(
        "mfa", help="an account's second factors"
    ).add_subparsers(dest="mfa_action", required=True, metavar="ACTION")
    reset = mfa_commands.add_parser(
        "reset",
        parents=[common],
        help="remove every second factor and recovery code of the account (mails the owner)",
    )
    reset.add_argument("user", metavar="ID|EMAIL", help="the account's id or email")
    reset.set_defaults(handler=users_mfa_reset)
    _add_role_commands(user_commands, common)
