"""Who may call the admin API: a client's own token with the ``admin`` scope and the API
audience, or an administrator's console session (the role, a second factor, and the CSRF
token on changes). Users' tokens, clients without ``admin`` and third parties are refused,
with problem+json answers."""

from __future__ import annotations

import uuid

from starlette.testclient import TestClient

from identity.db import Database
from tests.api.conftest import (
    ADMIN,
    API_AUDIENCE,
    MakeClient,
    audit_rows,
    client_token,
    console_session,
    get_user,
    make_user,
    password_token,
    problem,
)
from tests.protocol.test_authorize import (
    CALLBACK,
    Flow,
    callback_params,
    exchange,
    login_and_consent,
)

USERS = f"{ADMIN}/users"


def _user_url(user_id: uuid.UUID | str, tail: str = "") -> str:
    return f"{USERS}/{user_id}{tail}"


# -- who may call it -------------------------------------------------------------------------------


def test_no_credentials_is_401(admin_app: TestClient) -> None:
    response = admin_app.get(USERS)
    problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="identity"'


def test_user_tokens_are_refused_even_from_a_client_registered_with_admin(
    admin_app: TestClient, database: Database, make_client: MakeClient
) -> None:
    make_user(admin_app, database, "eve@example.com")
    public_id, _ = make_client(
        name="first party",
        public=True,
        first_party=True,
        grant_types=["password"],
        scope="openid account admin",
    )
    by_password = password_token(admin_app, public_id, "eve@example.com", "openid account admin")
    assert "admin" not in by_password["scope"].split()
    web = make_client(
        name="web",
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "client_credentials"],
        scope="openid admin",
        audience=[API_AUDIENCE],
    )
    flow = Flow(admin_app, web[0], scope="openid admin")
    callback = login_and_consent(admin_app, flow, "eve@example.com")
    by_code = exchange(admin_app, flow, callback_params(callback)["code"], web[1] or "")
    assert by_code.status_code == 200, by_code.text
    for token in (by_password["access_token"], by_code.json()["access_token"]):
        for method, url in (("GET", USERS), ("POST", _user_url(uuid.uuid4(), "/disable"))):
            response = admin_app.request(method, url, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code in (401, 403), response.text
            assert response.headers["content-type"] == "application/problem+json"


def test_client_tokens_without_admin_or_for_another_audience_are_refused(
    admin_app: TestClient, make_client: MakeClient
) -> None:
    reporter, _ = make_client(
        name="reports", grant_types=["client_credentials"], scope="reports", audience=[API_AUDIENCE]
    )
    problem(admin_app.get(USERS, headers=client_token(admin_app, reporter, scope="reports")), 403)
    # A third party with the admin scope, but not the API as its audience.
    third, secret = make_client(name="third", grant_types=["client_credentials"], scope="admin")
    issued = admin_app.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(third, secret or "")
    )
    assert issued.status_code == 200, issued.text
    headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    problem(admin_app.get(USERS, headers=headers), 401)


# -- the console's session -------------------------------------------------------------------------


def test_an_admins_session_with_a_second_factor_passes_and_is_the_actor(
    admin_app: TestClient, database: Database
) -> None:
    root = make_user(admin_app, database, "root@example.com", role="admin")
    ada = make_user(admin_app, database, "ada@example.com")
    csrf = console_session(admin_app, database, root, ["pwd", "otp", "mfa"])
    listed = admin_app.get(USERS)
    assert listed.status_code == 200, listed.text
    assert audit_rows(database, "admin.users_listed")[0].actor == str(root)
    renamed = admin_app.patch(_user_url(ada), json={"name": "Ada"}, headers={"X-CSRF-Token": csrf})
    assert renamed.status_code == 200, renamed.text
    [row] = audit_rows(database, "profile.updated")
    assert (row.actor, row.subject) == (str(root), str(ada))


def test_a_session_without_the_role_or_the_second_factor_is_403(
    admin_app: TestClient, database: Database
) -> None:
    plain = make_user(admin_app, database, "plain@example.com")
    csrf = console_session(admin_app, database, plain, ["pwd", "otp", "mfa"])
    problem(admin_app.get(USERS), 403)
    problem(admin_app.post(f"{USERS}/{plain}/disable", headers={"X-CSRF-Token": csrf}), 403)
    root = make_user(admin_app, database, "root@example.com", role="admin")
    console_session(admin_app, database, root, ["pwd"])
    body = problem(admin_app.get(USERS), 403)
    assert "second factor" in body["detail"]


def test_a_change_by_session_needs_the_csrf_header(
    admin_app: TestClient, database: Database
) -> None:
    root = make_user(admin_app, database, "root@example.com", role="admin")
    ada = make_user(admin_app, database, "ada@example.com")
    csrf = console_session(admin_app, database, root, ["pwd", "otp", "mfa"])
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        body = problem(admin_app.post(_user_url(ada, "/disable"), headers=headers), 403)
        assert "X-CSRF-Token" in body["detail"]
    user = get_user(database, ada)
    assert user is not None and user.is_active
    ok = admin_app.post(_user_url(ada, "/disable"), headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200


def test_an_anonymous_or_ended_session_is_401(
    admin_app: TestClient, database: Database, admin_auth: dict[str, str]
) -> None:
    admin_app.cookies.set("identity_session", "not-a-session")
    problem(admin_app.get(USERS), 401)
    root = make_user(admin_app, database, "root@example.com", role="admin")
    console_session(admin_app, database, root, ["pwd", "otp", "mfa"])
    assert admin_app.get(USERS).status_code == 200
    # A bearer header decides: the session cookie is not looked at.
    assert admin_app.get(USERS, headers={"Authorization": "Bearer nope"}).status_code == 401
    admin_app.post(_user_url(root, "/disable"), headers=admin_auth)
    problem(admin_app.get(USERS), 401)
