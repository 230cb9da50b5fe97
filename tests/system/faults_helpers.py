"""Private PostgreSQL and Redis servers for the fault tests: stopped and started at will.

Each runs on a spare loopback port from a fresh temporary folder; nothing here ever touches
a shared server. Every server is stopped by its own data folder or by the PID held here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import free_port, stop_process

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*command: str) -> list[str]:
    # initdb and postgres refuse to run as root.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return [*prefix, *command]


def wait_for_port(port: int, up: bool, timeout: float = 15.0) -> None:
    """Until something accepts on 127.0.0.1:``port`` (``up``) or nothing does (not ``up``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            listening = sock.connect_ex(("127.0.0.1", port)) == 0
        if listening == up:
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not go {'up' if up else 'down'} in {timeout} s")


class PrivatePostgres:
    """A PostgreSQL 15 cluster of our own; ``stop()``/``start()`` keep its data and port."""

    def __init__(self, database: str = "identity") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="identity-faults-pg-"))
        shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self.database = database
        subprocess.run(
            _as_postgres(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        # A short connect timeout: "down" must turn into a 503 quickly.
        return (
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}?connect_timeout=2"
        )

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")
        wait_for_port(self.port, up=True)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")
        wait_for_port(self.port, up=False)

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def create_database(self) -> None:
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{self.database}"'))
        finally:
            admin.dispose()

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` every other session on our database; how many there were."""
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": self.database},
                ).scalar_one()
        finally:
            admin.dispose()
        return int(killed)

    def destroy(self) -> None:
        """Stop the server (by data folder, else by its PID) and delete its folder."""
        try:
            self._pg_ctl("-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A Redis of our own without persistence: each ``start()`` begins empty (like a flush)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process, timeout=10)
        self.process = None
        wait_for_port(self.port, up=False)
