"""Fixtures of the protocol tests."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.db import Database

from ..web_helpers import PASSWORD


@pytest.fixture
def user(http: TestClient, database: Database) -> str:
    accounts = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        operators.create_user(
            accounts, session, email="ada@example.com", name="Ada", password=PASSWORD, verified=True
        )
    return "ada@example.com"
