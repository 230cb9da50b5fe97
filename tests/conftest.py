"""Shared fixtures. The backend comes from the environment:

- ``IDENTITY_TEST_DATABASE_URL``: a PostgreSQL server URL; the suite creates (and drops) a
  database of its own there. Unset: a SQLite file in a temporary folder.
- ``IDENTITY_TEST_REDIS_URL``: a Redis URL; every key the suite writes has a prefix of its
  own. Unset: in-process limiters and the database-only denylist.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from identity.app import create_app
from identity.config import Settings
from identity.db import Database, upgrade_schema
from identity.keys import KeyStore
from identity.models import Base
from identity.protocol import clients

ISSUER = "http://127.0.0.1:8000"

# -- secrets never reach the logs: checked over the whole suite ------------------------------

SECRETS: set[str] = set()


def remember_secret(value: str | None) -> None:
    """A password, client secret, token or code a test used: no log line may contain it."""
    if value and len(value) >= 6:
        SECRETS.add(value)


# The tests' own SMTP sink (aiosmtpd logs every line of every mail it receives, codes and
# links included) and HTTP client: the caller's logs, not the server's, and not ours to police.
_TEST_SIDE_LOGGERS = ("mail.log", "httpx", "httpcore")


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_TEST_SIDE_LOGGERS):
            return
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


_RECORDER = _LogRecorder()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_RECORDER)
    logging.getLogger("identity").setLevel(logging.DEBUG)


_MARKED_FOLDERS = {"system": "system", "browser": "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/system and tests/browser carry their folder's marker, so the fast
    loop (``-m "not system and not browser"``) leaves them out."""
    for item in items:
        folder = item.path.parent.name
        if folder in _MARKED_FOLDERS:
            item.add_marker(getattr(pytest.mark, _MARKED_FOLDERS[folder]))


def _holds(line: str, secret: str) -> bool:
    """Whether ``line`` shows ``secret``. A code of digits only (a one-time or emailed code)
    counts as a whole word: as a run inside a random id (``msg_c755726d...``) it is chance,
    not a leak, and that chance had failed a whole run."""
    if not secret.isdigit():
        return secret in line
    return re.search(rf"(?<![0-9A-Za-z]){secret}(?![0-9A-Za-z])", line) is not None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any log line of any test held a secret some test used."""
    # The tests' own HTTP client and SMTP sink log whole URLs and mails: those are the
    # caller's logs, not the server's, and are not ours to police.
    leaks = [
        line
        for line in _RECORDER.lines
        if not line.startswith(("HTTP Request:", "Peer:", "Received message"))
        for secret in SECRETS
        if _holds(line, secret)
    ]
    if leaks:
        print(f"\n{len(leaks)} log line(s) hold a secret a test used, e.g.: {leaks[0][:200]!r}")
        session.exitstatus = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server_url = os.environ.get("IDENTITY_TEST_DATABASE_URL")
    if not server_url:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'identity.db'}"
        upgrade_schema(url)
        yield url
        return
    name = f"identity_test_{secrets.token_hex(4)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_schema(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str | None:
    return os.environ.get("IDENTITY_TEST_REDIS_URL") or None


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str | None) -> Iterator[str]:
    prefix = f"identity-test-{secrets.token_hex(4)}:"
    yield prefix
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="session")
def shared_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key set for the tests that do not change keys (RSA generation is slow-ish)."""
    directory = tmp_path_factory.mktemp("keys")
    KeyStore(directory, max_token_ttl=600).ensure()
    return directory


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    # The app commits its own transactions, so each test is undone by emptying the tables.
    with database.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())
    database.dispose()


@pytest.fixture
def settings_for(
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    shared_keys_dir: Path,
    tmp_path: Path,
) -> Callable[..., Settings]:
    outbox_dir = tmp_path / "outbox"
    test_id = secrets.token_hex(4)

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "issuer": ISSUER,
            "database_url": database_url,
            "redis_url": redis_url,
            # Each test counts its own limits: Redis would otherwise carry them across tests.
            "redis_prefix": f"{redis_prefix}{test_id}:",
            "keys_dir": shared_keys_dir,
            "keys_reload_seconds": 0.0,
            "migrate_on_start": False,
            # argon2 at 8 KiB and one pass: the same code path, a thousandth of the time.
            "argon2_time_cost": 1,
            "argon2_memory_kib": 8,
            "argon2_parallelism": 1,
            "outbox_dir": outbox_dir,
        }
        values.update(overrides)
        return Settings.from_env({}, **values)

    return build


@pytest.fixture
def settings(settings_for: Callable[..., Settings]) -> Settings:
    return settings_for()


@pytest.fixture
def app_for(database: Database) -> Iterator[Callable[[Settings], TestClient]]:
    """Start apps (with their lifespan) for given settings; all are stopped after the test."""
    started: list[TestClient] = []

    def start(settings: Settings) -> TestClient:
        client = TestClient(create_app(settings), base_url=ISSUER)
        client.__enter__()
        started.append(client)
        return client

    yield start
    for client in started:
        client.__exit__(None, None, None)


@pytest.fixture
def http(app_for: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    """A client of the app on the test settings."""
    return app_for(settings)


@pytest.fixture
def make_client(database: Database) -> Callable[..., tuple[str, str | None]]:
    """Register an OAuth client; returns (client_id, secret)."""

    def make(**options: Any) -> tuple[str, str | None]:
        options.setdefault("name", "test client")
        with database.transaction() as session:
            registered = clients.register_client(session, **options)
            remember_secret(registered.secret)
            return registered.client.client_id, registered.secret

    return make


def stop_process(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM by PID, then SIGKILL if it has not exited within ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(150):
        if process.poll() is not None:
            raise RuntimeError(f"identity serve exited with {process.returncode}")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("identity serve did not come up")


def served_environment(
    database_url: str, redis_url: str | None, prefix: str, keys: Path, port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
    env.update(
        IDENTITY_ISSUER=f"http://127.0.0.1:{port}",
        IDENTITY_DATABASE_URL=database_url,
        IDENTITY_KEYS_DIR=str(keys),
        IDENTITY_KEYS_RELOAD_SECONDS="1",
        IDENTITY_REDIS_PREFIX=prefix,
        IDENTITY_LOG_LEVEL="warning",
    )
    if redis_url:
        env["IDENTITY_REDIS_URL"] = redis_url
    return env


@pytest.fixture
def served(
    database: Database, database_url: str, redis_url: str | None, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    prefix = f"{redis_prefix}{secrets.token_hex(4)}:"  # limits counted per test
    env = served_environment(database_url, redis_url, prefix, tmp_path / "keys", port)
    process = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port), "--workers", "2"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url, env
    finally:
        stop_process(process)


def run_cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run ``identity ARGS --json`` in a subprocess and return its JSON output."""
    result = subprocess.run(
        [sys.executable, "-m", "identity", *args, "--json"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return (
        dict(json.loads(result.stdout))
        if result.stdout.strip().startswith(b"{")
        else {"items": json.loads(result.stdout)}
    )


class MailSink:
    """An SMTP server in this process that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = free_port()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def wait_for(self, to: str, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        """The messages sent to ``to``, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if to.lower() in str(m["To"]).lower()]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{count} mail(s) to {to} did not arrive; got {len(self.messages)}")

    @staticmethod
    def text(message: EmailMessage) -> str:
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())  # type: ignore[attr-defined]


@pytest.fixture
def mail_sink() -> Iterator[MailSink]:
    from aiosmtpd.controller import Controller

    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


_wait_until_up = wait_until_up  # the older name, still used by some tests


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, database: Database, tmp_path: Path
) -> None:
    """The environment an ``identity`` command reads, pointed at the test database."""
    monkeypatch.setenv("IDENTITY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IDENTITY_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("IDENTITY_MIGRATE_ON_START", "0")
    if settings.redis_url:  # the same Redis as the app's, as an operator's shell has
        monkeypatch.setenv("IDENTITY_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("IDENTITY_REDIS_PREFIX", settings.redis_prefix)
    for name in ("TIME_COST", "MEMORY_KIB", "PARALLELISM"):
        monkeypatch.setenv(f"IDENTITY_ARGON2_{name}", "8" if name == "MEMORY_KIB" else "1")


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the ``identity`` command in this process: (exit code, stdout, stderr)."""
    from identity.cli.main import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
