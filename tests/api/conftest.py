"""What the admin API's tests share: an app that sends mail to a sink, the operator's client
(created as the README says), its token, a signed-in console session, and readers of the
answers and of the audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.accounts import operators, roles, sessions
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, User
from tests.conftest import ISSUER, MailSink, remember_secret
from tests.web_helpers import PASSWORD

MakeClient = Callable[..., tuple[str, str | None]]
PROBLEM = "application/problem+json"
API_AUDIENCE = f"{ISSUER}/api/v1"
ADMIN = "/api/v1/admin"
CLI = RequestContext.command_line()


@pytest.fixture
def admin_app(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    mail_sink: MailSink,
) -> TestClient:
    """The app, with the password grant on and its mail sent to ``mail_sink``."""
    return app_for(settings_for(password_grant=True, smtp_url=mail_sink.url))


@pytest.fixture
def operator(make_client: MakeClient) -> tuple[str, str]:
    """The operator's client: client_credentials, scope admin, the API as its audience."""
    client_id, secret = make_client(
        name="ops", grant_types=["client_credentials"], scope="admin", audience=[API_AUDIENCE]
    )
    assert secret is not None
    return client_id, secret


@pytest.fixture
def admin_auth(admin_app: TestClient, operator: tuple[str, str]) -> dict[str, str]:
    """The operator's bearer header, from the client_credentials grant itself."""
    issued = admin_app.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=operator
    )
    assert issued.status_code == 200, issued.text
    remember_secret(issued.json()["access_token"])
    return {"Authorization": f"Bearer {issued.json()['access_token']}"}


def client_token(
    http: TestClient, client_id: str, scope: str = "admin", audience: str = API_AUDIENCE
) -> dict[str, str]:
    """A bearer header with a token the server signs for ``client_id`` itself."""
    issued = http.app.state.oauth.issuer.issue(  # type: ignore[attr-defined]
        client_id=client_id, subject=client_id, audience=[audience], scope=scope
    )
    return {"Authorization": f"Bearer {issued.value}"}


def problem(response: Any, status: int) -> dict[str, Any]:
    """The problem+json body of ``response``, which must have ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = dict(response.json())
    assert body["status"] == status and body["title"] and body["type"]
    return body


def fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


def audit_rows(database: Database, type: str) -> list[AuditEvent]:
    with database.transaction() as session:
        query = select(AuditEvent).where(AuditEvent.type == type).order_by(AuditEvent.id)
        return list(session.scalars(query))


def make_user(
    http: TestClient,
    database: Database,
    email: str,
    *,
    verified: bool = True,
    role: str | None = None,
) -> uuid.UUID:
    """An account with the tests' password, as the CLI makes one; its id."""
    with database.transaction() as session:
        user = operators.create_user(
            http.app.state.accounts,  # type: ignore[attr-defined]
            session,
            email=email,
            name=email.split("@")[0],
            password=PASSWORD,
            verified=verified,
        )
        if role is not None:
            roles.add_role(session, user, role, actor="admin", context=CLI)
        return user.id


def console_session(
    http: TestClient, database: Database, user_id: uuid.UUID, amr: list[str]
) -> str:
    """Sign ``user_id`` in on ``http`` (its cookie set) with ``amr``; the session's CSRF
    token."""
    policy: sessions.SessionPolicy = http.app.state.session_policy  # type: ignore[attr-defined]
    with database.transaction() as session:
        cookie, row = sessions.start_authenticated(
            session, None, user_id, datetime.now(UTC), policy, CLI, amr
        )
        csrf = row.csrf_token
    remember_secret(cookie)
    http.cookies.set(policy.cookie_name, cookie)
    return csrf


def password_token(
    http: TestClient, client_id: str, email: str, scope: str = "openid account"
) -> dict[str, Any]:
    """The token answer of the password grant for ``email`` at the public ``client_id``."""
    response = http.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": email,
            "password": PASSWORD,
            "scope": scope,
        },
    )
    assert response.status_code == 200, response.text
    body = dict(response.json())
    for name in ("access_token", "refresh_token", "id_token"):
        remember_secret(body.get(name))
    return body


def get_user(database: Database, user_id: uuid.UUID) -> User | None:
    with database.transaction() as session:
        return session.get(User, user_id)
