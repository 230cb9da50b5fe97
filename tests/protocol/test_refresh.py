"""Refresh tokens: rotation, reuse detection, the grace period, expiry and revocation."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from identity import repositories
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import (
    AuditEvent,
    Client,
    RefreshToken,
    RevokedToken,
    User,
    secret_digest,
    utcnow,
)
from identity.protocol.refresh import (
    RefreshTokenGrant,
    find_refresh_token,
    introspect_refresh_token,
    revoke_refresh_token,
)
from identity.protocol.refresh_tokens import RefreshTokens
from identity.protocol.server import _current, _UnitOfWork
from identity.protocol.tokens import Authentication

MakeClient = Callable[..., tuple[str, str | None]]
Credentials = tuple[str, str | None]
SCOPE = "offline_access read write"


def _app(app_for: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    """The app with the refresh grant on (a no-op once build_server registers it)."""
    http = app_for(settings)
    oauth = http.app.state.oauth  # type: ignore[attr-defined]
    if not any(grant is RefreshTokenGrant for grant, _ in oauth._token_grants):
        oauth.register_grant(RefreshTokenGrant)
    return http


@pytest.fixture
def refresh_http(app_for: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return _app(app_for, settings)


@pytest.fixture
def app_client(make_client: MakeClient) -> Credentials:
    return make_client(
        redirect_uris=["https://app.example.com/cb"],
        grant_types=["authorization_code", "refresh_token"],
        scope=SCOPE,
        audience=["https://api.example.com"],
    )


@pytest.fixture
def user_id(database: Database) -> uuid.UUID:
    return _user(database, "ada@example.com")


def _user(database: Database, email: str) -> uuid.UUID:
    with database.transaction() as session:
        user = User(email=email, name="Ada", password_hash=None, email_verified=True)
        repositories.add_user(session, user)
        return user.id


def _issue(
    http: TestClient, database: Database, client_id: str, user_id: uuid.UUID, scope: str = SCOPE
) -> tuple[str, str]:
    """A new family, as a login would start it: (refresh token, access token)."""
    oauth = http.app.state.oauth  # type: ignore[attr-defined]
    with database.transaction() as session:
        client = repositories.get_client(session, client_id)
        assert client is not None
        audience = list(client.audience) or [client_id]
        access = oauth.issuer.issue(
            client_id=client_id, subject=str(user_id), audience=audience, scope=scope
        )
        raw = oauth.refresh_tokens.issue(
            session,
            client=client,
            user_id=user_id,
            scope=scope,
            audience=audience,
            authentication=Authentication(utcnow(), ("pwd",), None),
            access=access,
        )
    return raw, access.value


def _refresh(http: TestClient, credentials: Credentials, raw: str, **form: str) -> httpx.Response:
    client_id, secret = credentials
    data = {"grant_type": "refresh_token", "refresh_token": raw, **form}
    if secret is None:
        return http.post("/oauth2/token", data={**data, "client_id": client_id})
    return http.post("/oauth2/token", data=data, auth=(client_id, secret))


def _row(database: Database, raw: str) -> RefreshToken:
    with database.transaction() as session:
        row = repositories.get_refresh_token(session, secret_digest(raw))
        assert row is not None
        return row


def _family_rows(database: Database, raw: str) -> list[RefreshToken]:
    family_id = _row(database, raw).family_id
    with database.transaction() as session:
        query = select(RefreshToken).where(RefreshToken.family_id == family_id)
        return list(session.scalars(query))


def _introspect(http: TestClient, owner: Credentials, token: str) -> dict[str, Any]:
    # As the token's own client: introspection shows nothing to a stranger (RFC 7662 §4).
    response = http.post("/oauth2/introspect", data={"token": token}, auth=owner)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return dict(response.json())


def _set_row(database: Database, raw: str, **values: object) -> None:
    with database.transaction() as session:
        session.execute(
            update(RefreshToken).where(RefreshToken.digest == secret_digest(raw)).values(**values)
        )


def test_rotation_returns_a_new_refresh_token_and_refuses_the_old_one(
    refresh_http: TestClient, database: Database, app_client: Credentials, user_id: uuid.UUID
) -> None:
    raw, _ = _issue(refresh_http, database, app_client[0], user_id)
    response = _refresh(refresh_http, app_client, raw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refresh_token"] != raw and body["scope"] == SCOPE
    assert response.headers["cache-control"] == "no-store"
    old, new = _row(database, raw), _row(database, body["refresh_token"])
    assert old.rotated_at is not None and old.successor_digest == new.digest
    assert new.parent_digest == old.digest and new.family_id == old.family_id
    assert new.family_expires_at == old.family_expires_at and new.rotated_at is None
    assert _refresh(refresh_http, app_client, raw).json()["error"] == "invalid_grant"


def test_reuse_of_a_rotated_token_revokes_the_whole_family(
    refresh_http: TestClient,
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
    make_client: MakeClient,
) -> None:
    raw, first_access = _issue(refresh_http, database, app_client[0], user_id)
    body = _refresh(refresh_http, app_client, raw).json()
    reuse = _refresh(refresh_http, app_client, raw)
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    # The invalid_grant response still committed the revocation and its audit.
    assert all(row.revoked_at is not None for row in _family_rows(database, raw))
    assert _refresh(refresh_http, app_client, body["refresh_token"]).status_code == 400
    for access in (first_access, body["access_token"]):
        assert _introspect(refresh_http, app_client, access) == {"active": False}
    with database.transaction() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.type == "refresh.reuse_detected")
        ).all()
        assert len(events) == 1 and events[0].outcome == "failure"
        assert events[0].subject == str(user_id) and events[0].client_id == app_client[0]
        assert events[0].detail == {"family_id": str(_row(database, raw).family_id)}
        assert session.scalar(select(func.count()).select_from(RevokedToken)) == 2


def _concurrent(http: TestClient, credentials: Credentials, raw: str) -> list[httpx.Response]:
    barrier = threading.Barrier(20)

    def attempt(_: int) -> httpx.Response:
        barrier.wait()
        return _refresh(http, credentials, raw)

    with ThreadPoolExecutor(20) as pool:
        return list(pool.map(attempt, range(20)))


def test_twenty_concurrent_refreshes_make_exactly_one_successor(
    refresh_http: TestClient, database: Database, app_client: Credentials, user_id: uuid.UUID
) -> None:
    raw, _ = _issue(refresh_http, database, app_client[0], user_id)
    responses = _concurrent(refresh_http, app_client, raw)
    assert sorted(r.status_code for r in responses) == [200] + [400] * 19
    assert len(_family_rows(database, raw)) == 2  # the original and one successor


def test_concurrent_refreshes_within_the_grace_period_share_one_successor(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
) -> None:
    http = _app(app_for, settings_for(refresh_grace_seconds=5))
    raw, _ = _issue(http, database, app_client[0], user_id)
    responses = _concurrent(http, app_client, raw)
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["refresh_token"] for r in responses}) == 1
    assert len(_family_rows(database, raw)) == 2


def test_grace_retry_of_the_newest_rotation_returns_the_same_successor(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
    make_client: MakeClient,
) -> None:
    http = _app(app_for, settings_for(refresh_grace_seconds=5))
    raw, _ = _issue(http, database, app_client[0], user_id)
    first = _refresh(http, app_client, raw).json()
    retry = _refresh(http, app_client, raw)
    assert retry.status_code == 200, retry.text
    assert retry.json()["refresh_token"] == first["refresh_token"]
    assert retry.json()["access_token"] != first["access_token"]
    assert len(_family_rows(database, raw)) == 2
    # The lost response's access token is denied; the retry's is the one the family tracks.
    assert _introspect(http, app_client, first["access_token"]) == {"active": False}
    assert _introspect(http, app_client, retry.json()["access_token"])["active"] is True
    assert _refresh(http, app_client, first["refresh_token"]).status_code == 200


def test_grace_retry_of_an_older_ancestor_is_reuse(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
) -> None:
    http = _app(app_for, settings_for(refresh_grace_seconds=5))
    raw, _ = _issue(http, database, app_client[0], user_id)
    second = _refresh(http, app_client, raw).json()["refresh_token"]
    third = _refresh(http, app_client, second).json()["refresh_token"]
    assert _refresh(http, app_client, raw).json()["error"] == "invalid_grant"
    assert all(row.revoked_at is not None for row in _family_rows(database, raw))
    assert _refresh(http, app_client, third).status_code == 400


def test_grace_retry_after_the_grace_period_is_reuse(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
) -> None:
    http = _app(app_for, settings_for(refresh_grace_seconds=5))
    raw, _ = _issue(http, database, app_client[0], user_id)
    assert _refresh(http, app_client, raw).status_code == 200
    _set_row(database, raw, rotated_at=utcnow() - timedelta(seconds=6))
    assert _refresh(http, app_client, raw).status_code == 400
    assert all(row.revoked_at is not None for row in _family_rows(database, raw))


@pytest.mark.parametrize("column", ["expires_at", "family_expires_at"])
def test_expired_refresh_token_is_refused(
    refresh_http: TestClient,
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
    column: str,
) -> None:
    raw, _ = _issue(refresh_http, database, app_client[0], user_id)
    _set_row(database, raw, **{column: utcnow() - timedelta(seconds=1)})
    assert _refresh(refresh_http, app_client, raw).json()["error"] == "invalid_grant"
    assert _row(database, raw).rotated_at is None


def test_successor_keeps_the_family_expiry_and_caps_its_idle_expiry(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
) -> None:
    http = _app(app_for, settings_for(refresh_token_idle_ttl=3600))
    raw, _ = _issue(http, database, app_client[0], user_id)
    soon = utcnow() + timedelta(seconds=60)
    _set_row(database, raw, family_expires_at=soon)
    successor = _row(database, _refresh(http, app_client, raw).json()["refresh_token"])
    assert successor.family_expires_at == successor.expires_at
    assert abs((successor.family_expires_at - soon).total_seconds()) < 1


def test_wider_scope_is_invalid_scope_and_does_not_spend_the_token(
    refresh_http: TestClient, database: Database, app_client: Credentials, user_id: uuid.UUID
) -> None:
    raw, _ = _issue(refresh_http, database, app_client[0], user_id, scope="offline_access read")
    wider = _refresh(refresh_http, app_client, raw, scope="offline_access read write")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    assert _row(database, raw).rotated_at is None
    narrower = _refresh(refresh_http, app_client, raw, scope="offline_access")
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["scope"] == "offline_access"
    assert _row(database, narrower.json()["refresh_token"]).scope == "offline_access"


def test_another_clients_refresh_token_is_refused(
    refresh_http: TestClient,
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
    make_client: MakeClient,
) -> None:
    raw, _ = _issue(refresh_http, database, app_client[0], user_id)
    other = make_client(
        redirect_uris=["https://other.example.com/cb"], scope=SCOPE, name="other client"
    )
    assert _refresh(refresh_http, other, raw).json()["error"] == "invalid_grant"
    row = _row(database, raw)
    assert row.rotated_at is None and row.revoked_at is None


def test_public_client_refreshes_with_its_client_id_only(
    refresh_http: TestClient, database: Database, make_client: MakeClient, user_id: uuid.UUID
) -> None:
    public = make_client(
        redirect_uris=["https://spa.example.com/cb"],
        grant_types=["authorization_code", "refresh_token"],
        scope=SCOPE,
        public=True,
    )
    assert public[1] is None
    raw, _ = _issue(refresh_http, database, public[0], user_id)
    response = _refresh(refresh_http, public, raw)
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] != raw


def _in_unit_of_work(http: TestClient, database: Database, call: Callable[[], None]) -> None:
    """Run ``call`` as the endpoints would: inside the server's unit of work."""
    with database.transaction() as session:
        token = _current.set(_UnitOfWork(session, None))
        try:
            call()
        finally:
            _current.reset(token)


def test_revoking_a_refresh_token_revokes_its_family(
    refresh_http: TestClient,
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
    make_client: MakeClient,
) -> None:
    raw, _ = _issue(refresh_http, database, app_client[0], user_id)
    body = _refresh(refresh_http, app_client, raw).json()
    oauth = refresh_http.app.state.oauth  # type: ignore[attr-defined]

    def revoke() -> None:
        view = find_refresh_token(oauth, body["refresh_token"])
        assert view is not None and not view.is_revoked() and not view.is_expired()
        assert introspect_refresh_token(view)["sub"] == str(user_id)
        revoke_refresh_token(oauth, view, RequestContext())

    _in_unit_of_work(refresh_http, database, revoke)
    assert all(row.revoked_at is not None for row in _family_rows(database, raw))
    assert _introspect(refresh_http, app_client, body["access_token"]) == {"active": False}
    assert _refresh(refresh_http, app_client, body["refresh_token"]).status_code == 400
    with database.transaction() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.type == "refresh.family_revoked")
        ).one()
        assert event.detail["reason"] == "revoked"


def test_revoke_for_user_kills_every_family_of_the_user(
    refresh_http: TestClient,
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
    make_client: MakeClient,
) -> None:
    first, _ = _issue(refresh_http, database, app_client[0], user_id)
    second, _ = _issue(refresh_http, database, app_client[0], user_id)
    other_user, _ = _issue(refresh_http, database, app_client[0], _user(database, "b@example.com"))
    service = refresh_http.app.state.services.families  # type: ignore[attr-defined]
    with database.transaction() as session:
        assert service.revoke_for_user(session, user_id) == 2
    assert _row(database, first).revoked_at is not None
    assert _row(database, second).revoked_at is not None
    assert _row(database, other_user).revoked_at is None
    assert _refresh(refresh_http, app_client, first).status_code == 400


def test_revoke_for_user_and_client_spares_other_clients(
    refresh_http: TestClient,
    database: Database,
    app_client: Credentials,
    user_id: uuid.UUID,
    make_client: MakeClient,
) -> None:
    other = make_client(redirect_uris=["https://b.example.com/cb"], scope=SCOPE, name="b")
    mine, _ = _issue(refresh_http, database, app_client[0], user_id)
    theirs, _ = _issue(refresh_http, database, other[0], user_id)
    service = refresh_http.app.state.services.families  # type: ignore[attr-defined]
    with database.transaction() as session:
        assert service.revoke_for_user(session, user_id, app_client[0]) == 1
    assert _row(database, mine).revoked_at is not None
    assert _row(database, theirs).revoked_at is None


def test_disabled_users_refresh_token_is_refused(
    refresh_http: TestClient, database: Database, app_client: Credentials, user_id: uuid.UUID
) -> None:
    raw, _ = _issue(refresh_http, database, app_client[0], user_id)
    with database.transaction() as session:
        session.execute(update(User).where(User.id == user_id).values(is_active=False))
    assert _refresh(refresh_http, app_client, raw).json()["error"] == "invalid_grant"
    assert _row(database, raw).rotated_at is None


def test_offline_access_decides_unless_the_client_opted_out(settings: Settings) -> None:
    service = RefreshTokens(settings, denylist=None, families=None)  # type: ignore[arg-type]
    confidential = Client(client_id="c", is_public=False)
    public = Client(client_id="p", is_public=True, refresh_without_offline_access=True)
    assert service.should_issue(confidential, "openid offline_access")
    confidential.refresh_without_offline_access = False
    assert not service.should_issue(confidential, "openid")
    confidential.refresh_without_offline_access = True
    assert service.should_issue(confidential, "openid")
    assert not service.should_issue(public, "openid")
