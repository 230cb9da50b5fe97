"""Faults (SECURITY.md): a dependency goes away mid-use and comes back.

These tests stop and start servers of their own (a private PostgreSQL cluster and Redis on
spare loopback ports, see ``faults_helpers``), never the shared ones, so they run the same
with or without ``IDENTITY_TEST_*``. Every test checks the outcome in the database.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt as pyjwt
import pytest
import redis
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, func, select, text
from starlette.testclient import TestClient

from identity.accounts import operators
from identity.config import Settings
from identity.db import Database, upgrade_schema
from identity.mail import OutboxSender
from identity.models import (
    AuditEvent,
    AuthorizationCode,
    BrowserSession,
    OutboxMessage,
    RefreshToken,
    RevokedToken,
    User,
)
from identity.protocol import clients
from identity.services import build_services
from tests.conftest import MailSink, free_port, served_environment, wait_until_up
from tests.protocol.test_authorize import (
    CALLBACK,
    Flow,
    callback_params,
    exchange,
    login_and_consent,
)
from tests.system.faults_helpers import PrivatePostgres, PrivateRedis
from tests.web_helpers import PASSWORD, Browser, csrf_of

AppFor = Callable[[Settings], TestClient]
SettingsFor = Callable[..., Settings]


# -- private servers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database()
        upgrade_schema(server.url)
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def db(pg: PrivatePostgres) -> Iterator[Database]:
    database = Database(pg.url)
    yield database
    database.dispose()


@pytest.fixture
def running_pg(pg: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private server, started again after the test whatever the test did to it."""
    yield pg
    if pg.pid is None:
        pg.start()


def _register(database: Database, **options: Any) -> tuple[str, str]:
    options.setdefault("name", "fault test client")
    with database.transaction() as session:
        registered = clients.register_client(session, **options)
        assert registered.secret is not None
        return registered.client.client_id, registered.secret


def _user(http: TestClient, database: Database, email: str) -> None:
    accounts = http.app.state.accounts  # type: ignore[attr-defined]
    with database.transaction() as session:
        operators.create_user(
            accounts, session, email=email, name="Ada", password=PASSWORD, verified=True
        )


def _issued_count(database: Database, client_id: str) -> int:
    with database.transaction() as session:
        count = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.type == "token.issued", AuditEvent.client_id == client_id)
        )
        return int(count or 0)


def _client_credentials(http: TestClient, client: tuple[str, str]) -> Any:
    return http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=client)


def _assert_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0


# -- 1. PostgreSQL down, then back ----------------------------------------------------------


def test_database_down_is_503_with_retry_after_and_the_same_app_recovers(
    app_for: AppFor, settings_for: SettingsFor, running_pg: PrivatePostgres, db: Database
) -> None:
    http = app_for(settings_for(database_url=running_pg.url, redis_url=None))
    client = _register(db, scope="read")
    assert _client_credentials(http, client).status_code == 200
    browser = Browser(http)
    signup_token = csrf_of(http.get("/signup").text)
    email = f"down-{secrets.token_hex(4)}@example.com"

    running_pg.stop()
    token = _client_credentials(http, client)
    _assert_503(token)
    assert token.json()["error"] == "temporarily_unavailable"
    page = http.post(
        "/signup",
        data={"csrf_token": signup_token, "email": email, "name": "Ada", "password": PASSWORD},
        follow_redirects=False,
    )
    _assert_503(page)
    assert "text/html" in page.headers["content-type"]
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "down"

    running_pg.start()  # same data folder, same port; the app is not restarted
    # The test's own pool held connections the restart killed; the app's recovery is
    # what is under test, not this helper's.
    db.engine.dispose()
    assert http.get("/readyz").status_code == 200
    assert _client_credentials(http, client).status_code == 200
    assert browser.signup(email).status_code == 303
    # Nothing the failed requests did was kept; what the later ones did was.
    assert _issued_count(db, client[0]) == 2
    with db.transaction() as session:
        assert session.scalar(select(func.count()).where(User.email == email)) == 1


# -- 2. connections killed between requests -------------------------------------------------


def test_connections_killed_between_requests_never_give_a_500(
    app_for: AppFor, settings_for: SettingsFor, pg: PrivatePostgres, db: Database
) -> None:
    http = app_for(settings_for(database_url=pg.url, redis_url=None))
    client = _register(db, scope="read")
    tokens = [_client_credentials(http, client).json()["access_token"] for _ in range(3)]
    revoked: list[str] = []
    for token in tokens:
        assert pg.terminate_backends() >= 1  # the app's pooled connection(s), at least
        response = http.post("/oauth2/revoke", data={"token": token}, auth=client)
        assert response.status_code in (200, 503), response.text  # never a 500
        if response.status_code == 503:
            _assert_503(response)
            response = http.post("/oauth2/revoke", data={"token": token}, auth=client)
        assert response.status_code == 200, response.text
        revoked.append(pyjwt.decode(token, options={"verify_signature": False})["jti"])
        assert http.get("/readyz").status_code == 200
    db.engine.dispose()  # the terminations killed this helper's pooled connection too
    with db.transaction() as session:
        stored = session.scalars(select(RevokedToken.jti).where(RevokedToken.jti.in_(revoked)))
        assert sorted(stored) == sorted(revoked)


# -- 3. a code exchange interrupted ---------------------------------------------------------


def _code_flow(http: TestClient, db: Database) -> tuple[Flow, str, str]:
    """Log a new user in through the pages; (flow, client secret, authorization code)."""
    client_id, secret = _register(
        db,
        name="Billing Dashboard",
        redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "refresh_token"],
        scope="invoices:read",
    )
    email = f"code-{secrets.token_hex(4)}@example.com"
    _user(http, db, email)
    flow = Flow(http, client_id, scope="openid email offline_access")
    response = login_and_consent(http, flow, email)
    assert response.status_code == 303, response.text
    return flow, secret, callback_params(response)["code"]


def _code_state(db: Database, client_id: str) -> tuple[bool, list[str], int]:
    """(the client's code is spent, the jtis stored with it, refresh tokens of the client)."""
    with db.transaction() as session:
        code = session.scalars(
            select(AuthorizationCode).where(AuthorizationCode.client_id == client_id)
        ).one()
        refresh = session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.client_id == client_id)
        )
        return code.used_at is not None, list(code.issued_jtis), int(refresh or 0)


def test_code_exchange_with_the_database_down_leaves_the_code_usable(
    app_for: AppFor, settings_for: SettingsFor, running_pg: PrivatePostgres, db: Database
) -> None:
    http = app_for(settings_for(database_url=running_pg.url, redis_url=None))
    flow, secret, code = _code_flow(http, db)

    running_pg.stop()
    _assert_503(exchange(http, flow, code, secret))
    running_pg.start()
    db.engine.dispose()  # this helper's pooled connection died with the server

    assert _code_state(db, flow.client_id) == (False, [], 0)
    retried = exchange(http, flow, code, secret)
    assert retried.status_code == 200, retried.text
    spent, jtis, refresh_tokens = _code_state(db, flow.client_id)
    assert spent and refresh_tokens == 1
    assert (
        pyjwt.decode(retried.json()["access_token"], options={"verify_signature": False})["jti"]
        in jtis
    )


def test_code_exchange_killed_mid_transaction_rolls_back_and_can_be_retried(
    app_for: AppFor, settings_for: SettingsFor, pg: PrivatePostgres, db: Database
) -> None:
    """The exchange's connection dies after it marked the code used, before it committed."""
    http = app_for(settings_for(database_url=pg.url, redis_url=None))
    flow, secret, code = _code_flow(http, db)
    admin_engine = create_engine(pg.url)  # the same database, a connection of our own
    result: dict[str, Any] = {}
    try:
        with admin_engine.connect() as blocker:
            # The exchange writes its audit row last: hold that table so it waits there.
            blocker.execute(text("LOCK TABLE audit_events IN EXCLUSIVE MODE"))
            worker = threading.Thread(
                target=lambda: result.update(response=exchange(http, flow, code, secret))
            )
            worker.start()
            waiting = _wait_for_lock_waiter(blocker)
            # It already holds the row lock of its UPDATE of the code: mid-transaction.
            holds_code = blocker.execute(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                    " WHERE l.pid = :pid AND l.granted AND c.relname = 'authorization_codes'"
                    " AND l.mode = 'RowExclusiveLock'"
                ),
                {"pid": waiting},
            ).scalar_one()
            assert holds_code == 1
            blocker.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting})
            blocker.rollback()
            worker.join(timeout=20)
    finally:
        admin_engine.dispose()
    _assert_503(result["response"])

    assert _code_state(db, flow.client_id) == (False, [], 0)  # rolled back as a whole
    retried = exchange(http, flow, code, secret)
    assert retried.status_code == 200, retried.text
    spent, jtis, refresh_tokens = _code_state(db, flow.client_id)
    assert spent and len(jtis) == 1 and refresh_tokens == 1


def _wait_for_lock_waiter(connection: Any, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        ).scalar()
        if pid is not None:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError("the exchange never waited on the locked table")


# -- 4. Redis down, then back empty ---------------------------------------------------------


def test_redis_down_limits_in_process_denylist_from_database_and_resyncs(
    app_for: AppFor,
    settings_for: SettingsFor,
    pg: PrivatePostgres,
    private_redis: PrivateRedis,
    db: Database,
) -> None:
    settings = settings_for(
        database_url=pg.url, redis_url=private_redis.url, rate_limits=("token.client=5/60",)
    )
    http = app_for(settings)
    api = _register(db, scope="read")
    burst = _register(db, scope="read")
    revoked, live = (_client_credentials(http, api).json()["access_token"] for _ in range(2))
    jti = pyjwt.decode(revoked, options={"verify_signature": False})["jti"]
    assert http.post("/oauth2/revoke", data={"token": revoked}, auth=api).status_code == 200
    key = f"{settings.redis_prefix}denylist:{jti}"
    probe = redis.Redis.from_url(private_redis.url)
    try:
        assert probe.exists(key) == 1
        assert http.get("/readyz").json() == {
            "status": "ready",
            "checks": {"database": "ok", "redis": "ok"},
        }

        private_redis.stop()
        statuses = [_client_credentials(http, burst).status_code for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3  # counted in this process, never a 500
        assert _introspect(http, api, revoked) == {"active": False}
        assert _introspect(http, api, live)["active"] is True
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "degraded",
            "checks": {"database": "ok", "redis": "down"},
        }

        private_redis.start()  # empty, like a flush
        assert probe.exists(key) == 0
        deadline = time.monotonic() + 10
        while True:
            assert _introspect(http, api, revoked) == {"active": False}
            if probe.exists(key) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert probe.exists(key) == 1  # copied back from the database
        assert probe.exists(f"{settings.redis_prefix}denylist-synced") == 1
        assert http.get("/readyz").json()["status"] == "ready"
    finally:
        probe.close()
    with db.transaction() as session:
        assert session.get(RevokedToken, jti) is not None
    assert _issued_count(db, burst[0]) == 5  # the denied ones issued nothing


def _introspect(http: TestClient, auth: tuple[str, str], token: str) -> dict[str, Any]:
    response = http.post("/oauth2/introspect", data={"token": token}, auth=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- 5. SMTP down, then back ----------------------------------------------------------------


def test_signup_while_smtp_is_down_answers_the_same_and_the_mail_is_sent_once_later(
    app_for: AppFor, settings_for: SettingsFor, pg: PrivatePostgres, db: Database
) -> None:
    port = free_port()  # nothing listens here yet
    settings = settings_for(
        database_url=pg.url, redis_url=None, smtp_url=f"smtp://127.0.0.1:{port}"
    )
    http = app_for(settings)
    email = f"smtp-{secrets.token_hex(4)}@example.com"
    response = Browser(http).signup(email)
    assert response.status_code == 303
    assert response.headers["location"] == "/signup/check-email?email=" + quote(email)

    def outbox_row() -> OutboxMessage:
        with db.transaction() as session:
            return session.scalars(
                select(OutboxMessage).where(OutboxMessage.to_address == email)
            ).one()

    deadline = time.monotonic() + 10
    while outbox_row().attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the app's own sender tries within a second
    waiting = outbox_row()
    assert waiting.sent_at is None and waiting.attempts >= 1 and waiting.last_error
    assert waiting.template == "verify_email"

    sink = MailSink()
    sink.port = port
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        # Past the backoff without waiting for it: a sender with a clock ahead of time.
        later = waiting.next_attempt_at + timedelta(seconds=1)
        sender = OutboxSender(db, settings, clock=lambda: later)
        assert sender.deliver_due() >= 1  # rows of other tests may be due too
        assert outbox_row().sent_at is not None
        assert sender.deliver_due() == 0
        time.sleep(1.2)  # the app's own sender runs once more meanwhile: nothing left for it
        assert len(sink.wait_for(email)) == 1
        assert "Confirm your email address" in str(sink.messages[-1]["Subject"])
    finally:
        controller.stop()
    sent = outbox_row()
    assert sent.sent_at is not None and sent.attempts == waiting.attempts
    assert len([m for m in sink.messages if email in str(m["To"])]) == 1


# -- 6. graceful shutdown -------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_login_finish_and_the_server_exits_cleanly(
    settings_for: SettingsFor, pg: PrivatePostgres, db: Database, tmp_path: Path
) -> None:
    expensive = {"IDENTITY_ARGON2_MEMORY_KIB": "262144", "IDENTITY_ARGON2_TIME_COST": "4"}
    settings = settings_for(
        database_url=pg.url, redis_url=None, argon2_memory_kib=262144, argon2_time_cost=4
    )
    email = f"slow-{secrets.token_hex(4)}@example.com"
    with db.transaction() as session:
        user = operators.create_user(
            build_services(settings, db).accounts,
            session,
            email=email,
            name="Ada",
            password=PASSWORD,
            verified=True,
        )
        user_id = user.id

    port = free_port()
    env = served_environment(pg.url, None, "faults:", settings.keys_dir, port)
    env.update(expensive, IDENTITY_MIGRATE_ON_START="0")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "identity", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        with httpx.Client(base_url=url, timeout=30) as browser:
            token = csrf_of(browser.get("/login").text)
            outcome: dict[str, Any] = {}

            def login() -> None:
                outcome["response"] = browser.post(
                    "/login",
                    data={"csrf_token": token, "email": email, "password": PASSWORD, "next": ""},
                )
                outcome["done"] = time.monotonic()

            worker = threading.Thread(target=login)
            worker.start()
            time.sleep(0.3)  # the login is hashing now
            assert worker.is_alive()
            terminated = time.monotonic()
            process.send_signal(signal.SIGTERM)
            worker.join(timeout=30)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    errors = stderr_path.read_text()

    assert outcome["done"] > terminated  # it was in flight when the signal came
    assert outcome["response"].status_code == 303
    assert outcome["response"].headers["location"] == "/account"
    # `identity serve` exits through its own SIGTERM handler: 128 + SIGTERM.
    assert code == 128 + signal.SIGTERM, errors
    assert "Traceback" not in errors and "ERROR" not in errors, errors
    with db.transaction() as session:
        sessions = session.scalar(
            select(func.count())
            .select_from(BrowserSession)
            .where(BrowserSession.user_id == user_id)
        )
    assert sessions == 1  # the login's session row was committed before the exit
