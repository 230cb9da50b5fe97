"""Browser tests: a real ``identity serve`` process, a real SMTP sink and Debian's Chromium.

The server runs as a subprocess (one worker) on the test database and Redis of
``tests/conftest.py``; its mail goes over SMTP to an aiosmtpd sink in this process.
Screenshots land in ``tests/artifacts/screenshots/<test>/`` (git-ignored).
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import ConsoleMessage, Page
from playwright.sync_api import Response as PlaywrightResponse

from identity.db import Database

from ..conftest import free_port, served_environment, stop_process, wait_until_up

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"

if not Path(CHROMIUM).exists():  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):  # in CI a missing browser is a failure, never a skip
        raise RuntimeError(f"browser tests need {CHROMIUM}: apt-get install chromium")
    pytest.skip(f"browser tests need {CHROMIUM}", allow_module_level=True)


# -- browser --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium instead of a downloaded browser."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def base_url() -> str | None:
    """Unused (each test has a server of its own). Overrides pytest-playwright's fallback,
    a session fixture written as an instance method, which pytest 9 warns about."""
    return None


@pytest.fixture
def page_problems(page: Page) -> list[str]:
    """What went wrong in the page while the test ran: script errors, console errors (CSP
    violations among them) and failed loads of anything but the page itself. The status
    of each page is the test's business; a missing favicon is nobody's."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console error: {message.text}")

    def on_response(response: PlaywrightResponse) -> None:
        request = response.request
        if (
            response.status >= 400
            and request.resource_type != "document"
            and not request.url.endswith("/favicon.ico")
        ):
            problems.append(f"{response.status} for {request.resource_type} {request.url}")

    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", on_console)
    page.on("response", on_response)
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    return problems


# -- mail -----------------------------------------------------------------------------------


class SmtpSink:
    """Collects every mail the server sends; ``wait_for`` polls until they arrive."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.messages.append(parsed)
        return "250 OK"

    def received(self, to: str, subject: str | None = None) -> list[EmailMessage]:
        with self._lock:
            return [
                message
                for message in self.messages
                if message["To"] == to and (subject is None or message["Subject"] == subject)
            ]

    def wait_for(
        self, to: str, count: int = 1, timeout: float = 10, subject: str | None = None
    ) -> list[EmailMessage]:
        """The mails to ``to`` (with ``subject``, if given), once there are ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.received(to, subject)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} mail(s) to {to!r}"
                    + (f" with subject {subject!r}" if subject else "")
                    + f" within {timeout}s; got {len(found)}: "
                    + repr([m["Subject"] for m in self.received(to)])
                )
            time.sleep(0.1)


def text_body(message: EmailMessage) -> str:
    """The plain-text part of a mail."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the mail has no text/plain part"
    return str(part.get_content())  # type: ignore[attr-defined]


def six_digit_code(message: EmailMessage) -> str:
    match = re.search(r"\b\d{6}\b", text_body(message))
    assert match is not None, "no 6-digit code in the mail"
    return match[0]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# -- server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    url: str
    env: dict[str, str]
    pid: int


def _serve(
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    host: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LiveServer]:
    """``identity serve`` with one worker, mailing to ``smtp_sink``, cheap argon2, its issuer
    at ``host`` (it listens on 127.0.0.1 either way)."""
    port = free_port()
    prefix = f"{redis_prefix}{secrets.token_hex(4)}:"  # limits counted per test
    env = served_environment(database_url, redis_url, prefix, tmp_path / "keys", port)
    url = f"http://{host}:{port}"
    env.update(
        IDENTITY_ISSUER=url,
        IDENTITY_SMTP_URL=f"smtp://127.0.0.1:{smtp_sink.port}",
        IDENTITY_OUTBOX_DIR=str(tmp_path / "outbox"),
        IDENTITY_ARGON2_TIME_COST="1",
        IDENTITY_ARGON2_MEMORY_KIB="8",
        IDENTITY_ARGON2_PARALLELISM="1",
    )
    env.update(extra_env or {})  # a caller's own settings win; keys, outbox: in tmp_path
    process = subprocess.Popen(
        [sys.executable, "-m", "identity", "serve", "--port", str(port), "--workers", "1"],
        env=env,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        yield LiveServer(url=url, env=env, pid=process.pid)
    finally:
        stop_process(process)


@pytest.fixture
def live_server(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> Iterator[LiveServer]:
    """``identity serve`` at http://127.0.0.1:PORT."""
    yield from _serve(database_url, redis_url, redis_prefix, smtp_sink, tmp_path, "127.0.0.1")


@pytest.fixture
def localhost_server(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> Iterator[LiveServer]:
    """``identity serve`` with its issuer at http://localhost:PORT: browsers refuse WebAuthn
    on an IP address, so the passkey tests use this one."""
    yield from _serve(database_url, redis_url, redis_prefix, smtp_sink, tmp_path, "localhost")


@pytest.fixture
def federating_server(
    database: Database,
    database_url: str,
    redis_url: str | None,
    redis_prefix: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> Iterator[LiveServer]:
    """``identity serve`` at http://127.0.0.1:PORT, for sign-in with other providers: it
    accepts plain-http upstreams (the tests' are on the loopback) and sees a provider that
    ``identity providers add`` adds while it runs at once."""
    yield from _serve(
        database_url,
        redis_url,
        redis_prefix,
        smtp_sink,
        tmp_path,
        "127.0.0.1",
        extra_env={"IDENTITY_INSECURE_HTTP": "1", "IDENTITY_CACHE_CHECK_SECONDS": "0"},
    )


@pytest.fixture
def upstream_server(
    redis_url: str | None,
    redis_prefix: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> Iterator[LiveServer]:
    """A second, independent identity instance to sign in with, as an upstream provider: its
    issuer at http://localhost:PORT (cookies ignore ports, so an instance at 127.0.0.1 would
    overwrite the other's session cookie), its own SQLite database (never the test
    database's users), keys and outbox under ``tmp_path/upstream``; its own Redis prefix."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    yield from _serve(
        f"sqlite:///{folder / 'identity.db'}",
        redis_url,
        redis_prefix,
        smtp_sink,
        folder,
        "localhost",
        extra_env={"IDENTITY_MIGRATE_ON_START": "1"},
    )


# -- screenshots ----------------------------------------------------------------------------


Screenshot = Callable[[Page, str], Path]


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshot:
    """``screenshot(page, "step")`` saves a full-page PNG as ``<NN>-<step>.png`` in
    ``tests/artifacts/screenshots/<test name>/`` (emptied when the test starts)."""
    folder = SCREENSHOTS / request.node.originalname
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    taken = 0

    def take(page: Page, step: str) -> Path:
        nonlocal taken
        taken += 1
        slug = re.sub(r"[^\w.-]+", "-", step)
        path = folder / f"{taken:02d}-{slug}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
