"""Fixtures of the page tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from identity.app import create_app
from identity.config import Settings
from identity.db import Database

# Browsers refuse passkeys on an IP address: the passkey tests serve the issuer at localhost.
LOCAL_ISSUER = "http://localhost:8000"


@pytest.fixture
def start(
    database: Database, settings_for: Callable[..., Settings]
) -> Iterator[Callable[..., TestClient]]:
    """Browsers on an app whose issuer is ``issuer``; each call is a browser of its own."""
    started: list[TestClient] = []
    apps: dict[str, Starlette] = {}

    def browser(issuer: str = LOCAL_ISSUER) -> TestClient:
        if issuer not in apps:
            apps[issuer] = create_app(settings_for(issuer=issuer))
        client = TestClient(apps[issuer], base_url=issuer)
        client.__enter__()
        started.append(client)
        return client

    yield browser
    for client in started:
        client.__exit__(None, None, None)
