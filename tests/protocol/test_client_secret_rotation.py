"""A rotated client secret at the token and introspection endpoints: the new secret works at
once (even where the client cache is warm), the old one works until its grace period ends
(read from the cached copy too), and a rotation without grace ends it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent
from identity.protocol import clients

from ..conftest import remember_secret

MakeClient = Callable[..., tuple[str, str]]
AppFor = Callable[[Settings], TestClient]
SettingsFor = Callable[..., Settings]


def _token(http: TestClient, client_id: str, secret: str, *, post: bool = False) -> Any:
    """A client_credentials request, with HTTP Basic or (``post``) the secret in the body."""
    form = {"grant_type": "client_credentials"}
    if post:
        response = http.post(
            "/oauth2/token", data={**form, "client_id": client_id, "client_secret": secret}
        )
    else:
        response = http.post("/oauth2/token", data=form, auth=(client_id, secret))
    if response.status_code == 200:
        remember_secret(response.json()["access_token"])
    return response


def _works(http: TestClient, client_id: str, secret: str) -> bool:
    answers = {_token(http, client_id, secret, post=post).status_code for post in (False, True)}
    assert len(answers) == 1, answers  # both methods answer alike
    return answers == {200}


def _rotate(database: Database, client_id: str, grace: timedelta) -> str:
    with database.transaction() as session:
        secret = clients.rotate_client_secret(session, client_id, grace=grace)
    remember_secret(secret)
    return secret


@pytest.fixture
def warm(app_for: AppFor, settings_for: SettingsFor) -> TestClient:
    """An app whose client cache keeps what it read for an hour: only the cached copy (or
    the database, when the cached copy says no) can answer."""
    return app_for(settings_for(cache_check_seconds=3600))


def test_within_the_grace_period_both_secrets_work_even_from_a_warm_cache(
    warm: TestClient, make_client: MakeClient
) -> None:
    client_id, old = make_client(scope="read")
    assert _works(warm, client_id, old)  # the client is cached now, with the old secret
    new = _rotate(warm.app.state.database, client_id, timedelta(hours=1))  # type: ignore[attr-defined]
    assert _works(warm, client_id, new)  # at once: the cached copy is not the last word
    assert _works(warm, client_id, old)
    introspected = warm.post("/oauth2/introspect", data={"token": "nothing"}, auth=(client_id, new))
    assert introspected.status_code == 200 and introspected.json() == {"active": False}


def test_after_the_grace_period_the_old_secret_is_refused_even_from_the_cache(
    warm: TestClient, make_client: MakeClient, database: Database
) -> None:
    client_id, old = make_client(scope="read")
    grace = timedelta(seconds=1)
    new = _rotate(database, client_id, grace)
    ends = time.monotonic() + grace.total_seconds()
    assert _works(warm, client_id, old)  # cached now: the copy knows when the old one ends
    assert (
        warm.post(
            "/oauth2/introspect", data={"token": "nothing"}, auth=(client_id, old)
        ).status_code
        == 200
    )
    time.sleep(max(0.0, ends - time.monotonic()) + 0.2)
    refused = _token(warm, client_id, old)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert "www-authenticate" in refused.headers
    assert not _works(warm, client_id, old)
    assert (
        warm.post(
            "/oauth2/introspect", data={"token": "nothing"}, auth=(client_id, old)
        ).status_code
        == 401
    )
    assert _works(warm, client_id, new)
    with database.transaction() as session:
        failures = session.scalars(
            select(AuditEvent).where(
                AuditEvent.type == "client.auth_failed", AuditEvent.client_id == client_id
            )
        ).all()
    assert len(failures) >= 2


def test_without_grace_the_old_secret_is_refused_at_once(
    warm: TestClient, make_client: MakeClient, database: Database
) -> None:
    client_id, old = make_client(scope="read")
    new = _rotate(database, client_id, timedelta(0))
    refused = _token(warm, client_id, old)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert _works(warm, client_id, new)
    assert not _works(warm, client_id, old)  # nor from the copy cached by the new secret


def test_a_rotation_without_grace_reaches_every_instance_within_the_check_interval(
    app_for: AppFor, settings_for: SettingsFor, make_client: MakeClient, database: Database
) -> None:
    interval = 0.5
    instances = [app_for(settings_for(cache_check_seconds=interval)) for _ in range(2)]
    client_id, old = make_client(scope="read")
    for http in instances:
        assert _works(http, client_id, old)  # cached by both
    new = _rotate(database, client_id, timedelta(0))
    rotated = time.monotonic()
    for http in instances:
        assert _works(http, client_id, new)  # the new one at once, everywhere
        while _token(http, client_id, old).status_code == 200:
            assert time.monotonic() - rotated < interval + 2.0, "the cache never let go"
            time.sleep(0.05)
        assert not _works(http, client_id, old)


def test_the_device_endpoint_takes_the_old_secret_within_the_grace_period(
    warm: TestClient, make_client: MakeClient, database: Database
) -> None:
    """Every endpoint that authenticates clients honours the grace period, not only the
    token endpoint's client_credentials."""
    client_id, old = make_client(
        scope="openid", grant_types=["urn:ietf:params:oauth:grant-type:device_code"]
    )
    _rotate(database, client_id, timedelta(minutes=5))
    started = warm.post(
        "/oauth2/device_authorization", data={"scope": "openid"}, auth=(client_id, old)
    )
    assert started.status_code == 200, started.text
    remember_secret(started.json()["device_code"])
