"""Users' roles: the name rule, giving and taking a role (audited only when it changes), and
the roles an app sees through its role prefixes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from identity.accounts import roles
from identity.accounts.errors import InvalidInput
from identity.accounts.service import Accounts
from identity.db import Database
from identity.models import AuditEvent, User

from .conftest import CONTEXT, create_user


@pytest.mark.parametrize(
    "role", ["admin", "app1:editor", "A.b_c-d:9", "7", "x" * 100, "billing:read:all"]
)
def test_a_valid_role_name_is_kept(role: str) -> None:
    assert roles.validate_role(role) == role


def test_a_role_name_loses_surrounding_spaces() -> None:
    assert roles.validate_role("  app1:editor ") == "app1:editor"


@pytest.mark.parametrize(
    "role",
    ["", "   ", ":admin", "-admin", "_x", ".x", "x" * 101, "ad min", "admin/", "rôle", "a\nb"],
    ids=repr,
)
def test_a_bad_role_name_is_refused_with_a_sentence_on_the_role_field(role: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        roles.validate_role(role)
    assert list(refused.value.fields) == ["role"]
    assert "letters, digits" in refused.value.fields["role"]


def _events(database: Database, user: User) -> list[tuple[str, str | None, dict[str, str]]]:
    query = (
        select(AuditEvent)
        .where(AuditEvent.subject == str(user.id), AuditEvent.type.like("user.role_%"))
        .order_by(AuditEvent.id)
    )
    with database.transaction() as session:
        return [(e.type, e.actor, e.detail) for e in session.scalars(query)]


def test_adding_a_role_twice_changes_and_audits_once(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "ada@example.com")
    with database.transaction() as session:
        assert roles.add_role(session, user, "editor", actor="op-1", context=CONTEXT) is True
        assert roles.add_role(session, user, "editor", actor="op-1", context=CONTEXT) is False
        assert roles.add_role(session, user, "admin", actor="op-2", context=CONTEXT) is True
    with database.transaction() as session:
        assert roles.roles_of(session, user) == ["admin", "editor"]  # sorted
    assert _events(database, user) == [
        ("user.role_added", "op-1", {"role": "editor"}),
        ("user.role_added", "op-2", {"role": "admin"}),
    ]


def test_removing_a_role_the_user_lacks_changes_and_audits_nothing(
    accounts: Accounts, database: Database
) -> None:
    user = create_user(accounts, database, "ada@example.com")
    with database.transaction() as session:
        roles.add_role(session, user, "editor", actor="admin", context=CONTEXT)
        assert roles.remove_role(session, user, "viewer", actor="admin", context=CONTEXT) is False
        assert roles.remove_role(session, user, "editor", actor="admin", context=CONTEXT) is True
        assert roles.roles_of(session, user) == []
    assert _events(database, user) == [
        ("user.role_added", "admin", {"role": "editor"}),
        ("user.role_removed", "admin", {"role": "editor"}),
    ]


def test_a_bad_role_name_changes_nothing(accounts: Accounts, database: Database) -> None:
    user = create_user(accounts, database, "ada@example.com")
    with database.transaction() as session, pytest.raises(InvalidInput):
        roles.add_role(session, user, "not a role", actor="admin", context=CONTEXT)
    with database.transaction() as session:
        assert roles.roles_of(session, user) == []
    assert _events(database, user) == []


def test_roles_are_per_user(accounts: Accounts, database: Database) -> None:
    ada = create_user(accounts, database, "ada@example.com")
    bob = create_user(accounts, database, "bob@example.com")
    with database.transaction() as session:
        roles.add_role(session, ada, "admin", actor="admin", context=CONTEXT)
        assert roles.roles_of(session, bob) == []


ROLES = ["admin", "app1:editor", "app1:viewer", "app10:owner", "app2:editor"]


@pytest.mark.parametrize(
    ("prefixes", "seen"),
    [
        ([], ROLES),
        (["app1:"], ["app1:editor", "app1:viewer"]),
        (["app1:", "app2:"], ["app1:editor", "app1:viewer", "app2:editor"]),
        (["app1"], ["app1:editor", "app1:viewer", "app10:owner"]),  # a prefix, not a namespace
        (["nothing:"], []),
    ],
)
def test_an_app_sees_the_roles_with_its_prefixes_or_all_without(
    prefixes: list[str], seen: list[str]
) -> None:
    assert roles.roles_for_client(ROLES, prefixes) == seen
