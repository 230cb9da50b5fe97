"""The admin API's users (``/api/v1/admin/users...``): search with cursor pages, detail,
create (or invite), rename, disable/enable, delete, reset mail, sign-out everywhere, MFA
reset and roles; every call audited with its operator (who may call it:
``test_admin_access``)."""

from __future__ import annotations

import uuid
from typing import Any

import jwt as pyjwt
import pyotp
import pytest
from starlette.testclient import TestClient

from identity.accounts import factors
from identity.db import Database
from identity.models import User
from tests.api.conftest import (
    ADMIN,
    CLI,
    MakeClient,
    audit_rows,
    console_session,
    fields,
    get_user,
    make_user,
    password_token,
    problem,
)
from tests.conftest import MailSink
from tests.web_helpers import PASSWORD, link_from

USERS = f"{ADMIN}/users"


@pytest.fixture
def app_id(make_client: MakeClient) -> str:
    """A first-party app with the password grant and refresh tokens (an app session)."""
    client_id, _ = make_client(
        name="Notes",
        public=True,
        first_party=True,
        grant_types=["password", "refresh_token"],
        scope="openid account offline_access",
    )
    return client_id


def _user_url(user_id: uuid.UUID | str, tail: str = "") -> str:
    return f"{USERS}/{user_id}{tail}"


def _emails(http: TestClient, auth: dict[str, str], query: str) -> tuple[list[str], Any]:
    response = http.get(f"{USERS}?{query}", headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    return [user["email"] for user in body["users"]], body["next_cursor"]


# -- search --------------------------------------------------------------------------------------


def test_the_cursor_walks_every_user_once_in_email_order(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    emails = [f"user{n}@example.com" for n in (4, 1, 7, 3, 6, 2, 5)]
    for email in emails:
        make_user(admin_app, database, email)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page, cursor = _emails(admin_app, admin_auth, query)
        seen, pages = seen + page, pages + 1
        if cursor is None:
            break
    assert seen == sorted(emails) and pages == 3
    body = admin_app.get(f"{USERS}?limit=1", headers=admin_auth).json()
    assert set(body["users"][0]) == {
        "id",
        "email",
        "name",
        "email_verified",
        "is_active",
        "created_at",
    }
    listed = audit_rows(database, "admin.users_listed")
    assert len(listed) == pages + 1
    assert {row.actor for row in listed} == {operator[0]}
    assert listed[-1].detail == {"email": None, "status": None, "cursor": False}


def test_the_email_prefix_is_literal_and_pages_too(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str]
) -> None:
    for email in ("a_1@example.com", "a_2@example.com", "a_3@example.com", "ax1@example.com"):
        make_user(admin_app, database, email)
    make_user(admin_app, database, "a%b@example.com")
    first, cursor = _emails(admin_app, admin_auth, "email=A_&limit=2")
    rest, end = _emails(admin_app, admin_auth, f"email=A_&limit=2&cursor={cursor}")
    assert first + rest == ["a_1@example.com", "a_2@example.com", "a_3@example.com"]
    assert end is None
    assert _emails(admin_app, admin_auth, "email=a%25")[0] == ["a%b@example.com"]
    assert _emails(admin_app, admin_auth, "email=a%25b%40")[0] == ["a%b@example.com"]
    assert _emails(admin_app, admin_auth, "email=%25")[0] == []
    [row] = [r for r in audit_rows(database, "admin.users_listed") if r.detail["email"] == "%"]
    assert row.detail == {"email": "%", "status": None, "cursor": False}


def test_status_filters(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str]
) -> None:
    make_user(admin_app, database, "on@example.com")
    make_user(admin_app, database, "pending@example.com", verified=False)
    off = make_user(admin_app, database, "off@example.com")
    assert admin_app.post(_user_url(off, "/disable"), headers=admin_auth).status_code == 200
    for status, expected in (
        ("active", ["on@example.com"]),
        ("unverified", ["pending@example.com"]),
        ("disabled", ["off@example.com"]),
    ):
        assert _emails(admin_app, admin_auth, f"status={status}")[0] == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("status=gone", "status"),
        ("cursor=not-ours", "cursor"),
        ("email=a%00", "email"),
        ("other=1", "other"),
    ],
)
def test_bad_queries_are_400_problems_naming_the_field(
    admin_app: TestClient, admin_auth: dict[str, str], query: str, field: str
) -> None:
    body = problem(admin_app.get(f"{USERS}?{query}", headers=admin_auth), 400)
    assert fields(body) == {field}


# -- one user ------------------------------------------------------------------------------------


def test_detail_shows_sessions_apps_factors_and_roles_and_is_audited(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    operator: Any,
    app_id: str,
) -> None:
    ada = make_user(admin_app, database, "ada@example.com", role="app1:editor")
    password_token(admin_app, app_id, "ada@example.com", "openid account offline_access")
    response = admin_app.get(_user_url(ada), headers=admin_auth)
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["email"] == "ada@example.com" and detail["roles"] == ["app1:editor"]
    assert detail["factors"] == {
        "totp": False,
        "passkeys": {"count": 0, "names": []},
        "recovery_codes_left": 0,
    }
    [app] = detail["app_sessions"]
    assert app["client_id"] == app_id and app["client_name"] == "Notes"
    assert detail["sessions"] == [] and detail["providers"] == []
    [viewed] = audit_rows(database, "admin.user_viewed")
    assert (viewed.actor, viewed.subject) == (operator[0], str(ada))


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_an_unknown_or_malformed_user_id_is_a_404_problem(
    admin_app: TestClient, admin_auth: dict[str, str], method: str
) -> None:
    for user_id in (uuid.uuid4(), "not-a-uuid", "%00"):
        kwargs: dict[str, Any] = {"json": {"name": "X"}} if method == "PATCH" else {}
        response = admin_app.request(method, _user_url(user_id), headers=admin_auth, **kwargs)
        problem(response, 404)
    for tail in ("/disable", "/enable", "/send-reset", "/end-sessions", "/reset-mfa"):
        problem(admin_app.post(_user_url(uuid.uuid4(), tail), headers=admin_auth), 404)
    problem(admin_app.put(_user_url(uuid.uuid4(), "/roles/admin"), headers=admin_auth), 404)


# -- create --------------------------------------------------------------------------------------


def test_create_with_a_password_makes_a_verified_account_that_signs_in(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    operator: Any,
    app_id: str,
) -> None:
    response = admin_app.post(
        USERS,
        json={"email": "New@Example.com", "name": "New", "password": PASSWORD},
        headers=admin_auth,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["email"], created["email_verified"], created["is_active"]) == (
        "new@example.com",
        True,
        True,
    )
    password_token(admin_app, app_id, "new@example.com")
    [row] = audit_rows(database, "user.created")
    assert (row.actor, row.subject) == (operator[0], created["id"])


def test_an_invitation_mails_a_link_that_sets_the_password_and_verifies(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    mail_sink: MailSink,
    app_id: str,
) -> None:
    response = admin_app.post(
        USERS,
        json={"email": "guest@example.com", "name": "Guest", "invite": True},
        headers=admin_auth,
    )
    assert response.status_code == 201, response.text
    assert response.json()["email_verified"] is False
    link = link_from(mail_sink, "guest@example.com", "/reset-password")
    [mail] = mail_sink.wait_for("guest@example.com")
    assert mail["Subject"] == "You are invited to identity"
    page = admin_app.get(link.removeprefix("http://127.0.0.1:8000"))
    assert page.status_code == 200  # the reset page takes the invitation's link
    token = link.split("token=")[1]
    reset = admin_app.post("/api/v1/password/reset", json={"token": token, "password": PASSWORD})
    assert reset.status_code == 200, reset.text
    user = get_user(database, uuid.UUID(response.json()["id"]))
    assert user is not None and user.email_verified
    password_token(admin_app, app_id, "guest@example.com")


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ({"email": "x@example.com", "name": "X"}, {"password"}),
        (
            {"email": "x@example.com", "name": "X", "password": PASSWORD, "invite": True},
            {"password"},
        ),
        ({"email": "x@example.com", "name": "X", "password": "short"}, {"password"}),
        ({"email": "taken@example.com", "name": "X", "invite": True}, {"email"}),
        ({"email": "nope", "name": "", "invite": True}, {"email", "name"}),
        ({"email": "x@example.com", "name": "X", "invite": "yes"}, {"invite"}),
        (
            {"email": "x@example.com", "name": "X", "invite": True, "email_verified": True},
            {"email_verified"},
        ),
        ({"email": "x@example.com", "name": "X", "password": None}, {"password"}),
    ],
)
def test_create_refuses_bad_input_with_field_errors(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    body: dict[str, Any],
    refused: set[str],
) -> None:
    make_user(admin_app, database, "taken@example.com")
    assert fields(problem(admin_app.post(USERS, json=body, headers=admin_auth), 400)) == refused
    assert len(audit_rows(database, "user.created")) == 1  # the taken address's own


# -- change --------------------------------------------------------------------------------------


def test_rename_uses_the_profile_rule_and_is_audited(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    ada = make_user(admin_app, database, "ada@example.com")
    renamed = admin_app.patch(_user_url(ada), json={"name": " Ada L. "}, headers=admin_auth)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Ada L."
    bad = admin_app.patch(_user_url(ada), json={"name": "a\u0007b"}, headers=admin_auth)
    assert fields(problem(bad, 400)) == {"name"}
    assert fields(problem(admin_app.patch(_user_url(ada), json={}, headers=admin_auth), 400)) == {
        "name"
    }
    [row] = audit_rows(database, "profile.updated")
    assert (row.actor, row.subject) == (operator[0], str(ada))


def test_a_disabled_users_tokens_die_at_once_and_refresh_fails(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    operator: Any,
    app_id: str,
) -> None:
    ada = make_user(admin_app, database, "ada@example.com")
    tokens = password_token(admin_app, app_id, "ada@example.com", "openid account offline_access")
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert admin_app.get("/api/v1/me", headers=bearer).status_code == 200
    disabled = admin_app.post(_user_url(ada, "/disable"), headers=admin_auth)
    assert disabled.status_code == 200 and disabled.json()["is_active"] is False
    problem(admin_app.get("/api/v1/me", headers=bearer), 401)
    denylist = admin_app.app.state.oauth.denylist  # type: ignore[attr-defined]
    with database.transaction() as session:
        jti = pyjwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
        assert denylist.is_revoked(jti, session)
    refreshed = admin_app.post(
        "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": app_id,
        },
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    [row] = audit_rows(database, "user.disabled")
    assert (row.actor, row.subject) == (operator[0], str(ada))
    enabled = admin_app.post(_user_url(ada, "/enable"), headers=admin_auth)
    assert enabled.status_code == 200 and enabled.json()["is_active"] is True
    password_token(admin_app, app_id, "ada@example.com")
    assert audit_rows(database, "user.enabled")[0].actor == operator[0]


def test_delete_removes_the_account(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    ada = make_user(admin_app, database, "ada@example.com")
    deleted = admin_app.delete(_user_url(ada), headers=admin_auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert get_user(database, ada) is None
    problem(admin_app.delete(_user_url(ada), headers=admin_auth), 404)
    [row] = audit_rows(database, "user.deleted")
    assert (row.actor, row.subject) == (operator[0], str(ada))


def test_send_reset_mails_the_forgotten_password_link(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    mail_sink: MailSink,
    operator: Any,
) -> None:
    ada = make_user(admin_app, database, "ada@example.com")
    sent = admin_app.post(_user_url(ada, "/send-reset"), headers=admin_auth)
    assert sent.status_code == 202 and sent.content == b""
    assert link_from(mail_sink, "ada@example.com", "/reset-password")
    [row] = audit_rows(database, "password.reset_sent")
    assert (row.actor, row.subject) == (operator[0], str(ada))
    admin_app.post(_user_url(ada, "/disable"), headers=admin_auth)
    problem(admin_app.post(_user_url(ada, "/send-reset"), headers=admin_auth), 409)


def test_end_sessions_signs_the_user_out_everywhere(
    admin_app: TestClient,
    database: Database,
    admin_auth: dict[str, str],
    operator: Any,
    app_id: str,
) -> None:
    ada = make_user(admin_app, database, "ada@example.com")
    tokens = password_token(admin_app, app_id, "ada@example.com", "openid account offline_access")
    browser = TestClient(admin_app.app, base_url=str(admin_app.base_url))
    console_session(browser, database, ada, ["pwd"])
    assert browser.get("/account").status_code == 200
    ended = admin_app.post(_user_url(ada, "/end-sessions"), headers=admin_auth)
    assert ended.status_code == 204
    problem(
        admin_app.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}),
        401,
    )
    signed_out = browser.get("/account", follow_redirects=False)
    assert signed_out.status_code in (302, 303)
    assert signed_out.headers["location"].startswith("/login")
    detail = admin_app.get(_user_url(ada), headers=admin_auth).json()
    assert detail["sessions"] == [] and detail["app_sessions"] == []
    [row] = audit_rows(database, "session.revoked_all")
    assert (row.actor, row.subject) == (operator[0], str(ada))


def test_reset_mfa_removes_the_factors_once(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    ada = make_user(admin_app, database, "ada@example.com")
    accounts = admin_app.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        setup = factors.begin_totp(accounts, session, session.get_one(User, ada))
    with database.transaction() as session:
        factors.confirm_totp(
            accounts,
            session,
            session.get_one(User, ada),
            pyotp.TOTP(setup.secret).now(),
            CLI,
            authenticated_at=accounts.now(),
        )
    assert admin_app.get(_user_url(ada), headers=admin_auth).json()["factors"]["totp"] is True
    first = admin_app.post(_user_url(ada, "/reset-mfa"), headers=admin_auth)
    assert first.status_code == 200 and first.json() == {"reset": True}
    factors_now = admin_app.get(_user_url(ada), headers=admin_auth).json()["factors"]
    assert factors_now["totp"] is False and factors_now["recovery_codes_left"] == 0
    again = admin_app.post(_user_url(ada, "/reset-mfa"), headers=admin_auth)
    assert again.json() == {"reset": False}
    [row] = audit_rows(database, "mfa.reset")
    assert (row.actor, row.subject) == (operator[0], str(ada))


def test_roles_put_is_idempotent_and_delete_takes_it(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str], operator: Any
) -> None:
    ada = make_user(admin_app, database, "ada@example.com")
    url = _user_url(ada, "/roles/app1:editor")
    for _ in range(2):
        put = admin_app.put(url, headers=admin_auth)
        assert put.status_code == 204 and put.content == b""
    assert admin_app.get(_user_url(ada), headers=admin_auth).json()["roles"] == ["app1:editor"]
    [added] = audit_rows(database, "user.role_added")
    assert (added.actor, added.subject) == (operator[0], str(ada))
    assert admin_app.delete(url, headers=admin_auth).status_code == 204
    problem(admin_app.delete(url, headers=admin_auth), 404)
    assert admin_app.get(_user_url(ada), headers=admin_auth).json()["roles"] == []
    assert audit_rows(database, "user.role_removed")[0].actor == operator[0]
    bad = admin_app.put(_user_url(ada, "/roles/-bad%20role"), headers=admin_auth)
    assert fields(problem(bad, 400)) == {"role"}
