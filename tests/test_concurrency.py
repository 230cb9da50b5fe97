"""Races have exactly one winner: signups, code redemptions, verification attempts.

These run on both backends; on PostgreSQL (IDENTITY_TEST_DATABASE_URL) the threads really
race inside the database.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select
from starlette.testclient import TestClient

from identity.accounts.errors import AccountError
from identity.accounts.service import Accounts
from identity.audit import RequestContext
from identity.config import Settings
from identity.db import Database
from identity.models import AuditEvent, User

from .web_helpers import PASSWORD


def _race(count: int, call: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


def _accounts(app_for: Callable[[Settings], TestClient], settings: Settings) -> Accounts:
    accounts: Accounts = app_for(settings).app.state.accounts  # type: ignore[attr-defined]
    return accounts


def test_twenty_concurrent_signups_of_one_address_make_one_user(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
) -> None:
    accounts = _accounts(app_for, settings_for(rate_limits=("signup.ip=1000/60",)))
    variants = ["race@example.com", "RACE@example.com", " Race@Example.COM ", "race@EXAMPLE.com"]

    def signup(index: int) -> str:
        try:
            with database.transaction() as session:
                accounts.signup(
                    session,
                    email=variants[index % len(variants)],
                    name=f"Racer {index}",
                    password=PASSWORD,
                    context=RequestContext(ip=f"10.0.0.{index}"),
                )
            return "ok"
        except Exception as error:  # the test reports any failure kind
            return type(error).__name__

    outcomes = _race(20, signup)
    with database.transaction() as session:
        users = session.scalars(select(User)).all()
    assert len(users) == 1 and users[0].email == "race@example.com"
    assert outcomes.count("ok") >= 1, outcomes


def test_hundred_concurrent_wrong_codes_from_one_ip_get_exactly_five_tries(
    app_for: Callable[[Settings], TestClient],
    settings_for: Callable[..., Settings],
    database: Database,
) -> None:
    accounts = _accounts(app_for, settings_for(rate_limits=("verify.account=1000/600",)))
    with database.transaction() as session:
        accounts.signup(
            session,
            email="guess@example.com",
            name="G",
            password=PASSWORD,
            context=RequestContext(),
        )

    def guess(index: int) -> str:
        try:
            with database.transaction() as session:
                accounts.verify_code(session, "guess@example.com", "000000", RequestContext())
            return "verified"
        except AccountError as error:
            return "too many" if "Too many" in str(error) else "wrong"

    # Tries count per address and client IP in the limiter, before the comparison.
    outcomes = _race(100, guess)
    assert outcomes.count("wrong") == 5 and outcomes.count("too many") == 95, outcomes
    assert "verified" not in outcomes


def test_twenty_concurrent_redemptions_of_one_code_have_one_winner(
    app_for: Callable[[Settings], TestClient],
    settings: Settings,
    database: Database,
    make_client: Callable[..., tuple[str, str | None]],
) -> None:
    from .protocol.test_authorize import CALLBACK, Flow, callback_params, login_and_consent

    http = app_for(settings)
    accounts: Accounts = http.app.state.accounts  # type: ignore[attr-defined]
    from identity.accounts import operators

    with database.transaction() as session:
        operators.create_user(
            accounts, session, email="code@example.com", name="C", password=PASSWORD, verified=True
        )
    client_id, secret = make_client(redirect_uris=[CALLBACK], first_party=True)
    flow = Flow(http, client_id)
    code = callback_params(login_and_consent(http, flow, "code@example.com"))["code"]

    def redeem(index: int) -> int:
        response = http.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": CALLBACK,
                "code_verifier": flow.verifier,
            },
            auth=(client_id, secret or ""),
        )
        return response.status_code

    statuses = _race(20, redeem)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(400) == 19
    with database.transaction() as session:
        replays = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.type == "code.replayed")
        )
        # Every loser is a replay: the rule revokes what the winner got, too.
        assert replays == 19
