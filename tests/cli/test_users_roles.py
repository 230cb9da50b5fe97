"""identity users roles add|remove|list: by email or id, JSON and text, one-line errors, and
the audit rows of the changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from identity.db import Database
from identity.models import AuditEvent
from tests.conftest import run_main as _run
from tests.web_helpers import PASSWORD


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return dict(json.loads(out))


@pytest.fixture
def user_id(env: None, capsys: pytest.CaptureFixture[str]) -> str:
    created = _json(capsys, "users", "create", "--email", "ada@example.com", "--password", PASSWORD)
    return str(created["id"])


def test_roles_added_by_email_are_listed_by_id_sorted(
    user_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _json(capsys, "users", "roles", "list", "ada@example.com") == {"roles": []}
    for role in ("app1:editor", "admin"):
        added = _json(capsys, "users", "roles", "add", "Ada@Example.com", role)
        assert added["changed"] is True
    assert _json(capsys, "users", "roles", "list", user_id) == {"roles": ["admin", "app1:editor"]}


def test_adding_a_role_again_and_removing_one_never_given_change_nothing(
    user_id: str, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    _json(capsys, "users", "roles", "add", user_id, "admin")
    again = _json(capsys, "users", "roles", "add", user_id, "admin")
    assert again == {"roles": ["admin"], "changed": False}
    absent = _json(capsys, "users", "roles", "remove", user_id, "editor")
    assert absent == {"roles": ["admin"], "changed": False}
    removed = _json(capsys, "users", "roles", "remove", user_id, "admin")
    assert removed == {"roles": [], "changed": True}
    with database.transaction() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.type.like("user.role_%")).order_by(AuditEvent.id)
        ).all()
    assert [(e.type, e.actor, e.subject, e.detail, e.user_agent) for e in events] == [
        ("user.role_added", "admin", user_id, {"role": "admin"}, "identity-cli"),
        ("user.role_removed", "admin", user_id, {"role": "admin"}, "identity-cli"),
    ]


def test_the_text_output_says_what_happened(
    user_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "users", "roles", "add", "ada@example.com", "admin")
    assert code == 0 and out.strip() == "ada@example.com has the role admin"
    _, out, _ = _run(capsys, "users", "roles", "add", "ada@example.com", "admin")
    assert out.strip() == "ada@example.com has the role admin already"
    _, out, _ = _run(capsys, "users", "roles", "list", "ada@example.com")
    assert out.strip() == "admin"
    _, out, _ = _run(capsys, "users", "roles", "remove", "ada@example.com", "admin")
    assert out.strip() == "ada@example.com no longer has the role admin"
    _, out, _ = _run(capsys, "users", "roles", "list", "ada@example.com")
    assert out.strip() == "ada@example.com has no roles"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "ada@example.com", "not a role"], "letters, digits"),
        (["add", "ada@example.com", ":admin"], "letters, digits"),
        (["add", "nobody@example.com", "admin"], "no user"),
        (["list", "nobody@example.com"], "no user"),
        (["remove", "ada@example.com"], "required"),
    ],
    ids=["bad-name", "colon-first", "unknown-user", "unknown-user-list", "missing-role"],
)
def test_errors_are_one_line_and_change_nothing(
    user_id: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "users", "roles", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert _json(capsys, "users", "roles", "list", user_id) == {"roles": []}
