"""Who may learn what about a token (RFC 7662 §4, RFC 7009 §2.1): introspection shows a token
only to its own client or to a client named in its ``aud``; anyone else gets exactly
``{"active": false}``. Revoking another client's token changes nothing and answers like an
unknown token. The in-loop introspection path and the thread path agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import RefreshToken, RevokedToken

from .test_refresh import _issue, _user

MakeClient = Callable[..., tuple[str, str]]
AppFor = Callable[[Settings], TestClient]
SettingsFor = Callable[..., Settings]
PATHS = pytest.mark.parametrize("cache_check_seconds", [3600, 0], ids=["in-loop", "in-thread"])


def _token(http: TestClient, client: tuple[str, str]) -> str:
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=client)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _introspect(http: TestClient, caller: tuple[str, str], token: str) -> dict[str, Any]:
    response = http.post("/oauth2/introspect", data={"token": token}, auth=caller)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _minted(http: TestClient, client_id: str, audience: list[str]) -> str:
    """An access token of ``client_id`` for ``audience``, signed by the server's issuer."""
    oauth = http.app.state.oauth  # type: ignore[attr-defined]
    issued = oauth.issuer.issue(
        client_id=client_id, subject=client_id, audience=audience, scope="read"
    )
    return str(issued.value)


@PATHS
def test_another_client_learns_exactly_nothing_about_an_access_token(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient, cache_check_seconds: int
) -> None:
    http = app_for(settings_for(cache_check_seconds=cache_check_seconds))
    api = make_client(scope="read", audience=["https://api.example.com"])
    stranger = make_client(name="stranger", scope="read")
    token = _token(http, api)
    _token(http, stranger)  # cached now, so the in-loop path can answer for it
    assert _introspect(http, stranger, token) == {"active": False}
    assert _introspect(http, api, token)["active"] is True


@PATHS
def test_a_client_named_in_aud_may_introspect_the_token(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient, cache_check_seconds: int
) -> None:
    http = app_for(settings_for(cache_check_seconds=cache_check_seconds))
    api = make_client(scope="read")
    resource_server = make_client(name="resource server", scope="read")
    _token(http, resource_server)
    for audience in ([resource_server[0]], ["https://api.example.com", resource_server[0]]):
        body = _introspect(http, resource_server, _minted(http, api[0], audience))
        assert body["active"] is True and body["client_id"] == api[0]


def test_loop_and_thread_answer_alike_for_every_caller(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient
) -> None:
    in_loop = app_for(settings_for(cache_check_seconds=3600))
    in_thread = app_for(settings_for(cache_check_seconds=0))
    api = make_client(scope="read", audience=["https://api.example.com"])
    resource_server, stranger = make_client(name="rs"), make_client(name="stranger")
    for client in (api, resource_server, stranger):
        _token(in_loop, client)  # all cached
    own, for_rs = _token(in_loop, api), _minted(in_loop, api[0], [resource_server[0]])
    cases = [
        (api, own),
        (resource_server, own),
        (stranger, own),
        (resource_server, for_rs),
        (stranger, for_rs),
        (api, for_rs),
    ]
    for caller, token in cases:
        answers = [_introspect(http, caller, token) for http in (in_loop, in_thread)]
        assert answers[0] == answers[1], (caller, answers)
    assert [_introspect(in_loop, c, t)["active"] for c, t in cases] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]


def test_another_clients_refresh_token_introspects_inactive(
    http: TestClient, database: Database, make_client: MakeClient
) -> None:
    owner = make_client(
        redirect_uris=["https://app.example.com/cb"],
        grant_types=["authorization_code", "refresh_token"],
        scope="offline_access read",
    )
    stranger = make_client(name="stranger")
    raw, _ = _issue(http, database, owner[0], _user(database, "ada@example.com"))
    assert _introspect(http, stranger, raw) == {"active": False}
    assert _introspect(http, owner, raw)["active"] is True


def test_revoking_another_clients_access_token_changes_nothing_and_answers_as_unknown(
    http: TestClient, database: Database, make_client: MakeClient
) -> None:
    api, stranger = make_client(scope="read"), make_client(name="stranger")
    token = _token(http, api)
    unknown = http.post("/oauth2/revoke", data={"token": "not-a-token"}, auth=stranger)
    foreign = http.post("/oauth2/revoke", data={"token": token}, auth=stranger)
    assert foreign.status_code == unknown.status_code == 200
    assert foreign.content == unknown.content
    varying = {"x-request-id", "date"}
    assert {k: v for k, v in foreign.headers.items() if k not in varying} == {
        k: v for k, v in unknown.headers.items() if k not in varying
    }
    assert _introspect(http, api, token)["active"] is True
    with database.transaction() as session:
        assert session.scalars(select(RevokedToken)).all() == []


def test_revoking_another_clients_refresh_token_leaves_its_family_alive(
    http: TestClient, database: Database, make_client: MakeClient
) -> None:
    owner = make_client(
        redirect_uris=["https://app.example.com/cb"],
        grant_types=["authorization_code", "refresh_token"],
        scope="offline_access read",
    )
    stranger = make_client(name="stranger")
    raw, access = _issue(http, database, owner[0], _user(database, "ada@example.com"))
    for hint in ({}, {"token_type_hint": "refresh_token"}):
        response = http.post("/oauth2/revoke", data={"token": raw, **hint}, auth=stranger)
        assert response.status_code == 200 and response.json() == {}
    with database.transaction() as session:
        assert all(row.revoked_at is None for row in session.scalars(select(RefreshToken)))
    assert _introspect(http, owner, raw)["active"] is True
    assert _introspect(http, owner, access)["active"] is True
