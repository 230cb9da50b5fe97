"""The token endpoint's event-loop path for client_credentials (protocol.lean) answers as
Authlib's path does, skips the threadpool only where it may, and never answers before the
token's audit row is committed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent

from .test_hot_paths import _count_thread_hops

MakeClient = Callable[..., tuple[str, str]]
AppFor = Callable[[Settings], TestClient]
SettingsFor = Callable[..., Settings]

# Claims that differ between any two tokens.
_PER_TOKEN = {"jti", "iat", "exp", "nbf", "auth_time"}


def _shape(response: Any) -> dict[str, Any]:
    """What must match between the two paths: status, the caching headers, the body with the
    token replaced by its header and claims (less what differs per token)."""
    body = response.json()
    token = body.pop("access_token", None)
    shape: dict[str, Any] = {
        "status": response.status_code,
        "cache-control": response.headers.get("cache-control"),
        "pragma": response.headers.get("pragma"),
        "content-type": response.headers.get("content-type"),
        "www-authenticate": response.headers.get("www-authenticate"),
        "body": body,
    }
    if token is not None:
        claims = pyjwt.decode(token, options={"verify_signature": False})
        shape["claims"] = {k: v for k, v in claims.items() if k not in _PER_TOKEN}
        shape["header"] = pyjwt.get_unverified_header(token)
    return shape


def test_client_credentials_answers_alike_in_the_loop_and_through_authlib(
    app_for: AppFor,
    settings_for: SettingsFor,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A cache checked on every request leaves the loop nothing it may answer alone.
    in_loop = app_for(settings_for(cache_check_seconds=3600))
    in_thread = app_for(settings_for(cache_check_seconds=0))
    api = make_client(scope="read write", audience=["https://api.example.com"])
    other = make_client(
        scope="read",
        grant_types=["authorization_code"],
        redirect_uris=["https://app.example.com/cb"],
    )
    token = {"grant_type": "client_credentials"}
    cases: list[tuple[tuple[str, str], dict[str, str], bool]] = [
        # (client, form, whether the loop may answer it alone)
        (api, token, True),
        (api, token | {"scope": "read"}, True),
        (api, token | {"scope": "write read"}, True),
        (api, token | {"resource": "https://api.example.com"}, True),
        (api, token | {"scope": "admin"}, False),  # invalid_scope
        (api, token | {"resource": "https://elsewhere.example.com"}, False),  # invalid_target
        ((api[0], "wrong secret"), token, False),  # invalid_client, and it is recorded
        (other, token, False),  # unauthorized_client
    ]
    for client in (api, other):  # both cached by the loop's app
        in_loop.post("/oauth2/token", data=token, auth=client)
    hops = _count_thread_hops(in_loop, monkeypatch)
    for auth, form, lean in cases:
        before = len(hops)
        answers = [
            http.post("/oauth2/token", data=form, auth=auth) for http in (in_loop, in_thread)
        ]
        assert _shape(answers[0]) == _shape(answers[1]), form
        assert (len(hops) == before) is lean, form
    # client_secret_post stays in the loop too.
    credentials = {"client_id": api[0], "client_secret": api[1]}
    before = len(hops)
    answers = [
        http.post("/oauth2/token", data=token | credentials) for http in (in_loop, in_thread)
    ]
    assert _shape(answers[0]) == _shape(answers[1])
    assert len(hops) == before


def test_every_token_from_the_loop_has_its_committed_audit_row(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient, database: Database
) -> None:
    http = app_for(settings_for(cache_check_seconds=3600))
    client_id, secret = make_client(scope="read", audience=["https://api.example.com"])
    jtis = []
    for _ in range(5):
        response = http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            headers={"User-Agent": "lean-test"},
        )
        assert response.status_code == 200
        claims = pyjwt.decode(response.json()["access_token"], options={"verify_signature": False})
        jtis.append(claims["jti"])
        # Read at once, by another connection: the row was committed before the response.
        with database.transaction() as session:
            rows = session.scalars(
                select(AuditEvent).where(AuditEvent.type == "token.issued")
            ).all()
        row = next(r for r in rows if r.detail["jti"] == claims["jti"])
        assert (row.actor, row.subject, row.client_id) == (client_id, client_id, client_id)
        assert row.outcome == "success" and row.user_agent == "lean-test"
        assert row.detail == {
            "grant_type": "client_credentials",
            "jti": claims["jti"],
            "scope": "read",
            "aud": "https://api.example.com",
        }
    assert len(set(jtis)) == 5


def test_a_failed_audit_commit_answers_503_and_hands_out_no_token(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient, database: Database
) -> None:
    http = app_for(settings_for(cache_check_seconds=3600))
    client = make_client(scope="read")
    data = {"grant_type": "client_credentials"}
    assert http.post("/oauth2/token", data=data, auth=client).status_code == 200  # cached
    # The audit table is gone: the COMMIT of the token's row fails, as a full disk would.
    with database.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE audit_events RENAME TO audit_events_away")
    try:
        response = http.post("/oauth2/token", data=data, auth=client)
    finally:
        with database.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE audit_events_away RENAME TO audit_events")
    assert response.status_code == 503
    assert "access_token" not in response.text
    assert http.post("/oauth2/token", data=data, auth=client).status_code == 200
